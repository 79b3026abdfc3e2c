package files

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
)

// BlobReader reads a file's bytes without holding the file open between
// reads: each Read or ReadAt opens the blob. It suits block-wise transfers
// (CoAP Block2, XMPP IBB) that a client may leave half done, where an open
// file would wait for a cache to expire. A blob is never rewritten (it is
// named by its digest), so reads stay consistent; one deleted meanwhile
// fails the read with ErrNotFound.
type BlobReader struct {
	path string
	size int64
	off  int64
}

// Reader returns the descriptor of name and a BlobReader of its bytes.
func (s *Store) Reader(ctx context.Context, name string) (Descriptor, *BlobReader, error) {
	r, err := s.record(ctx, name)
	if err != nil {
		return Descriptor{}, nil, fmt.Errorf("files: read %s: %w", trunc(name), err)
	}
	p := s.blobPath(r.SHA256)
	if _, err := os.Stat(p); err != nil {
		return Descriptor{}, nil, fmt.Errorf("files: read %s: %w", trunc(name), ErrNotFound)
	}
	return s.descriptor(r), &BlobReader{path: p, size: r.Size}, nil
}

// Size is the number of bytes.
func (b *BlobReader) Size() int64 { return b.size }

// ReadAt implements io.ReaderAt.
func (b *BlobReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("files: read at a negative offset")
	}
	if off >= b.size {
		return 0, io.EOF
	}
	f, err := os.Open(b.path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("files: read: %w: deleted during the transfer", ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("files: read: %w", err)
	}
	defer f.Close()
	if rest := b.size - off; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := f.ReadAt(p, off)
	if err == io.EOF && n == len(p) {
		err = nil
	}
	if err == nil && off+int64(n) == b.size {
		err = io.EOF
	}
	return n, err
}

// Read implements io.Reader.
func (b *BlobReader) Read(p []byte) (int, error) {
	if b.off >= b.size {
		return 0, io.EOF
	}
	n, err := b.ReadAt(p, b.off)
	b.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// Seek implements io.Seeker.
func (b *BlobReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += b.off
	case io.SeekEnd:
		offset += b.size
	default:
		return 0, fmt.Errorf("files: seek: whence %d", whence)
	}
	if offset < 0 {
		return 0, errors.New("files: seek to a negative offset")
	}
	b.off = offset
	return offset, nil
}

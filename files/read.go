package files

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/hubsmith/hub/store"
)

// Stat returns the descriptor of name (ErrNotFound, ErrExpired).
func (s *Store) Stat(ctx context.Context, name string) (Descriptor, error) {
	r, err := s.record(ctx, name)
	if err != nil {
		return Descriptor{}, fmt.Errorf("files: stat %s: %w", trunc(name), err)
	}
	return s.descriptor(r), nil
}

// Open returns the descriptor of name and its bytes; the caller closes
// the file. The file stays readable to the end even if name is deleted or
// replaced meanwhile.
func (s *Store) Open(ctx context.Context, name string) (Descriptor, *os.File, error) {
	r, err := s.record(ctx, name)
	if err != nil {
		return Descriptor{}, nil, fmt.Errorf("files: open %s: %w", trunc(name), err)
	}
	d, f, err := s.open(r)
	if err != nil {
		return Descriptor{}, nil, fmt.Errorf("files: open %s: %w", trunc(name), err)
	}
	return d, f, nil
}

func (s *Store) open(r store.FileRecord) (Descriptor, *os.File, error) {
	f, err := os.Open(s.blobPath(r.SHA256))
	if errors.Is(err, os.ErrNotExist) {
		// Deleted between the lookup and here.
		return Descriptor{}, nil, fmt.Errorf("%w: %q", ErrNotFound, r.Name)
	}
	if err != nil {
		return Descriptor{}, nil, err
	}
	return s.descriptor(r), f, nil
}

// OpenShared is Open for the unauthenticated URL of a shared file: token
// is the file's share token (see Share and NewSlot).
func (s *Store) OpenShared(ctx context.Context, token string) (Descriptor, *os.File, error) {
	r, err := s.cfg.DB.FileByShare(ctx, token)
	if errors.Is(err, store.ErrNotFound) {
		return Descriptor{}, nil, fmt.Errorf("files: open shared file: %w", ErrNotFound)
	}
	if err != nil {
		return Descriptor{}, nil, fmt.Errorf("files: open shared file: %w", err)
	}
	if expired(r, time.Now()) {
		return Descriptor{}, nil, fmt.Errorf("files: open shared file: %w", ErrExpired)
	}
	d, f, err := s.open(r)
	if err != nil {
		return Descriptor{}, nil, fmt.Errorf("files: open shared file: %w", err)
	}
	return d, f, nil
}

// Share returns the unauthenticated, unguessable GET URL of name
// (SharedPath + token + "/" + file name), making one when it has none:
// for a link handed to a chat user (XEP-0066) who has no account here.
// The link lives as long as the file.
func (s *Store) Share(ctx context.Context, name string) (string, error) {
	r, err := s.record(ctx, name)
	if err != nil {
		return "", fmt.Errorf("files: share %s: %w", trunc(name), err)
	}
	tok := r.Share
	if tok == "" {
		tok, err = s.cfg.DB.SetFileShare(ctx, name, token())
		if err != nil {
			return "", fmt.Errorf("files: share %s: %w", trunc(name), err)
		}
	}
	return s.sharedURL(tok, name), nil
}

func (s *Store) sharedURL(tok, name string) string {
	return s.baseURL() + SharedPath + tok + "/" + EscapePath(BaseName(name))
}

// Delete removes name and clears its retained descriptor; its bytes go
// when no other file has the same content.
func (s *Store) Delete(ctx context.Context, name string) error {
	if err := ValidName(name); err != nil {
		return fmt.Errorf("files: delete %s: %w", trunc(name), err)
	}
	if err := s.remove(ctx, name, nil); err != nil {
		return fmt.Errorf("files: delete %s: %w", trunc(name), err)
	}
	return nil
}

// remove deletes the record of name (when match approves it), collects
// its blob and clears the descriptor.
func (s *Store) remove(ctx context.Context, name string, match func(store.FileRecord) bool) error {
	s.mu.Lock()
	defer s.mu.Unlock() // the descriptor cleared in order, as in commit
	r, err := s.cfg.DB.DeleteFile(ctx, name, match)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	if err != nil {
		return err
	}
	s.collect(context.WithoutCancel(ctx), r.SHA256)
	if err := s.unpublish(ctx, name); err != nil {
		return fmt.Errorf("clear descriptor: %w", err)
	}
	s.log.Debug("files: deleted", "name", name, "sha256", r.SHA256)
	return nil
}

// List returns up to limit descriptors (0: DefaultListLimit, at most
// MaxListLimit) of names after after, sorted by name, and the after of the
// next page ("" on the last). Expired files the sweep has not removed yet
// are left out.
func (s *Store) List(ctx context.Context, after string, limit int) ([]Descriptor, string, error) {
	if limit <= 0 {
		limit = DefaultListLimit
	}
	limit = min(limit, MaxListLimit)
	now := time.Now()
	out := []Descriptor{}
	for {
		// One more than asked for tells whether there is a next page.
		want := limit + 1 - len(out)
		rs, err := s.cfg.DB.Files(ctx, after, want)
		if err != nil {
			return nil, "", fmt.Errorf("files: list: %w", err)
		}
		for _, r := range rs {
			after = r.Name
			if expired(r, now) {
				continue
			}
			if len(out) == limit {
				return out, out[limit-1].Name, nil
			}
			out = append(out, s.descriptor(r))
		}
		if len(rs) < want {
			return out, "", nil
		}
	}
}

package store

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestFileRecords(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	now := time.Unix(1700000000, 0)
	recs := []FileRecord{
		{Name: "a", Size: 10, ContentType: "text/plain", SHA256: "s1", Uploader: "u", Created: now},
		{Name: "b/c", Size: 20, ContentType: "image/png", SHA256: "s1", Uploader: "u", Created: now, Expires: now.Add(time.Hour)},
		{Name: "d", Size: 30, ContentType: "x/y", SHA256: "s2", Uploader: "v", Created: now, Expires: now.Add(time.Minute)},
	}
	for _, r := range recs {
		if _, replaced, err := s.PutFile(ctx, r, nil); err != nil || replaced {
			t.Fatalf("PutFile(%s) = %v, %v", r.Name, replaced, err)
		}
	}
	if got, err := s.File(ctx, "b/c"); err != nil || got != recs[1] {
		t.Errorf("File(b/c) = %+v, %v", got, err)
	}
	if _, err := s.File(ctx, "none"); !errors.Is(err, ErrNotFound) {
		t.Errorf("File(none) = %v", err)
	}
	if n, err := s.FileUsage(ctx, "u"); err != nil || n != 30 {
		t.Errorf("FileUsage(u) = %d, %v", n, err)
	}
	if n, err := s.FileBlobRefs(ctx, "s1"); err != nil || n != 2 {
		t.Errorf("FileBlobRefs(s1) = %d, %v", n, err)
	}
	// The check sees the uploader's other files, the replaced one left out.
	refuse := errors.New("over quota")
	var seen int64
	_, _, err := s.PutFile(ctx, FileRecord{Name: "a", Size: 99, SHA256: "s3", Uploader: "u", Created: now},
		func(used int64) error { seen = used; return refuse })
	if !errors.Is(err, refuse) || seen != 20 {
		t.Errorf("refused PutFile = %v, check saw %d; want the check's error, 20", err, seen)
	}
	if got, _ := s.File(ctx, "a"); got != recs[0] {
		t.Errorf("a refused replacement changed the record: %+v", got)
	}
	old, replaced, err := s.PutFile(ctx, FileRecord{Name: "a", Size: 5, SHA256: "s3", Uploader: "u", Created: now}, nil)
	if err != nil || !replaced || old != recs[0] {
		t.Errorf("replacing PutFile = %+v, %v, %v", old, replaced, err)
	}
	if rs, err := s.Files(ctx, "a", 10); err != nil || len(rs) != 2 || rs[0].Name != "b/c" || rs[1].Name != "d" {
		t.Errorf("Files(after a) = %+v, %v", rs, err)
	}
	if rs, err := s.ExpiredFiles(ctx, now.Add(2*time.Minute), 10); err != nil || len(rs) != 1 || rs[0].Name != "d" {
		t.Errorf("ExpiredFiles = %+v, %v", rs, err)
	}
	tok, err := s.SetFileShare(ctx, "d", "tok1")
	if err != nil || tok != "tok1" {
		t.Fatalf("SetFileShare = %q, %v", tok, err)
	}
	if tok, err := s.SetFileShare(ctx, "d", "tok2"); err != nil || tok != "tok1" {
		t.Errorf("second SetFileShare = %q, %v; want the first token kept", tok, err)
	}
	if r, err := s.FileByShare(ctx, "tok1"); err != nil || r.Name != "d" {
		t.Errorf("FileByShare = %+v, %v", r, err)
	}
	if _, err := s.FileByShare(ctx, ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("FileByShare(\"\") = %v", err)
	}
	if _, err := s.DeleteFile(ctx, "d", func(FileRecord) bool { return false }); !errors.Is(err, ErrNotFound) {
		t.Errorf("DeleteFile refused by match = %v", err)
	}
	if r, err := s.DeleteFile(ctx, "d", nil); err != nil || r.Name != "d" {
		t.Errorf("DeleteFile = %+v, %v", r, err)
	}
	blobs, err := s.FileBlobs(ctx)
	if err != nil || len(blobs) != 2 || !blobs["s1"] || !blobs["s3"] {
		t.Errorf("FileBlobs = %v, %v", blobs, err)
	}
}

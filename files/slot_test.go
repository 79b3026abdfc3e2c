package files

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

func TestSlots(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.MaxFileSize = 1000; c.MaxSlots = 3 })
	ctx := context.Background()
	body := []byte("a picture")
	sl, err := e.fs.NewSlot(ctx, SlotOptions{Name: "upload/alice/cat.jpg", Size: int64(len(body)), ContentType: "image/jpeg", Uploader: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(sl.PutURL, "http://127.0.0.1:8080"+SlotPath+sl.Token+"/") || !strings.HasSuffix(sl.PutURL, "/cat.jpg") ||
		!strings.HasPrefix(sl.GetURL, "http://127.0.0.1:8080"+SharedPath) || strings.Contains(sl.GetURL, sl.Token) ||
		len(sl.Token) < 26 || sl.Expires.Before(time.Now()) {
		t.Errorf("slot = %+v", sl)
	}
	for _, tc := range []struct {
		desc  string
		token string
		size  int64
		ct    string
		want  error
	}{
		{"unknown token", "nope", int64(len(body)), "", ErrNotFound},
		{"larger", sl.Token, int64(len(body)) + 1, "", ErrTooLarge},
		{"smaller", sl.Token, int64(len(body)) - 1, "", ErrSlot},
		{"other type", sl.Token, int64(len(body)), "image/png", ErrSlot},
	} {
		if _, err := e.fs.PutSlot(ctx, tc.token, bytes.NewReader(body), tc.size, tc.ct); !errors.Is(err, tc.want) {
			t.Errorf("%s: PutSlot = %v, want %v", tc.desc, err, tc.want)
		}
	}
	d, err := e.fs.PutSlot(ctx, sl.Token, bytes.NewReader(body), -1, "image/jpeg")
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != "upload/alice/cat.jpg" || d.Uploader != "alice" || d.ContentType != "image/jpeg" || d.SHA256 != sum(body) {
		t.Errorf("descriptor = %+v", d)
	}
	if _, err := e.fs.PutSlot(ctx, sl.Token, bytes.NewReader(body), int64(len(body)), ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("second PUT to a slot: %v, want ErrNotFound", err)
	}
	share := strings.TrimPrefix(sl.GetURL, "http://127.0.0.1:8080"+SharedPath)
	share, _, _ = strings.Cut(share, "/")
	sd, f, err := e.fs.OpenShared(ctx, share)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(f)
	f.Close()
	if sd != d || !bytes.Equal(b, body) {
		t.Errorf("OpenShared = %+v %q", sd, b)
	}
	if _, _, err := e.fs.OpenShared(ctx, sl.Token); !errors.Is(err, ErrNotFound) {
		t.Errorf("OpenShared with the PUT token: %v, want ErrNotFound", err)
	}
	if u, err := e.fs.Share(ctx, d.Name); err != nil || u != sl.GetURL {
		t.Errorf("Share of a slot upload = %q, %v; want %q", u, err, sl.GetURL)
	}

	// Refused at once: too large, invalid name, no size.
	for _, o := range []struct {
		o    SlotOptions
		want error
	}{
		{SlotOptions{Name: "big", Size: 1001}, ErrTooLarge},
		{SlotOptions{Name: "bad//name", Size: 1}, ErrInvalidName},
		{SlotOptions{Name: "nosize", Size: -1}, ErrSlot},
	} {
		if _, err := e.fs.NewSlot(ctx, o.o); !errors.Is(err, o.want) {
			t.Errorf("NewSlot(%+v) = %v, want %v", o.o, err, o.want)
		}
	}
	// At most MaxSlots wait.
	for i := range 3 {
		if _, err := e.fs.NewSlot(ctx, SlotOptions{Name: "w", Size: 1}); err != nil {
			t.Fatalf("slot %d: %v", i, err)
		}
	}
	if _, err := e.fs.NewSlot(ctx, SlotOptions{Name: "w", Size: 1}); !errors.Is(err, ErrQuota) {
		t.Errorf("slot past MaxSlots: %v, want ErrQuota", err)
	}
}

func TestSlotExpiry(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.SlotTTL = time.Millisecond; c.SweepInterval = -1 })
	ctx := context.Background()
	sl, err := e.fs.NewSlot(ctx, SlotOptions{Name: "late", Size: 1})
	if err != nil {
		t.Fatal(err)
	}
	for time.Now().Before(sl.Expires) {
		time.Sleep(time.Millisecond)
	}
	if _, err := e.fs.PutSlot(ctx, sl.Token, strings.NewReader("x"), 1, ""); !errors.Is(err, ErrExpired) {
		t.Errorf("PUT to an expired slot: %v, want ErrExpired", err)
	}
	if _, err := e.fs.Stat(ctx, "late"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat(late) = %v", err)
	}
}

func TestSlotRetry(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := context.Background()
	sl, err := e.fs.NewSlot(ctx, SlotOptions{Name: "retry", Size: 100})
	if err != nil {
		t.Fatal(err)
	}
	// An interrupted PUT leaves nothing, and the slot takes another.
	if _, err := e.fs.PutSlot(ctx, sl.Token, &failingReader{n: 40}, 100, ""); err == nil {
		t.Fatal("interrupted PUT succeeded")
	}
	if _, err := e.fs.Stat(ctx, "retry"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat after an interrupted PUT: %v", err)
	}
	if _, err := e.fs.PutSlot(ctx, sl.Token, bytes.NewReader(make([]byte, 100)), 100, ""); err != nil {
		t.Errorf("PUT after an interrupted one: %v", err)
	}
}

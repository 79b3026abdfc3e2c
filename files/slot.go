package files

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"time"
)

// SlotOptions describe an XEP-0363 upload slot.
type SlotOptions struct {
	// Name is the file's name (ValidName); the slot URLs end in its last
	// level.
	Name string
	// Size is the exact size the PUT must have.
	Size int64
	// ContentType is the type the PUT must declare, if it declares one
	// ("": any, guessed as Put does).
	ContentType string
	// Uploader is the principal the slot was requested by.
	Uploader string
	// TTL is the file's lifetime, as PutOptions.TTL.
	TTL time.Duration
}

// Slot is a granted XEP-0363 upload slot.
type Slot struct {
	// Token is the slot's credential, part of PutURL.
	Token string
	// PutURL takes one HTTP PUT of the file, without other credentials
	// (rest serves SlotPath).
	PutURL string
	// GetURL serves the file, once uploaded, without credentials (rest
	// serves SharedPath): its token is unguessable and not the PUT one.
	GetURL string
	// Header are headers the PUT must carry (XEP-0363 <header/>); none
	// today, the token in the URL is the credential.
	Header map[string]string
	// Expires is when the slot stops taking its PUT.
	Expires time.Time
}

type slot struct {
	o       SlotOptions
	share   string
	expires time.Time
	busy    bool
}

// NewSlot grants an upload slot: the size is checked against the limit and
// the uploader's quota now (and again when the PUT comes). The PUT URL is
// good once, for that size and type, until Slot.Expires; at most MaxSlots
// wait at a time.
func (s *Store) NewSlot(ctx context.Context, o SlotOptions) (Slot, error) {
	sl, err := s.newSlot(ctx, o)
	if err != nil {
		return Slot{}, fmt.Errorf("files: slot for %s: %w", trunc(o.Name), err)
	}
	return sl, nil
}

func (s *Store) newSlot(ctx context.Context, o SlotOptions) (Slot, error) {
	if o.Size < 0 {
		return Slot{}, fmt.Errorf("%w: size %d: must be given", ErrSlot, o.Size)
	}
	// begin checks everything a PUT will be checked for; its temporary
	// file is not needed yet.
	u, err := s.begin(ctx, o.Name, PutOptions{ContentType: o.ContentType, Size: o.Size, Uploader: o.Uploader}, "")
	if err != nil {
		return Slot{}, err
	}
	u.Abort()
	now := time.Now()
	s.slotMu.Lock()
	defer s.slotMu.Unlock()
	s.expireSlotsLocked(now)
	if len(s.slots) >= s.cfg.MaxSlots {
		return Slot{}, fmt.Errorf("%w: %d slots wait for their upload already; try again later", ErrQuota, len(s.slots))
	}
	tok := token()
	sl := &slot{o: o, share: token(), expires: now.Add(s.cfg.SlotTTL)}
	s.slots[tok] = sl
	return Slot{
		Token:   tok,
		PutURL:  s.baseURL() + SlotPath + tok + "/" + EscapePath(BaseName(o.Name)),
		GetURL:  s.sharedURL(sl.share, o.Name),
		Header:  map[string]string{},
		Expires: sl.expires.UTC(),
	}, nil
}

func (s *Store) expireSlotsLocked(now time.Time) {
	for tok, sl := range s.slots {
		if !sl.busy && !now.Before(sl.expires) {
			delete(s.slots, tok)
		}
	}
}

// PutSlot stores the PUT of slot token: size is the request's declared
// length (-1 unknown) and contentType its Content-Type (""). It fails
// with ErrNotFound for an unknown or used token, ErrExpired for a slot
// past its time, ErrTooLarge for more bytes than the slot's size and
// ErrSlot for another size or type. A failed PUT may be tried again while
// the slot lasts.
func (s *Store) PutSlot(ctx context.Context, token string, r io.Reader, size int64, contentType string) (Descriptor, error) {
	d, err := s.putSlot(ctx, token, r, size, contentType)
	if err != nil {
		return Descriptor{}, fmt.Errorf("files: slot upload: %w", err)
	}
	return d, nil
}

func (s *Store) putSlot(ctx context.Context, token string, r io.Reader, size int64, contentType string) (Descriptor, error) {
	s.slotMu.Lock()
	sl, ok := s.slots[token]
	switch {
	case !ok:
		s.slotMu.Unlock()
		return Descriptor{}, fmt.Errorf("%w: no such slot (unknown, used or expired)", ErrNotFound)
	case !time.Now().Before(sl.expires):
		delete(s.slots, token)
		s.slotMu.Unlock()
		return Descriptor{}, fmt.Errorf("%w: the slot expired at %s", ErrExpired, sl.expires.UTC().Format(time.RFC3339))
	case sl.busy:
		s.slotMu.Unlock()
		return Descriptor{}, fmt.Errorf("%w: an upload to this slot is in progress", ErrSlot)
	}
	sl.busy = true
	s.slotMu.Unlock()
	release := func(used bool) {
		s.slotMu.Lock()
		if used {
			delete(s.slots, token)
		} else {
			sl.busy = false
		}
		s.slotMu.Unlock()
	}
	o := sl.o
	switch {
	case size > o.Size:
		release(false)
		return Descriptor{}, fmt.Errorf("%w: %d bytes, the slot is for %d", ErrTooLarge, size, o.Size)
	case size >= 0 && size != o.Size:
		release(false)
		return Descriptor{}, fmt.Errorf("%w: %d bytes, the slot is for %d", ErrSlot, size, o.Size)
	case o.ContentType != "" && contentType != "" && !sameType(contentType, o.ContentType):
		release(false)
		return Descriptor{}, fmt.Errorf("%w: content type %q, the slot is for %q", ErrSlot, contentType, o.ContentType)
	}
	ct := o.ContentType
	if ct == "" {
		ct = contentType
	}
	d, err := s.put(ctx, o.Name, r, PutOptions{ContentType: ct, Size: o.Size, Uploader: o.Uploader, TTL: o.TTL}, sl.share)
	release(err == nil)
	if err != nil {
		return Descriptor{}, err
	}
	return d, nil
}

// sameType compares two MIME types without their parameters' spelling.
func sameType(a, b string) bool {
	ma, pa, errA := mime.ParseMediaType(a)
	mb, pb, errB := mime.ParseMediaType(b)
	if errors.Join(errA, errB) != nil {
		return a == b
	}
	if ma != mb || len(pa) != len(pb) {
		return false
	}
	for k, v := range pa {
		if pb[k] != v {
			return false
		}
	}
	return true
}

package store

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
)

// FuzzValidateName checks the name rules against a direct reading of them,
// and that accepted names round-trip through AddUser/GetUser.
func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"alice", "", "a@b", "a/b", "x+", "#", "a\x00b", "\xff", "Jürgen", "a b", "a:b", "a\u2003b", strings.Repeat("é", 129)} {
		f.Add(s)
	}
	s := openTest(f)
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, name string) {
		err := ValidateName(name)
		ok := name != "" && utf8.ValidString(name) && len(name) <= MaxNameLen &&
			!strings.ContainsAny(name, `"&'/:<>@+#`) && !strings.ContainsFunc(name, isControl) &&
			!strings.ContainsFunc(name, unicode.IsSpace)
		if ok != (err == nil) {
			t.Fatalf("ValidateName(%q) = %v, want ok=%v", name, err, ok)
		}
		if err != nil {
			if !errors.Is(err, ErrInvalidName) {
				t.Fatalf("error %v does not wrap ErrInvalidName", err)
			}
			return
		}
		if err := s.AddUser(ctx, name, "pw", adapters.RoleUser); err != nil && !errors.Is(err, ErrExists) {
			t.Fatalf("AddUser(%q): %v", name, err)
		}
		if u, err := s.GetUser(ctx, name); err != nil || u.Name != name {
			t.Fatalf("GetUser(%q) = %+v, %v", name, u, err)
		}
	})
}

func isControl(r rune) bool { return r < 0x20 || (r >= 0x7f && r < 0xa0) }

// FuzzQueueRow stores arbitrary bytes as a queued envelope: Dequeue never
// fails or panics on them, serves them only when they decode, and deletes
// them otherwise.
func FuzzQueueRow(f *testing.F) {
	good, _ := env("t", "x", 1).MarshalBinary()
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add([]byte{})
	f.Add([]byte{1, 1, 0})
	s := openTest(f)
	s.SetLogger(discardLogger())
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := insertRaw(ctx, s, "f", b); err != nil {
			t.Fatal(err)
		}
		q, err := s.Dequeue(ctx, "f", 0, 10)
		if err != nil {
			t.Fatalf("Dequeue: %v", err)
		}
		want, decErr := broker.UnmarshalEnvelope(b)
		if decErr != nil {
			if len(q) != 0 {
				t.Fatalf("corrupt bytes served: %+v", q[0].Envelope)
			}
			if n, _ := s.QueueLen(ctx, "f"); n != 0 {
				t.Fatalf("corrupt row kept")
			}
			return
		}
		if len(q) != 1 || !reflect.DeepEqual(q[0].Envelope, want) {
			t.Fatalf("Dequeue = %+v, want %+v", q, want)
		}
		if err := ackUpTo(ctx, s, "f", q[0].Seq); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzDeviceRoundTrip stores devices with arbitrary names, metadata and
// keys and reads them back unchanged.
func FuzzDeviceRoundTrip(f *testing.F) {
	f.Add("d1", "Kitchen", "room", "kitchen", []byte("psk"))
	f.Add("d2", "", "", "", []byte{})
	f.Add("d3", "\x00", "k\"", "\xff", []byte{0})
	s := openTest(f)
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, id, name, mk, mv string, psk []byte) {
		d := Device{ID: id, Name: name, Protocol: "coap", Metadata: map[string]string{mk: mv}, PSK: psk}
		err := s.AddDevice(ctx, d)
		if ValidateName(id) != nil {
			if !errors.Is(err, ErrInvalidName) {
				t.Fatalf("AddDevice with bad id %q = %v", id, err)
			}
			return
		}
		if !utf8.ValidString(name + mk + mv) {
			if !errors.Is(err, ErrInvalidDevice) {
				t.Fatalf("AddDevice with invalid UTF-8 = %v", err)
			}
			return
		}
		if errors.Is(err, ErrExists) {
			return
		}
		if err != nil {
			t.Fatalf("AddDevice: %v", err)
		}
		got, err := s.GetDevice(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		wantMeta := map[string]string{mk: mv}
		if got.Name != name || !reflect.DeepEqual(got.Metadata, wantMeta) || !bytes.Equal(got.PSK, psk) {
			t.Fatalf("round trip: got %+v, want %+v", got, d)
		}
		if err := s.DeleteDevice(ctx, id); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzArchiveID: archiveID and parseArchiveID are inverses, and any other
// string is refused with ErrInvalidArchiveID.
func FuzzArchiveID(f *testing.F) {
	f.Add(int64(1764590400000000000), "0c3f2a")
	f.Add(int64(-5), "a-b")
	f.Add(int64(0), "")
	f.Fuzz(func(t *testing.T, at int64, id string) {
		s := archiveID(at, id)
		gt, gid, err := parseArchiveID(s)
		switch {
		case id == "":
			if !errors.Is(err, ErrInvalidArchiveID) {
				t.Fatalf("%q: %v", s, err)
			}
		case err != nil || gt != at || gid != id:
			// A negative time's '-' ends the number early: refused, never misread.
			if at < 0 && errors.Is(err, ErrInvalidArchiveID) {
				return
			}
			t.Fatalf("%q -> %d %q %v; want %d %q", s, gt, gid, err, at, id)
		}
		if _, _, err := parseArchiveID(id); err != nil && !errors.Is(err, ErrInvalidArchiveID) {
			t.Fatalf("%q: %v", id, err)
		}
	})
}

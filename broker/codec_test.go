package broker

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"
)

func TestCodecRoundTrip(t *testing.T) {
	t.Parallel()
	now := time.Unix(1700000000, 123456789)
	cases := []*Envelope{
		{ID: NewID(), Topic: "a/b", Payload: []byte("21.5"), Time: now},
		{ID: NewID(), Topic: "$hub/devices/x/presence", Payload: []byte{}, QoS: 2, Retain: true,
			ContentType: "application/json", Time: now, Expiry: now.Add(time.Minute),
			Origin:        Origin{Protocol: ProtoMQTT, ClientID: "c1", Remote: "127.0.0.1:1", Principal: "bob", Node: "n"},
			ResponseTopic: "r/1", CorrelationData: []byte{0, 1, 2},
			Properties: []Property{{"k", "v"}, {"k", "w"}}},
	}
	for _, e := range cases {
		b, err := e.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		got, err := UnmarshalEnvelope(b)
		if err != nil {
			t.Fatal(err)
		}
		if !got.Time.Equal(e.Time) || !got.Expiry.Equal(e.Expiry) {
			t.Fatalf("times differ: %v %v", got.Time, got.Expiry)
		}
		got.Time, got.Expiry = e.Time, e.Expiry
		if !bytes.Equal(got.Payload, e.Payload) {
			t.Fatalf("payload %q, want %q", got.Payload, e.Payload)
		}
		got.Payload = e.Payload
		if !reflect.DeepEqual(got, e) {
			t.Fatalf("round trip:\n got %#v\nwant %#v", got, e)
		}
	}
}

func TestCodecRejectsCorrupt(t *testing.T) {
	t.Parallel()
	e := &Envelope{ID: "x", Topic: "a", Payload: []byte("hello"), Time: time.Now()}
	b, _ := e.MarshalBinary()
	for i := 0; i < len(b); i++ {
		if _, err := UnmarshalEnvelope(b[:i]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d bytes: err %v, want ErrCorrupt", i, err)
		}
	}
	if _, err := UnmarshalEnvelope(append(b, 0)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("trailing byte accepted: %v", err)
	}
	// Any single flipped bit is caught by the checksum.
	for i := 0; i < len(b); i++ {
		for bit := 0; bit < 8; bit++ {
			c := append([]byte(nil), b...)
			c[i] ^= 1 << bit
			if _, err := UnmarshalEnvelope(c); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("byte %d bit %d flipped: err %v, want ErrCorrupt", i, bit, err)
			}
		}
	}
}

func FuzzUnmarshalEnvelope(f *testing.F) {
	e := &Envelope{ID: "x", Topic: "a/b", Payload: []byte("p"), QoS: 1, Properties: []Property{{"a", "b"}}}
	b, _ := e.MarshalBinary()
	f.Add(b)
	f.Add([]byte{1, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := UnmarshalEnvelope(b)
		if err != nil {
			return
		}
		again, err := e.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		e2, err := UnmarshalEnvelope(again)
		if err != nil {
			t.Fatalf("re-encoded envelope does not decode: %v", err)
		}
		if e2.Topic != e.Topic || !bytes.Equal(e2.Payload, e.Payload) || len(e2.Properties) != len(e.Properties) {
			t.Fatal("re-encoding changed the envelope")
		}
	})
}

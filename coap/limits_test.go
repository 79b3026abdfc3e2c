package coap

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// doToken is rawConn.do with a token of the caller's (do derives it from
// the message id) and no payload.
func (r *rawConn) doToken(code codes.Code, mid int32, token []byte, path string, opts map[message.OptionID]uint32, queries []string) *pool.Message {
	r.t.Helper()
	p := pool.NewMessage(context.Background())
	p.SetType(message.Confirmable)
	p.SetCode(code)
	p.SetMessageID(mid)
	p.SetToken(token)
	if err := p.SetPath(path); err != nil {
		r.t.Fatal(err)
	}
	for id, v := range opts {
		p.SetOptionUint32(id, v)
	}
	for _, q := range queries {
		p.AddQuery(q)
	}
	b, err := p.MarshalWithEncoder(coder.DefaultCoder)
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatal(err)
	}
	for {
		m := r.mustRecv()
		if m.MessageID() == mid || bytes.Equal(m.Token(), token) {
			return m
		}
	}
}

// TestObservationCaps: the per-user cap counts a principal's observations
// over all its endpoints (anonymous clients share one count), the global
// cap all of them; beyond either a GET with Observe gets a plain 2.05
// without Observe, and an ended observation frees its place.
func TestObservationCaps(t *testing.T) {
	t.Parallel()
	alice := []string{"u=alice", "p=alicepw"}
	type obs struct {
		conn    int      // which raw endpoint
		creds   []string // nil: anonymous
		topic   string
		observe bool // want an observation (Observe in the answer)
	}
	cases := []struct {
		name           string
		perUser, total int
		steps          []obs
	}{
		{"per user", 2, 100, []obs{
			{0, alice, "a", true}, {1, alice, "b", true}, {1, alice, "c", false},
			{2, nil, "d", true}, {2, nil, "e", true}, {0, nil, "f", false},
		}},
		{"global", 100, 3, []obs{
			{0, alice, "a", true}, {1, nil, "b", true}, {2, alice, "c", true}, {2, nil, "d", false}, {0, alice, "e", false},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := start(t, func(cfg *Config) { cfg.MaxObservationsPerUser, cfg.MaxObservationsTotal = c.perUser, c.total })
			conns := []*rawConn{e.raw(t), e.raw(t), e.raw(t)}
			want := 0
			for i, s := range c.steps {
				publish(t, e.bus, "caps/"+s.topic, s.topic, "", 0, true)
				m := conns[s.conn].do(codes.GET, int32(10+i), "/ps/caps/"+s.topic, map[message.OptionID]uint32{message.Observe: 0}, nil, s.creds, nil)
				if m.Code() != codes.Content || string(body(t, m)) != s.topic {
					t.Fatalf("step %d: %v %q, want 2.05 %q", i, m.Code(), body(t, m), s.topic)
				}
				if got := m.HasOption(message.Observe); got != s.observe {
					t.Fatalf("step %d (%s on endpoint %d): Observe in the answer %v, want %v", i, s.topic, s.conn, got, s.observe)
				}
				if s.observe {
					want++
				}
			}
			if n := e.a.observations(); n != want {
				t.Fatalf("%d observations, want %d", n, want)
			}
			// Deregistering the first one (Observe: 1, same token) frees a place.
			first := c.steps[0]
			m := conns[first.conn].doToken(codes.GET, 98, []byte{10, 0, 7}, "/ps/caps/"+first.topic, map[message.OptionID]uint32{message.Observe: 1}, first.creds)
			if m.HasOption(message.Observe) {
				t.Fatalf("deregistration answered with Observe")
			}
			waitFor(t, "the observation to end", func() bool { return e.a.observations() == want-1 })
			m = conns[first.conn].do(codes.GET, 99, "/ps/caps/"+first.topic, map[message.OptionID]uint32{message.Observe: 0}, nil, first.creds, nil)
			if !m.HasOption(message.Observe) {
				t.Fatalf("no observation after a place was freed: %v", m)
			}
		})
	}
}

// TestEndpointIdleForgotten: the state of a plain UDP endpoint that
// observes nothing goes after EndpointIdleTimeout; an observer's stays.
func TestEndpointIdleForgotten(t *testing.T) {
	t.Parallel()
	e := start(t, func(c *Config) { c.EndpointIdleTimeout = 200 * time.Millisecond })
	endpoints := func() int {
		e.a.mu.Lock()
		defer e.a.mu.Unlock()
		return len(e.a.conns)
	}
	gone, observer := e.raw(t), e.raw(t)
	gone.send(rawMsg{typ: message.Confirmable, code: codes.GET, mid: 1, token: []byte{1}, path: "/ps/idle/x", observe: -1, cf: -1})
	gone.mustRecv()
	observer.send(rawMsg{typ: message.Confirmable, code: codes.GET, mid: 2, token: []byte{2}, path: "/ps/idle/y", observe: 0, cf: -1})
	observer.mustRecv()
	if n := endpoints(); n != 2 {
		t.Fatalf("%d endpoints, want 2", n)
	}
	waitFor(t, "the idle endpoint to be forgotten", func() bool { return endpoints() == 1 })
	if e.a.observations() != 1 {
		t.Fatal("the observer's state went too")
	}
}

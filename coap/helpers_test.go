package coap

import (
	"bytes"
	"context"
	"encoding/hex"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/pkg/runner/periodic"
	"github.com/plgd-dev/go-coap/v3/udp"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
)

// users is a small real Credentials implementation for the tests: plain
// passwords in a map (the store is tested on its own).
type users map[string][2]string // name -> password, role

func (u users) VerifyPassword(_ context.Context, name, password string) (string, error) {
	v, ok := u[name]
	if !ok || v[0] != password {
		return "", adapters.ErrBadCredentials
	}
	return v[1], nil
}

func (u users) ACL(context.Context, string) ([]adapters.ACLRule, error) { return nil, nil }

func (u users) PrincipalRole(_ context.Context, name string) (string, error) {
	v, ok := u[name]
	if !ok {
		return "", adapters.ErrUnknownPrincipal
	}
	return v[1], nil
}

var testUsers = users{
	"admin":   {"adminpw", adapters.RoleAdmin},
	"alice":   {"alicepw", adapters.RoleUser},
	"sensor1": {"sensor1pw", adapters.RoleDevice},
}

var testPSK, _ = hex.DecodeString("73656372657431")

// presenceLog records DevicePresence calls.
type presenceLog struct {
	mu     sync.Mutex
	events []string
}

func (p *presenceLog) DevicePresence(_ context.Context, id, proto string, online bool, _ time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := id + " " + proto + " offline"
	if online {
		s = id + " " + proto + " online"
	}
	p.events = append(p.events, s)
}

func (p *presenceLog) snapshot() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.events...)
}

type env struct {
	a        *Adapter
	bus      *broker.Memory
	addr     string
	dtlsAddr string
	presence *presenceLog
}

// start runs a real bus and adapter on 127.0.0.1:0; mod adjusts the config.
func start(t testing.TB, mod func(*Config)) *env {
	t.Helper()
	return startSpool(t, nil, mod)
}

// startSpool is start with a bus whose durable state goes to spool.
func startSpool(t testing.TB, spool broker.Spool, mod func(*Config)) *env {
	t.Helper()
	bus, err := broker.NewMemory(broker.MemoryConfig{Spool: spool, Node: "test", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Addr:   "127.0.0.1:0",
		Node:   "test",
		Bus:    bus,
		Auth:   adapters.NewAuth(testUsers, nil),
		Logger: slog.New(slog.DiscardHandler),
		PSK: func(_ context.Context, id string) ([]byte, error) {
			if id == "sensor1" {
				return testPSK, nil
			}
			return nil, adapters.ErrBadCredentials
		},
	}
	if mod != nil {
		mod(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := &presenceLog{}
	a.SetPresenceSink(p)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := a.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
		_ = bus.Close()
	})
	addrs := a.Addrs()
	return &env{a: a, bus: bus, addr: addrs["coap"], dtlsAddr: addrs["coaps"], presence: p}
}

// dial returns a go-coap UDP client with block-wise transfer in blocks of
// 64 bytes (so 10 KiB takes 160 blocks each way).
func (e *env) dial(t testing.TB, addr string) *udpClient.Conn {
	t.Helper()
	if addr == "" {
		addr = e.addr
	}
	runner, stop := periodicRunner()
	cc, err := udp.Dial(addr, options.WithBlockwise(true, blockwise.SZX64, 10*time.Second),
		options.WithErrors(func(error) {}), options.WithPeriodicRunner(runner))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close(); <-cc.Done(); stop() })
	return cc
}

// periodicRunner replaces go-coap's default housekeeping goroutine (which
// sleeps 4 s between rounds) with one that stop ends at once.
func periodicRunner() (periodic.Func, func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	run := func(f func(time.Time) bool) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(50 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case now := <-t.C:
					if !f(now) {
						return
					}
				case <-done:
					return
				}
			}
		}()
	}
	var once sync.Once
	return run, func() { once.Do(func() { close(done) }); wg.Wait() }
}

// collector subscribes to filter on the bus and gathers what arrives.
type collector struct {
	ch chan *broker.Envelope
}

func (e *env) collect(t testing.TB, filter string) *collector {
	t.Helper()
	c := &collector{ch: make(chan *broker.Envelope, 1024)}
	sub, err := e.bus.Subscribe(context.Background(), broker.SubscribeOptions{Filters: []string{filter}, QoS: 2},
		func(_ context.Context, env *broker.Envelope) error {
			c.ch <- env
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return c
}

func (c *collector) next(t testing.TB) *broker.Envelope {
	t.Helper()
	select {
	case e := <-c.ch:
		return e
	case <-time.After(5 * time.Second):
		t.Fatal("no envelope on the bus within 5s")
		return nil
	}
}

func (c *collector) none(t testing.TB, wait time.Duration) {
	t.Helper()
	select {
	case e := <-c.ch:
		t.Fatalf("unexpected envelope on %q: %q", e.Topic, e.Payload)
	case <-time.After(wait):
	}
}

func ctx5(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func body(t testing.TB, m *pool.Message) []byte {
	t.Helper()
	if m.Body() == nil {
		return nil
	}
	b, err := io.ReadAll(m.Body())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func query(kv string) message.Option {
	return message.Option{ID: message.URIQuery, Value: []byte(kv)}
}

// rawConn is a bare UDP socket speaking CoAP datagrams, for what a
// well-behaved client library will not do (repeat a message id, ignore a
// CON notification, answer with a Reset).
type rawConn struct {
	t *testing.T
	c *net.UDPConn
}

func (e *env) raw(t *testing.T) *rawConn {
	t.Helper()
	ra, err := net.ResolveUDPAddr("udp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialUDP("udp", nil, ra)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &rawConn{t: t, c: c}
}

// rawMsg describes a datagram to encode.
type rawMsg struct {
	typ     message.Type
	code    codes.Code
	mid     int32
	token   []byte
	path    string
	observe int // -1: none
	cf      int // -1: none
	payload []byte
}

func (r *rawConn) send(m rawMsg) {
	r.t.Helper()
	p := pool.NewMessage(context.Background())
	p.SetType(m.typ)
	p.SetCode(m.code)
	p.SetMessageID(m.mid)
	p.SetToken(m.token)
	if m.path != "" {
		if err := p.SetPath(m.path); err != nil {
			r.t.Fatal(err)
		}
	}
	if m.observe >= 0 {
		p.SetObserve(uint32(m.observe))
	}
	if m.cf >= 0 {
		p.SetContentFormat(message.MediaType(m.cf))
	}
	if m.payload != nil {
		p.SetBody(bytes.NewReader(m.payload))
	}
	b, err := p.MarshalWithEncoder(coder.DefaultCoder)
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatal(err)
	}
}

// recv reads one datagram, or returns nil after wait.
func (r *rawConn) recv(wait time.Duration) *pool.Message {
	r.t.Helper()
	buf := make([]byte, 2048)
	_ = r.c.SetReadDeadline(time.Now().Add(wait))
	n, err := r.c.Read(buf)
	if err != nil {
		return nil
	}
	p := pool.NewMessage(context.Background())
	if _, err := p.UnmarshalWithDecoder(coder.DefaultCoder, buf[:n]); err != nil {
		r.t.Fatalf("undecodable datagram from the server: %v", err)
	}
	return p
}

func (r *rawConn) mustRecv() *pool.Message {
	r.t.Helper()
	m := r.recv(5 * time.Second)
	if m == nil {
		r.t.Fatal("no datagram from the server within 5s")
	}
	return m
}

// observations counts the adapter's live observations.
func (a *Adapter) observations() int {
	a.mu.Lock()
	states := make([]*connState, 0, len(a.conns))
	for _, cs := range a.conns {
		states = append(states, cs)
	}
	a.mu.Unlock()
	n := 0
	for _, cs := range states {
		cs.mu.Lock()
		n += len(cs.obs)
		cs.mu.Unlock()
	}
	return n
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

package coap

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// unverified starts an adapter that checks loopback peers' return
// routability, with short retransmissions.
func unverified(t *testing.T) *env {
	t.Helper()
	return start(t, func(c *Config) {
		c.VerifyLoopback = true
		c.AckTimeout = 50 * time.Millisecond
		c.MaxRetransmit = 2
	})
}

// exchange writes p and returns the first datagram with its token, and
// the sizes of both datagrams.
func (r *rawConn) exchange(p *pool.Message) (resp *pool.Message, sent, got int) {
	r.t.Helper()
	b, err := p.MarshalWithEncoder(coder.DefaultCoder)
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatal(err)
	}
	buf := make([]byte, 2048)
	for {
		_ = r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := r.c.Read(buf)
		if err != nil {
			r.t.Fatalf("no answer: %v", err)
		}
		m := pool.NewMessage(context.Background())
		if _, err := m.UnmarshalWithDecoder(coder.DefaultCoder, buf[:n]); err != nil {
			r.t.Fatal(err)
		}
		if bytes.Equal(m.Token(), p.Token()) {
			return m, len(b), n
		}
	}
}

func getMsg(t *testing.T, typ message.Type, mid int32, path string, echo []byte) *pool.Message {
	t.Helper()
	p := pool.NewMessage(context.Background())
	p.SetType(typ)
	p.SetCode(codes.GET)
	p.SetMessageID(mid)
	p.SetToken([]byte{byte(mid), 0xee})
	if err := p.SetPath(path); err != nil {
		t.Fatal(err)
	}
	if echo != nil {
		p.SetOptionBytes(message.Echo, echo)
	}
	return p
}

// TestSpoofedObserverGetsOneCON: an observe from an address that never
// answers (what a spoofed source looks like) gets its registration
// response and then one CON, a 4-byte ping, with its retransmissions,
// never a notification, and the observation ends.
func TestSpoofedObserverGetsOneCON(t *testing.T) {
	t.Parallel()
	e := unverified(t)
	r := e.raw(t)
	r.send(rawMsg{typ: message.NonConfirmable, code: codes.GET, mid: 1, token: []byte{1}, path: "/ps/spoof/t", observe: 0, cf: -1})
	if m := r.mustRecv(); m.Code() != codes.Content || !m.HasOption(message.Observe) {
		t.Fatalf("registration: %v", m)
	}
	for i := range 20 {
		publish(t, e.bus, "spoof/t", fmt.Sprintf("note %d of a 1000-byte stream", i), "", 0, false)
	}
	waitFor(t, "the observation to end", func() bool { return e.a.observations() == 0 })
	var got []*pool.Message
	for m := r.recv(300 * time.Millisecond); m != nil; m = r.recv(300 * time.Millisecond) {
		got = append(got, m)
	}
	if len(got) == 0 || len(got) > 1+2 {
		t.Fatalf("%d datagrams after the registration, want one CON and at most MaxRetransmit (2) retransmissions", len(got))
	}
	for _, m := range got {
		if m.Type() != message.Confirmable || m.Code() != codes.Empty || m.MessageID() != got[0].MessageID() {
			t.Errorf("datagram %v %v mid %d, want empty CON retransmissions of mid %d", m.Type(), m.Code(), m.MessageID(), got[0].MessageID())
		}
	}
}

// TestPingVerifies: the first notification to an unverified endpoint
// waits for its answer to a ping (a Reset, RFC 7252 §4.3); then it and
// the rest come NON.
func TestPingVerifies(t *testing.T) {
	t.Parallel()
	e := unverified(t)
	r := e.raw(t)
	r.send(rawMsg{typ: message.NonConfirmable, code: codes.GET, mid: 1, token: []byte{2}, path: "/ps/ack/t", observe: 0, cf: -1})
	r.mustRecv()
	publish(t, e.bus, "ack/t", "1", "", 0, false)
	m := r.mustRecv()
	if m.Type() != message.Confirmable || m.Code() != codes.Empty {
		t.Fatalf("first datagram %v %v, want a ping (empty CON)", m.Type(), m.Code())
	}
	r.send(rawMsg{typ: message.Reset, code: codes.Empty, mid: m.MessageID(), observe: -1, cf: -1})
	if m := r.mustRecv(); m.Type() != message.NonConfirmable || string(body(t, m)) != "1" {
		t.Fatalf("first notification after the ping: %v %q", m.Type(), body(t, m))
	}
	waitFor(t, "the endpoint to be verified", func() bool {
		e.a.mu.Lock()
		defer e.a.mu.Unlock()
		for _, cs := range e.a.conns {
			if cs.verified.Load() {
				return true
			}
		}
		return false
	})
	for i := range 3 {
		publish(t, e.bus, "ack/t", fmt.Sprint(2+i), "", 0, false)
		if m := r.mustRecv(); m.Type() != message.NonConfirmable || string(body(t, m)) != fmt.Sprint(2+i) {
			t.Fatalf("notification %d after the ping: %v %q", i, m.Type(), body(t, m))
		}
	}
}

// TestAmplificationBound: to an unverified endpoint a response is at most
// three times its request; a larger value is answered 4.01 with an Echo,
// and the request repeated with that Echo gets the value (RFC 9175 §2.4).
func TestAmplificationBound(t *testing.T) {
	t.Parallel()
	e := unverified(t)
	big := strings.Repeat("v", 500)
	publish(t, e.bus, "amp/small", "21.5", "", 0, true)
	publish(t, e.bus, "amp/big", big, "", 0, true)
	cases := []struct {
		name, path string
		echo       []byte // nil: none; else sent as is
		useIssued  bool   // send the Echo of the previous 4.01
		code       codes.Code
		body       string
	}{
		{"small value", "/ps/amp/small", nil, false, codes.Content, "21.5"},
		{"large value", "/ps/amp/big", nil, false, codes.Unauthorized, ""},
		{"forged echo", "/ps/amp/big", []byte("000011112222"), false, codes.Unauthorized, ""},
		{"short echo", "/ps/amp/big", []byte{1}, false, codes.Unauthorized, ""},
		{"error with its diagnostic", "/ps/amp/none/of/this/topic/has/a/value", nil, false, codes.NotFound, `no value on "amp/none/of/this/topic/has/a/value"`},
		{"error without its diagnostic", "/ps/#/x", nil, false, codes.BadRequest, ""},
		{"issued echo", "/ps/amp/big", nil, true, codes.Content, big},
	}
	r := e.raw(t)
	var issued []byte
	for i, c := range cases {
		echo := c.echo
		if c.useIssued {
			echo = issued
		}
		path, q, _ := strings.Cut(c.path, "?")
		p := getMsg(t, message.Confirmable, int32(10+i), path, echo)
		if q != "" {
			p.AddQuery(q)
		}
		m, sent, got := r.exchange(p)
		if b := string(body(t, m)); m.Code() != c.code || b != c.body {
			t.Fatalf("%s: %v %q, want %v %q", c.name, m.Code(), b, c.code, c.body)
		}
		if c.code != codes.Content || !c.useIssued {
			if got > 3*sent {
				t.Errorf("%s: %d bytes answered %d bytes, over 3x", c.name, sent, got)
			}
		}
		if v, err := m.GetOptionBytes(message.Echo); err == nil {
			issued = append([]byte(nil), v...)
		} else if c.code == codes.Unauthorized {
			t.Errorf("%s: 4.01 without Echo", c.name)
		}
	}
	// Verified now: the large value comes without a challenge.
	m, _, _ := r.exchange(getMsg(t, message.NonConfirmable, 50, "/ps/amp/big", nil))
	if m.Code() != codes.Content {
		t.Fatalf("after the Echo: %v", m.Code())
	}
}

// TestLargeRetainedFollowsRegistration: an unverified observer of a topic
// whose retained value is too large for the registration gets it as the
// first notification, once it has answered the ping.
func TestLargeRetainedFollowsRegistration(t *testing.T) {
	t.Parallel()
	e := unverified(t)
	val := strings.Repeat("r", 300)
	publish(t, e.bus, "follow/t", val, "", 0, true)
	r := e.raw(t)
	m, sent, got := r.exchange(func() *pool.Message {
		p := getMsg(t, message.NonConfirmable, 1, "/ps/follow/t", nil)
		p.SetObserve(0)
		return p
	}())
	if m.Code() != codes.Content || !m.HasOption(message.Observe) || len(body(t, m)) != 0 || got > 3*sent {
		t.Fatalf("registration %v Observe=%v %d bytes (%d sent)", m.Code(), m.HasOption(message.Observe), got, sent)
	}
	ping := r.mustRecv()
	if ping.Code() != codes.Empty || ping.Type() != message.Confirmable {
		t.Fatalf("before the value: %v %v, want a ping", ping.Type(), ping.Code())
	}
	r.send(rawMsg{typ: message.Reset, code: codes.Empty, mid: ping.MessageID(), observe: -1, cf: -1})
	if n := r.mustRecv(); string(body(t, n)) != val || !n.HasOption(message.Observe) {
		t.Fatalf("first notification %v %d bytes", n.Type(), len(body(t, n)))
	}
}

// TestGoCoAPObserverUnverified: go-coap's client (no Echo support)
// observes from an unverified endpoint: it answers the hub's ping, and the
// notifications follow.
func TestGoCoAPObserverUnverified(t *testing.T) {
	t.Parallel()
	e := unverified(t)
	cc := e.dial(t, "")
	ch, f := observeChan(t)
	obs, err := cc.Observe(ctx5(t), "/ps/gocoap/t", f)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = obs.Cancel(ctx5(t)) }()
	nextNote(t, ch)
	for i := range 3 {
		publish(t, e.bus, "gocoap/t", fmt.Sprint(i), "", 0, false)
		if n := nextNote(t, ch); string(n.payload) != fmt.Sprint(i) {
			t.Fatalf("notification %d: %q", i, n.payload)
		}
	}
}

// TestLibcoapEcho: libcoap's coap-client answers the 4.01 Echo challenge
// by itself and reads a value larger than three times its request.
func TestLibcoapEcho(t *testing.T) {
	t.Parallel()
	bin, err := exec.LookPath("coap-client-notls")
	if err != nil {
		if bin, err = exec.LookPath("coap-client"); err != nil {
			t.Skip("no coap-client (libcoap3-bin)")
		}
	}
	e := unverified(t)
	val := strings.Repeat("L", 400)
	publish(t, e.bus, "libcoap/t", val, "", 0, true)
	for _, mode := range [][]string{nil, {"-N"}} {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		args := append([]string{"-B", "5", "-m", "get"}, mode...)
		out, err := exec.CommandContext(ctx, bin, append(args, "coap://"+e.addr+"/ps/libcoap/t")...).CombinedOutput()
		cancel()
		if err != nil || strings.TrimSpace(string(out)) != val {
			t.Fatalf("coap-client %v: %v %q", mode, err, out)
		}
	}
	if v := testCounter(t, e.a.metrics.echoChallenges); v < 1 {
		t.Fatalf("%v echo challenges, want at least one", v)
	}
}

// testCounter reads a counter's value.
func testCounter(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// FuzzEchoCheck: no Echo value but the one issued to an endpoint verifies
// it, and checking never panics.
func FuzzEchoCheck(f *testing.F) {
	k, err := newEchoKey()
	if err != nil {
		f.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	good := k.issue("192.0.2.1:5683", now)
	f.Add(good, "192.0.2.1:5683")
	f.Add(good, "192.0.2.1:5684")
	f.Add([]byte{}, "")
	f.Add(bytes.Repeat([]byte{0xff}, 40), "[::1]:1")
	f.Fuzz(func(t *testing.T, v []byte, remote string) {
		err := k.check(v, remote, now)
		if err == nil && !(bytes.Equal(v, k.issue(remote, now)) || len(v) == echoLen) {
			t.Fatalf("echo %x for %q accepted", v, remote)
		}
		if err == nil && !bytes.Equal(v[4:], k.mac(binary.BigEndian.Uint32(v), remote)) {
			t.Fatalf("echo %x for %q accepted without its MAC", v, remote)
		}
		if bytes.Equal(v, good) && remote == "192.0.2.1:5683" && err != nil {
			t.Fatalf("the issued echo was refused: %v", err)
		}
	})
}

// TestLibcoapObserveUnverified: libcoap's coap-client observing from an
// unverified endpoint answers the hub's ping and gets the notifications.
func TestLibcoapObserveUnverified(t *testing.T) {
	t.Parallel()
	bin, err := exec.LookPath("coap-client-notls")
	if err != nil {
		if bin, err = exec.LookPath("coap-client"); err != nil {
			t.Skip("no coap-client (libcoap3-bin)")
		}
	}
	e := unverified(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-B", "10", "-s", "3", "coap://"+e.addr+"/ps/lobs/t")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the observation", func() bool { return e.a.observations() == 1 })
	// A publish every 100 ms for as long as coap-client observes (-s 3:
	// three seconds), so that a slow ping exchange on a busy machine
	// still leaves notifications to send once the endpoint is verified.
	for i := 0; e.a.observations() == 1 && i < 50; i++ {
		publish(t, e.bus, "lobs/t", fmt.Sprintf("lnote%d", i), "", 0, false)
		time.Sleep(100 * time.Millisecond)
	}
	_ = cmd.Wait()
	if !strings.Contains(out.String(), "lnote") {
		t.Fatalf("coap-client got no notification: %q", out.String())
	}
	if v := testCounter(t, e.a.metrics.verified.WithLabelValues("ping")); v != 1 {
		t.Fatalf("%v endpoints verified by ping, want 1", v)
	}
}

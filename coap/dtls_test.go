package coap

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	piondtls "github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/options"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/hubsmith/hub/store"
)

func dialDTLS(t *testing.T, addr, identity string, key []byte) (*udpClient.Conn, error) {
	t.Helper()
	runner, stop := periodicRunner()
	cc, err := dtls.Dial(addr, dtls.NewDTLSClientOptions(
		piondtls.WithPSK(func([]byte) ([]byte, error) { return key, nil }),
		piondtls.WithPSKIdentityHint([]byte(identity)),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8),
	), options.WithErrors(func(error) {}), options.WithPeriodicRunner(runner))
	if err != nil {
		stop()
		return nil, err
	}
	t.Cleanup(func() { _ = cc.Close(); <-cc.Done(); stop() })
	return cc, nil
}

// handshakeDTLS runs a bare pion DTLS handshake with a PSK, bounded in time.
// go-coap's client hands out its connection before the handshake and runs
// it from its reader without a deadline, so a refused handshake can leave
// a request waiting forever; the refusal is checked here instead.
func handshakeDTLS(addr, identity string, key []byte) error {
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return err
	}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	conn, err := piondtls.ClientWithOptions(pc, raddr,
		piondtls.WithPSK(func([]byte) ([]byte, error) { return key, nil }),
		piondtls.WithPSKIdentityHint([]byte(identity)),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8))
	if err != nil {
		_ = pc.Close()
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return conn.HandshakeContext(ctx)
}

// TestDTLSPSK: a device with the right PSK publishes under its own tree
// as principal "sensor1" with role device, is refused elsewhere, observes
// its commands, and is reported online and then offline; a wrong key does
// not get a session.
func TestDTLSPSK(t *testing.T) {
	t.Parallel()
	e := start(t, func(c *Config) { c.DTLSAddr = "127.0.0.1:0" })
	if e.dtlsAddr == "" {
		t.Fatal("no coaps address")
	}
	for _, bad := range []struct{ id, key string }{{"sensor1", "wrong key"}, {"ghost", string(testPSK)}} {
		if err := handshakeDTLS(e.dtlsAddr, bad.id, []byte(bad.key)); err == nil {
			t.Errorf("identity %q key %q: DTLS handshake succeeded", bad.id, bad.key)
		}
	}
	c := e.collect(t, "#")
	cc, err := dialDTLS(t, e.dtlsAddr, "sensor1", testPSK)
	if err != nil {
		t.Fatal(err)
	}
	// Credentials in the query do not change a DTLS principal.
	resp, err := cc.Post(ctx5(t), "/ps/devices/sensor1/temp", message.TextPlain, strings.NewReader("21"), query("u=admin"), query("p=adminpw"))
	if err != nil || resp.Code() != codes.Changed {
		t.Fatalf("POST own topic: %v %v", resp, err)
	}
	got := c.next(t)
	if got.Origin.Principal != "sensor1" || got.Origin.ClientID != "sensor1" || got.QoS != 1 || string(got.Payload) != "21" {
		t.Fatalf("envelope origin %+v qos %d", got.Origin, got.QoS)
	}
	resp, err = cc.Post(ctx5(t), "/ps/other/temp", message.TextPlain, strings.NewReader("21"))
	if err != nil || resp.Code() != codes.Forbidden {
		t.Fatalf("POST foreign topic: %v %v", resp, err)
	}
	ch, f := observeChan(t)
	obs, err := cc.Observe(ctx5(t), "/ps/devices/sensor1/commands/+", f)
	if err != nil {
		t.Fatal(err)
	}
	nextNote(t, ch)
	publish(t, e.bus, "devices/sensor1/commands/blink", `{"id":"1"}`, "application/json", 1, false)
	if n := nextNote(t, ch); string(n.payload) != `{"id":"1"}` {
		t.Fatalf("command over DTLS: %+v", n)
	}
	// The deregistration is a plain GET of the filter too (RFC 7641 §3.6):
	// nothing is retained under it, so it is answered 4.04, which go-coap's
	// Cancel reports as an error. What matters is that the observation ends.
	_ = obs.Cancel(ctx5(t))
	waitFor(t, "observation to end", func() bool { return e.a.observations() == 0 })
	waitFor(t, "online", func() bool { return slices.Contains(e.presence.snapshot(), "sensor1 coap online") })
	_ = cc.Close()
	waitFor(t, "offline", func() bool { return slices.Contains(e.presence.snapshot(), "sensor1 coap offline") })
	if p := e.presence.snapshot(); len(p) != 2 {
		t.Fatalf("presence events %v", p)
	}
}

// TestDTLSOnly: with Addr "" only the DTLS listener runs.
func TestDTLSOnly(t *testing.T) {
	t.Parallel()
	e := start(t, func(c *Config) { c.Addr = ""; c.DTLSAddr = "127.0.0.1:0" })
	if e.addr != "" || e.dtlsAddr == "" {
		t.Fatalf("addrs %v", e.a.Addrs())
	}
	cc, err := dialDTLS(t, e.dtlsAddr, "sensor1", testPSK)
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := cc.Post(ctx5(t), "/ps/devices/sensor1/x", message.TextPlain, strings.NewReader("1")); err != nil || resp.Code() != codes.Changed {
		t.Fatalf("POST: %v %v", resp, err)
	}
}

// TestDTLSIdleOffline: a DTLS session silent for IdleTimeout is closed and
// its device reported offline.
func TestDTLSIdleOffline(t *testing.T) {
	t.Parallel()
	e := start(t, func(c *Config) { c.DTLSAddr = "127.0.0.1:0"; c.IdleTimeout = 300 * time.Millisecond })
	cc, err := dialDTLS(t, e.dtlsAddr, "sensor1", testPSK)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cc.Post(ctx5(t), "/ps/devices/sensor1/x", message.TextPlain, strings.NewReader("1")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "offline after idling", func() bool { return slices.Contains(e.presence.snapshot(), "sensor1 coap offline") })
}

// TestDTLSObserverGetsWhatItMissed: a device's CON observation over DTLS is
// a durable subscription; QoS 1 commands published while the device is
// away reach it, in order, when it observes again from a new session.
func TestDTLSObserverGetsWhatItMissed(t *testing.T) {
	t.Parallel()
	st, err := store.Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	e := startSpool(t, st, func(c *Config) { c.DTLSAddr = "127.0.0.1:0" })
	observe := func() (*udpClient.Conn, chan notification) {
		cc, err := dialDTLS(t, e.dtlsAddr, "sensor1", testPSK)
		if err != nil {
			t.Fatal(err)
		}
		ch, f := observeChan(t)
		if _, err := cc.Observe(ctx5(t), "/ps/devices/sensor1/commands/+", f); err != nil {
			t.Fatal(err)
		}
		nextNote(t, ch)
		return cc, ch
	}
	cc, ch := observe()
	publish(t, e.bus, "devices/sensor1/commands/a", "1", "", 1, false)
	if n := nextNote(t, ch); string(n.payload) != "1" {
		t.Fatalf("live command %+v", n)
	}
	_ = cc.Close()
	waitFor(t, "observation to end with the session", func() bool { return e.a.observations() == 0 })
	publish(t, e.bus, "devices/sensor1/commands/b", "2", "", 1, false)
	publish(t, e.bus, "devices/sensor1/commands/c", "3", "", 1, false)
	publish(t, e.bus, "devices/sensor1/commands/d", "lost", "", 0, false) // QoS 0 is not kept
	_, ch = observe()
	n := nextNote(t, ch)
	if string(n.payload) == "1" {
		// The session closed before its ACK of "1" left: a QoS 1
		// redelivery, which the protocol allows.
		n = nextNote(t, ch)
	}
	for i, want := range []string{"2", "3"} {
		if i > 0 {
			n = nextNote(t, ch)
		}
		if string(n.payload) != want {
			t.Fatalf("missed command %+v, want %q", n, want)
		}
	}
	select {
	case n := <-ch:
		t.Fatalf("unexpected notification %+v", n)
	case <-time.After(200 * time.Millisecond):
	}
}

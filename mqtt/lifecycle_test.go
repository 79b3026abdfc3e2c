package mqtt

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
	pahopackets "github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/hubsmith/hub/broker"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// paho.mqtt.golang's Disconnect(0) returns before its workers end.
		goleak.IgnoreAnyFunction("github.com/eclipse/paho.mqtt.golang.(*client).startCommsWorkers"),
		goleak.IgnoreAnyFunction("github.com/eclipse/paho.mqtt.golang.startComms.func2"),
		goleak.IgnoreAnyFunction("github.com/eclipse/paho.mqtt.golang.startIncomingComms.func1"),
		goleak.IgnoreAnyFunction("github.com/eclipse/paho.mqtt.golang.startOutgoingComms.func1"),
		goleak.IgnoreAnyFunction("github.com/eclipse/paho.mqtt.golang.keepalive"),
		goleak.IgnoreAnyFunction("internal/poll.runtime_pollWait"),
	)
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	bus, err := broker.NewMemory(broker.MemoryConfig{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no bus", Config{}, "Bus"},
		{"tls without config", Config{Bus: bus, TLSAddr: "127.0.0.1:0"}, "TLSConfig"},
		{"no listener", Config{Bus: bus, Addr: "off", TLSAddr: "off"}, "no listener"},
		{"same address twice", Config{Bus: bus, Addr: "127.0.0.1:8883", TLSAddr: "127.0.0.1:8883", TLSConfig: &tls.Config{}}, "both"},
		{"negative clients", Config{Bus: bus, MaxClients: -1}, "MaxClients"},
		{"tiny packets", Config{Bus: bus, MaxPacketSize: 10}, "MaxPacketSize"},
		{"sub-second sys interval", Config{Bus: bus, SysInterval: time.Millisecond}, "SysInterval"},
		{"negative write timeout", Config{Bus: bus, WriteTimeout: -time.Second}, "WriteTimeout"},
		{"defaults", Config{Bus: bus}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := New(tc.cfg)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if a.cfg.Addr != DefaultAddr || a.cfg.MaxPacketSize != DefaultMaxPacketSize || a.Name() != "mqtt" {
					t.Fatalf("defaults %+v", a.cfg)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming %q", err, tc.want)
			}
		})
	}
}

func TestStartStopLifecycle(t *testing.T) {
	t.Parallel()
	h := newHub(t, nil)
	if err := h.a.Healthy(); err != nil {
		t.Fatal(err)
	}
	if err := h.a.Start(context.Background()); err == nil {
		t.Fatal("second Start accepted")
	}
	c := mustV3(t, h.addr, "life", "", "", true)
	c.sub(t, "x", 0)
	if err := h.a.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := h.a.Healthy(); err == nil {
		t.Fatal("healthy after Stop")
	}
	if err := h.a.Stop(context.Background()); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	waitFor(t, func() bool { return !c.c.IsConnectionOpen() })
	if _, err := net.DialTimeout("tcp", h.addr, time.Second); err == nil {
		t.Fatal("listener still accepts")
	}
	// The durable bus subscription was detached, not dropped: the bus
	// still accepts publishes and the adapter can come back (restart).
	h.bus.Close()
	h.st.Close()
	h.a = nil
	h.open()
	mustV3(t, h.addr, "life2", "", "", true)
}

func TestTLSListener(t *testing.T) {
	t.Parallel()
	cert, pool := selfSigned(t)
	h := newHub(t, func(c *Config) {
		c.TLSAddr = "127.0.0.1:0"
		c.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	})
	addr := h.a.Addrs()["mqtts"]
	if addr == "" || strings.HasSuffix(addr, ":0") {
		t.Fatalf("mqtts address %q", addr)
	}
	o := pahov3.NewClientOptions().AddBroker("ssl://" + addr).SetClientID("tls").SetUsername("alice").SetPassword("alicepw").
		SetTLSConfig(&tls.Config{RootCAs: pool, ServerName: "localhost"}).SetAutoReconnect(false)
	c := pahov3.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("tls connect: %v", tok.Error())
	}
	defer c.Disconnect(0)
	got := make(chan string, 1)
	if tok := c.Subscribe("tls/t", 1, func(_ pahov3.Client, m pahov3.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	mustV3(t, h.addr, "plain", "", "", true).pub(t, "tls/t", 1, false, "secret")
	select {
	case p := <-got:
		if p != "secret" {
			t.Fatalf("got %q", p)
		}
	case <-time.After(wait):
		t.Fatal("nothing over TLS")
	}
	// A plain MQTT client on the TLS port does not get in.
	if _, err := dialV3(t, addr, "plain-on-tls", "", "", true); err == nil {
		t.Fatal("plain client accepted on the TLS listener")
	}
}

func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

func TestMaxClients(t *testing.T) {
	t.Parallel()
	h := newHub(t, func(c *Config) { c.MaxClients = 1 })
	mustV3(t, h.addr, "first", "", "", true)
	if _, err := dialV3(t, h.addr, "second", "", "", true); !errors.Is(err, pahopackets.ErrorRefusedServerUnavailable) {
		t.Fatalf("second client: %v", err)
	}
	_, ca, _ := dialV5(t, h.addr, &paho.Connect{ClientID: "third", CleanStart: true})
	if ca == nil || ca.ReasonCode != 0x89 {
		t.Fatalf("v5 over the limit: %+v", ca)
	}
}

func TestWillReachesBus(t *testing.T) {
	t.Parallel()
	h := newHub(t, nil)
	ch := busSub(t, h.bus, "devices/#")
	o := pahov3.NewClientOptions().AddBroker("tcp://"+h.addr).SetClientID("will").SetUsername("sensor1").SetPassword("sensor1pw").
		SetWill("devices/sensor1/status", "offline", 1, true).SetAutoReconnect(false).SetKeepAlive(30 * time.Second)
	c := pahov3.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	// Drop the connection without DISCONNECT.
	cl, ok := h.a.srv.Clients.Get("will")
	if !ok {
		t.Fatal("client not found")
	}
	_ = cl.Net.Conn.Close()
	e := nextEnv(t, ch)
	if e.Topic != "devices/sensor1/status" || string(e.Payload) != "offline" || !e.Retain || e.QoS != 1 ||
		e.Origin.Principal != "sensor1" || e.Origin.Protocol != broker.ProtoMQTT {
		t.Fatalf("will envelope %+v", e)
	}
	c.Disconnect(0)
}

func TestV5SessionExpirySurvivesRestart(t *testing.T) {
	t.Parallel()
	h := newHub(t, nil)
	exp := uint32(3600)
	cp := func() *paho.Connect {
		return &paho.Connect{ClientID: "v5keep", CleanStart: false, KeepAlive: 30, Username: "alice", UsernameFlag: true,
			Password: []byte("alicepw"), PasswordFlag: true, Properties: &paho.ConnectProperties{SessionExpiryInterval: &exp}}
	}
	c, _, err := dialV5(t, h.addr, cp())
	if err != nil {
		t.Fatal(err)
	}
	c.sub(t, "v5keep/#", 1)
	_ = c.c.Disconnect(&paho.Disconnect{})
	<-c.c.Done()
	ct := "text/plain"
	if err := h.bus.Publish(context.Background(), &broker.Envelope{Topic: "v5keep/a", Payload: []byte("hi"), QoS: 1,
		ContentType: ct, Origin: broker.Origin{Protocol: broker.ProtoREST}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return h.queued("v5keep") == 1 })
	h.restart()
	c, ca, err := dialV5(t, h.addr, cp())
	if err != nil {
		t.Fatal(err)
	}
	if !ca.SessionPresent {
		t.Fatal("session not present after restart")
	}
	m := c.next(t)
	if m.Topic != "v5keep/a" || string(m.Payload) != "hi" || m.Properties.ContentType != ct {
		t.Fatalf("got %+v", m)
	}
}

func TestSysTopics(t *testing.T) {
	t.Parallel()
	h := newHub(t, nil)
	c := mustV3(t, h.addr, "sys", "admin", "adminpw", true)
	c.sub(t, "$SYS/broker/version", 0)
	if m := c.next(t); m.Topic() != "$SYS/broker/version" || len(m.Payload()) == 0 || !m.Retained() {
		t.Fatalf("got %q %q", m.Topic(), m.Payload())
	}
	// The values are the bus's retained ones, as every protocol reads
	// them; a client cannot publish there.
	if rs, err := h.bus.Retained(context.Background(), "$SYS/broker/clients/connected"); err != nil || len(rs) != 1 {
		t.Fatalf("bus: %v %v", rs, err)
	}
	ch := busSub(t, h.bus, "$SYS/broker/version")
	c.pub(t, "$SYS/broker/version", 1, false, "fake")
	select {
	case e := <-ch:
		t.Fatalf("bus got %q %q", e.Topic, e.Payload)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestWebSocketListener(t *testing.T) {
	t.Parallel()
	h := newHub(t, func(c *Config) { c.WSAddr = "127.0.0.1:0" })
	addr := h.a.Addrs()["ws"]
	if addr == "" || strings.HasSuffix(addr, ":0") {
		t.Fatalf("ws address %q", addr)
	}
	o := pahov3.NewClientOptions().AddBroker("ws://" + addr + "/mqtt").SetClientID("ws").SetUsername("alice").SetPassword("alicepw").
		SetAutoReconnect(false)
	c := pahov3.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("ws connect: %v", tok.Error())
	}
	got := make(chan string, 1)
	if tok := c.Subscribe("ws/t", 1, func(_ pahov3.Client, m pahov3.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	mustV3(t, h.addr, "tcp-side", "", "", true).pub(t, "ws/t", 1, false, "over ws")
	select {
	case p := <-got:
		if p != "over ws" {
			t.Fatalf("got %q", p)
		}
	case <-time.After(wait):
		t.Fatal("nothing over WebSocket")
	}
	if tok := c.Publish("ws/back", 1, false, "up"); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	c.Disconnect(100)
	// A plain HTTP request is refused, not crashed on.
	resp, err := http.Get("http://" + addr + "/mqtt")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode < 400 {
		t.Fatalf("plain GET: %s", resp.Status)
	}
}

func TestStartFailsCleanly(t *testing.T) {
	t.Parallel()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	bus, err := broker.NewMemory(broker.MemoryConfig{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	a, err := New(Config{Addr: taken.Addr().String(), Bus: bus, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("start on a taken port: %v", err)
	}
	if err := a.Healthy(); err == nil {
		t.Fatal("healthy after a failed start")
	}
	// Metrics registered twice: the second adapter fails to start.
	reg := prometheus.NewRegistry()
	first, _ := New(Config{Addr: "127.0.0.1:0", Bus: bus, Logger: quietLogger(), Registerer: reg})
	if err := first.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer first.Stop(context.Background())
	second, _ := New(Config{Addr: "127.0.0.1:0", Bus: bus, Logger: quietLogger(), Registerer: reg})
	if err := second.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "metrics") {
		t.Fatalf("duplicate metrics: %v", err)
	}
}

func TestSilentConnectionIsClosed(t *testing.T) {
	t.Parallel()
	h := newHub(t, func(c *Config) { c.ConnectTimeout = 200 * time.Millisecond })
	start := time.Now()
	r := dialRaw(t, h.addr)
	if b := r.rest(); len(b) != 0 {
		t.Fatalf("got % x", b)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("closed after %v", d)
	}
	// A client that does send CONNECT in time is not affected later.
	c := mustV3(t, h.addr, "in-time", "", "", true)
	time.Sleep(300 * time.Millisecond)
	c.sub(t, "still/here", 0)
}

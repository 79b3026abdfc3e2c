package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	piondtls "github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/options"
	"mellium.im/sasl"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/gateway"
	"github.com/hubsmith/hub/hubtest"
	"github.com/hubsmith/hub/store"
)

// natsHubs starts hubs named names on the NATS server srv.
func natsHubs(t *testing.T, srv *server.Server, names ...string) []*hubtest.Hub {
	t.Helper()
	var hubs []*hubtest.Hub
	for _, name := range names {
		hubs = append(hubs, hubtest.Start(t, func(c *gateway.Config) {
			c.Node = name
			c.NATS.URL = srv.ClientURL()
			c.CoAP.DTLSAddr = "127.0.0.1:0"
		}))
	}
	return hubs
}

// dtlsPost logs in over DTLS with a PSK and posts one reading in the
// device's own tree, returning the response code (or the error).
func dtlsPost(t *testing.T, addr, id, key string) (codes.Code, error) {
	t.Helper()
	c, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	cc, err := dtls.Dial(addr, dtls.NewDTLSClientOptions(
		piondtls.WithPSK(func([]byte) ([]byte, error) { return []byte(key), nil }),
		piondtls.WithPSKIdentityHint([]byte(id)),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8),
	), options.WithErrors(func(error) {}))
	if err != nil {
		return 0, err
	}
	defer func() { _ = cc.Close(); <-cc.Done() }()
	resp, err := cc.Post(c, "/ps/devices/"+id+"/temp", message.TextPlain, strings.NewReader("20"))
	if err != nil {
		return 0, err
	}
	return resp.Code(), nil
}

// within polls f until it holds and returns how long that took, failing
// the test after limit.
func within(t *testing.T, what string, limit time.Duration, f func() bool) time.Duration {
	t.Helper()
	t0 := time.Now()
	for !f() {
		if time.Since(t0) > limit {
			t.Fatalf("%s: not after %v", what, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
	d := time.Since(t0)
	t.Logf("%s after %v", what, d.Round(time.Millisecond))
	return d
}

// TestPrincipalsAcrossHubs: users, devices, ACL rules and tokens made on
// hub A are known on hub B: a device registered on A logs in on B over
// MQTT, CoAP (DTLS PSK) and XMPP, a user added on A logs in on B, a token
// minted on A works on B, an ACL set on A applies on B; a deletion on A
// ends the principal's sessions on B and its logins there.
func TestPrincipalsAcrossHubs(t *testing.T) {
	srv := natsServer(t)
	hubs := natsHubs(t, srv, "a", "b")
	a, b := hubs[0], hubs[1]
	baseA, baseB := "http://"+a.Addr(t, "rest"), "http://"+b.Addr(t, "rest")
	mqttB, xmppB, coapsB := b.Addr(t, "mqtt.mqtt"), b.Addr(t, "xmpp"), b.Addr(t, "coap.coaps")

	if s, body := httpAsBody(t, http.MethodPost, baseA+"/api/v1/devices", "admin", "adminpw",
		`{"id":"lamp9","protocol":"mqtt","password":"lamp9pw"}`); s != http.StatusCreated {
		t.Fatalf("add device on A: %d %s", s, body)
	}
	within(t, "a device added on A logs in on B over MQTT", 5*time.Second, func() bool {
		return mqttConnack(t, mqttB, nil, "lamp9", "lamp9", "lamp9pw") == 0
	})
	if err := xmppTry(t, xmppB, "lamp9", "lamp9pw", sasl.ScramSha256); err != nil {
		t.Fatalf("device lamp9 over XMPP on B: %v", err)
	}
	if rc := mqttConnack(t, mqttB, nil, "lamp9", "lamp9", "wrong"); rc == 0 {
		t.Fatal("a wrong password accepted on B")
	}
	if s, body := httpAsBody(t, http.MethodPost, baseA+"/api/v1/devices", "admin", "adminpw",
		`{"id":"therm9","protocol":"coap","psk":"746865726d6b6579"}`); s != http.StatusCreated {
		t.Fatalf("add CoAP device on A: %d %s", s, body)
	}
	within(t, "a CoAP device added on A logs in on B over DTLS", 10*time.Second, func() bool {
		code, err := dtlsPost(t, coapsB, "therm9", "thermkey")
		return err == nil && code == codes.Changed
	})

	if s, body := httpAsBody(t, http.MethodPost, baseA+"/api/v1/users", "admin", "adminpw",
		`{"name":"carol","password":"carolpw","role":"user"}`); s != http.StatusCreated {
		t.Fatalf("add carol on A: %d %s", s, body)
	}
	within(t, "a user added on A logs in on B over XMPP", 5*time.Second, func() bool {
		return xmppTry(t, xmppB, "carol", "carolpw", sasl.ScramSha256) == nil
	})
	s, body := httpAsBody(t, http.MethodPost, baseA+"/api/v1/tokens", "", "", `{"name":"carol","password":"carolpw"}`)
	var tok struct{ Token string }
	if s != http.StatusCreated || json.Unmarshal([]byte(body), &tok) != nil || tok.Token == "" {
		t.Fatalf("token on A: %d %s", s, body)
	}
	bearer := func(base string) int {
		resp, err := http.DefaultClient.Do(mustRequest(t, http.MethodGet, base+"/api/v1/topics/x", "Bearer "+tok.Token))
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	within(t, "a token minted on A works on B", 5*time.Second, func() bool { return bearer(baseB) != http.StatusUnauthorized })

	// An ACL set on A: carol may publish only under carol/#, on B too.
	if s, body := httpAsBody(t, http.MethodPut, baseA+"/api/v1/users/carol/acl", "admin", "adminpw",
		`[{"action":"publish","filter":"carol/#","allow":true}]`); s/100 != 2 {
		t.Fatalf("set ACL on A: %d %s", s, body)
	}
	within(t, "an ACL set on A applies on B", 5*time.Second, func() bool {
		s, _ := httpAsBody(t, http.MethodPost, baseB+"/api/v1/topics/elsewhere/x", "carol", "carolpw", "no")
		return s == http.StatusForbidden
	})
	if s, body := httpAsBody(t, http.MethodPost, baseB+"/api/v1/topics/carol/x", "carol", "carolpw", "yes"); s/100 != 2 {
		t.Fatalf("carol publishing in her tree on B: %d %s", s, body)
	}

	// Deleted on A: the sessions on B end, the logins on B are refused.
	mq := dialMQTT(t, mqttB, "carol-phone", "carol", "carolpw", false)
	dev := dialMQTT(t, mqttB, "lamp9", "lamp9", "lamp9pw", true)
	t0 := time.Now()
	if s, body := httpAsBody(t, http.MethodDelete, baseA+"/api/v1/users/carol", "admin", "adminpw", ""); s != http.StatusNoContent {
		t.Fatalf("delete carol on A: %d %s", s, body)
	}
	// (the device's login user goes with it)
	if s, body := httpAsBody(t, http.MethodDelete, baseA+"/api/v1/devices/lamp9", "admin", "adminpw", ""); s != http.StatusNoContent {
		t.Fatalf("delete lamp9 on A: %d %s", s, body)
	}
	within(t, "carol's MQTT session on B ended", 5*time.Second, func() bool { return !mq.IsConnectionOpen() })
	within(t, "lamp9's MQTT connection on B ended", 5*time.Second, func() bool { return !dev.IsConnectionOpen() })
	t.Logf("revoked on B %v after the deletion on A", time.Since(t0).Round(time.Millisecond))
	// The sessions may end (revocation mark) a moment before B's store
	// has applied the deletion: the logins are refused once it has.
	within(t, "carol's XMPP login refused on B", 5*time.Second, func() bool {
		return xmppTry(t, xmppB, "carol", "carolpw", sasl.ScramSha256) != nil
	})
	within(t, "lamp9's MQTT login refused on B", 5*time.Second, func() bool {
		return mqttConnack(t, mqttB, nil, "lamp9", "lamp9", "lamp9pw") != 0
	})
	if s := bearer(baseB); s != http.StatusUnauthorized {
		t.Fatalf("carol's token on B after her deletion: %d, want 401", s)
	}
	// The device's record is its own change, applied on B apart from its
	// login user's.
	within(t, "lamp9 unknown on B", 5*time.Second, func() bool {
		s, _ := httpAsBody(t, http.MethodGet, baseB+"/api/v1/devices/lamp9", "admin", "adminpw", "")
		return s == http.StatusNotFound
	})
}

// TestPrincipalsWhileStopped: what the CLI writes into a stopped hub's
// store is pushed to the cluster when that hub starts, and what changed
// in the cluster meanwhile reaches it.
func TestPrincipalsWhileStopped(t *testing.T) {
	srv := natsServer(t)
	hubs := natsHubs(t, srv, "a", "b")
	a, b := hubs[0], hubs[1]
	baseA := "http://" + a.Addr(t, "rest")
	if s, body := httpAsBody(t, http.MethodPost, baseA+"/api/v1/users", "admin", "adminpw",
		`{"name":"frank","password":"frankpw","role":"user"}`); s != http.StatusCreated {
		t.Fatalf("add frank on A: %d %s", s, body)
	}
	within(t, "frank on B", 5*time.Second, func() bool {
		_, err := b.Store.GetUser(t.Context(), "frank")
		return err == nil
	})
	b.Close(t)

	// hub user add --data-dir of the stopped B; a user added on A.
	st, err := store.Open(t.Context(), b.Config.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.AddUser(t.Context(), "dave", "davepw", adapters.RoleUser); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteUser(t.Context(), "frank"); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if s, body := httpAsBody(t, http.MethodPost, baseA+"/api/v1/users", "admin", "adminpw",
		`{"name":"erin","password":"erinpw","role":"user"}`); s != http.StatusCreated {
		t.Fatalf("add erin on A: %d %s", s, body)
	}

	b2 := hubtest.StartConfig(t, b.Config)
	if err := xmppTry(t, b2.Addr(t, "xmpp"), "erin", "erinpw", sasl.ScramSha256); err != nil {
		t.Fatalf("erin, added on A while B was stopped, on B: %v", err)
	}
	xmppA := a.Addr(t, "xmpp")
	within(t, "dave, added with B stopped, logs in on A", 5*time.Second, func() bool {
		return xmppTry(t, xmppA, "dave", "davepw", sasl.ScramSha256) == nil
	})
	within(t, "frank, deleted with B stopped, is refused on A", 5*time.Second, func() bool {
		return xmppTry(t, xmppA, "frank", "frankpw", sasl.ScramSha256) != nil
	})
}

// cutProxy is a TCP proxy between a hub and its NATS server, so that a
// test can cut the hub off the network (Cut) and join it again (Heal).
type cutProxy struct {
	t      *testing.T
	addr   string
	target string

	mu    sync.Mutex
	ln    net.Listener
	conns []net.Conn
	wg    sync.WaitGroup
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	p := &cutProxy{t: t, target: target}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(func() { p.Cut(); p.wg.Wait() })
	return p
}

func (p *cutProxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", p.target)
			if err != nil {
				_ = c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			for _, pair := range [][2]net.Conn{{c, u}, {u, c}} {
				p.wg.Add(1)
				go func() {
					defer p.wg.Done()
					_, _ = io.Copy(pair[0], pair[1])
					_ = pair[0].Close()
					_ = pair[1].Close()
				}()
			}
		}
	}()
}

// Cut closes the listener and every connection through it.
func (p *cutProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

// Heal listens again on the same address.
func (p *cutProxy) Heal() {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatalf("proxy listen again on %s: %v", p.addr, err)
	}
	p.serve(ln)
}

// TestDeadHubsDevicesGoOffline: a device connected to hub B is online on
// A; when B is cut off from NATS (as good as dead to the others), A marks
// it offline within HubTTL and a heartbeat, and a command to it on A
// answers 503 as to any offline device; when B comes back, A shows the
// device online again; when A restarts, it does not take the device on B
// for a leftover of its own last run.
func TestDeadHubsDevicesGoOffline(t *testing.T) {
	srv := natsServer(t)
	proxy := newCutProxy(t, strings.TrimPrefix(srv.ClientURL(), "nats://"))
	a := hubtest.Start(t, func(c *gateway.Config) { c.Node = "a"; c.NATS.URL = srv.ClientURL() })
	b := hubtest.Start(t, func(c *gateway.Config) { c.Node = "b"; c.NATS.URL = "nats://" + proxy.addr })
	baseA := "http://" + a.Addr(t, "rest")
	if s, body := httpAsBody(t, http.MethodPost, baseA+"/api/v1/devices", "admin", "adminpw",
		`{"id":"lamp1","protocol":"mqtt","password":"lamppw"}`); s != http.StatusCreated {
		t.Fatalf("add device on A: %d %s", s, body)
	}
	waitDeviceOn(t, b, "lamp1")
	dev := startACLDevice(t, b)
	online := func() bool {
		_, body := httpAsBody(t, http.MethodGet, baseA+"/api/v1/devices/lamp1", "admin", "adminpw", "")
		return strings.Contains(body, `"online":true`)
	}
	eventually(t, "lamp1 online on A", online)

	proxy.Cut()
	d := within(t, "lamp1 offline on A after B was cut off", 3*gateway.HubTTL, func() bool { return !online() })
	if d > gateway.HubTTL+2*gateway.Heartbeat {
		t.Errorf("presence expired after %v, want at most HubTTL + 2 heartbeats (%v)", d, gateway.HubTTL+2*gateway.Heartbeat)
	}
	if s, body := httpAsBody(t, http.MethodPost, baseA+"/api/v1/devices/lamp1/commands/toggle?timeout=2s", "admin", "adminpw", ""); s != http.StatusServiceUnavailable {
		t.Fatalf("command to the device of a dead hub: %d %s, want 503", s, body)
	}
	if !dev.c.IsConnectionOpen() {
		t.Fatal("B dropped its local client when cut off from NATS")
	}

	proxy.Heal()
	within(t, "lamp1 online on A again once B is back", 15*time.Second, online)
	if s, body := httpAsBody(t, http.MethodPost, baseA+"/api/v1/devices/lamp1/commands/toggle?timeout=5s", "admin", "adminpw", `{"on":true}`); s != http.StatusOK {
		t.Fatalf("command once B is back: %d %s", s, body)
	}

	// A restarts: a device online on B stays online, on A and on B.
	a.Close(t)
	a2 := hubtest.StartConfig(t, a.Config)
	baseA2, baseB := "http://"+a2.Addr(t, "rest"), "http://"+b.Addr(t, "rest")
	eventually(t, "lamp1 online on A after its restart", func() bool {
		_, body := httpAsBody(t, http.MethodGet, baseA2+"/api/v1/devices/lamp1", "admin", "adminpw", "")
		return strings.Contains(body, `"online":true`)
	})
	if _, body := httpAsBody(t, http.MethodGet, baseB+"/api/v1/devices/lamp1", "admin", "adminpw", ""); !strings.Contains(body, `"online":true`) {
		t.Fatalf("lamp1 on B after A restarted: %s", body)
	}
	if s, body := httpAsBody(t, http.MethodPost, baseA2+"/api/v1/devices/lamp1/commands/toggle?timeout=5s", "admin", "adminpw", `{"on":false}`); s != http.StatusOK {
		t.Fatalf("command from the restarted A: %d %s", s, body)
	}
}

package xmpp

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startProsody runs Debian's prosody with a component port; the test is
// skipped where prosody is not installed.
func startProsody(t *testing.T, secret string) (c2s, comp int) {
	t.Helper()
	bin, err := exec.LookPath("prosody")
	if err != nil {
		t.Skip("prosody is not installed")
	}
	ctl, err := exec.LookPath("prosodyctl")
	if err != nil {
		t.Skip("prosodyctl is not installed")
	}
	dir := t.TempDir()
	c2s, comp = freePort(t), freePort(t)
	cfg := filepath.Join(dir, "prosody.cfg.lua")
	conf := fmt.Sprintf(`pidfile = %q
data_path = %q
run_as_root = true
log = { { levels = { min = "warn" }, to = "file", filename = %q } }
interfaces = { "127.0.0.1" }
c2s_ports = { %d }
s2s_ports = { }
component_ports = { %d }
component_interface = "127.0.0.1"
http_ports = { }
https_ports = { }
modules_enabled = { "roster"; "saslauth"; "disco"; "ping"; "posix" }
modules_disabled = { "s2s"; "tls" }
authentication = "internal_hashed"
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
VirtualHost "localhost"
Component "hubtopics.localhost"
    component_secret = %q
`, filepath.Join(dir, "pid"), dir, filepath.Join(dir, "log"), c2s, comp, secret)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(ctl, "--config", cfg, "register", "carol", "localhost", "carolpw").CombinedOutput(); err != nil {
		t.Skipf("prosodyctl register: %v: %s", err, out)
	}
	cmd := exec.Command(bin, "--config", cfg, "-F")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start prosody: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", comp))
		if err == nil {
			_ = c.Close()
			return c2s, comp
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "log"))
			t.Fatalf("prosody did not start: %s", log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// prosodyLogin logs carol in to Prosody by hand (PLAIN without TLS is
// allowed there) and binds a resource.
func prosodyLogin(t *testing.T, c2s int) *smClient {
	t.Helper()
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", c2s))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	c := &smClient{conn: conn}
	open := func() {
		c.write(t, testHeader)
		c.r = newStanzaReader(conn, DefaultMaxStanza, DefaultMaxDepth, nil)
		if _, err := c.r.header(); err != nil {
			t.Fatalf("prosody stream: %v", err)
		}
		c.until(t, "features", func(el *element) bool { return el.Name.Local == "features" })
	}
	open()
	c.write(t, `<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>`+base64.StdEncoding.EncodeToString([]byte("\x00carol\x00carolpw"))+`</auth>`)
	if el := c.next(t); el.Name.Local != "success" {
		t.Fatalf("prosody login: %s", el)
	}
	open()
	c.write(t, `<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>`)
	c.until(t, "bound", func(el *element) bool { return el.AttrValue("id") == "b" })
	return c
}

// startComponentHub starts a hub connected as a component to the Prosody
// at comp, with peers under policy, and waits until it is connected.
func startComponentHub(t *testing.T, comp int, policy string) *testHub {
	t.Helper()
	h := startHub(t, func(c *Config) {
		c.Addr = ""
		c.ComponentAddr = fmt.Sprintf("127.0.0.1:%d", comp)
		c.ComponentDomain = "hubtopics.localhost"
		c.ComponentSecret = "compsecret"
		if err := c.Auth.SetPeerPolicy(policy); err != nil {
			t.Fatal(err)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for h.a.Healthy() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("component not connected: %v", h.a.Healthy())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return h
}

// TestComponentPeerPolicy: users of the server the hub is a component of
// are refused by default (xmpp.component_peers: deny), and with read may
// subscribe to a topic JID but not publish to it.
func TestComponentPeerPolicy(t *testing.T) {
	for _, policy := range []string{adapters.PeerDeny, adapters.PeerRead} {
		t.Run(policy, func(t *testing.T) {
			c2s, comp := startProsody(t, "compsecret")
			h := startComponentHub(t, comp, policy)
			c := prosodyLogin(t, c2s)
			c.write(t, `<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>`)
			c.until(t, "roster", func(el *element) bool { return el.AttrValue("id") == "r" })
			topicJID := "tank.level@hubtopics.localhost"
			c.write(t, `<presence/><presence to='`+topicJID+`' type='subscribe'/>`)
			answer := c.until(t, "an answer to the subscription", func(el *element) bool {
				return el.Name.Local == "presence" && el.AttrValue("from") == topicJID && el.AttrValue("type") != ""
			})
			switch typ := answer.AttrValue("type"); {
			case policy == adapters.PeerDeny && typ == "subscribed":
				t.Fatalf("deny: subscription granted: %s", answer)
			case policy == adapters.PeerRead && typ != "subscribed":
				t.Fatalf("read: subscription refused: %s", answer)
			}
			got := make(chan *broker.Envelope, 1)
			sub, err := h.bus.Subscribe(context.Background(), broker.SubscribeOptions{Filters: []string{"tank/valve"}}, func(_ context.Context, e *broker.Envelope) error {
				got <- e
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Unsubscribe()
			c.write(t, `<message to='tank.valve@hubtopics.localhost' type='chat' id='m1'><body>open</body></message>`)
			c.until(t, "the publish refused", func(el *element) bool {
				return el.Name.Local == "message" && el.AttrValue("type") == "error" && el.AttrValue("from") == "tank.valve@hubtopics.localhost"
			})
			select {
			case e := <-got:
				t.Fatalf("%s: a peer's publish reached the bus: %+v", policy, e)
			default:
			}
		})
	}
}

// TestComponentWithProsody connects the hub as an XEP-0114 component to a
// real Prosody; a Prosody user subscribes to a topic JID at the component
// domain, receives a bus publish and publishes with a chat message.
func TestComponentWithProsody(t *testing.T) {
	c2s, comp := startProsody(t, "compsecret")
	h := startComponentHub(t, comp, adapters.PeerUser)
	c := prosodyLogin(t, c2s)
	topicJID := "tank.level@hubtopics.localhost"
	// Prosody sends subscription answers to resources that fetched the roster.
	c.write(t, `<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>`)
	c.until(t, "roster", func(el *element) bool { return el.AttrValue("id") == "r" })
	c.write(t, `<presence/><presence to='`+topicJID+`' type='subscribe'/>`)
	c.until(t, "subscribed", func(el *element) bool {
		return el.AttrValue("type") == "subscribed" && el.AttrValue("from") == topicJID
	})
	if err := h.bus.Publish(context.Background(), &broker.Envelope{Topic: "tank/level", Payload: []byte("75%"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	c.until(t, "value through prosody", bodyIs(topicJID, "75%"))

	got := make(chan *broker.Envelope, 1)
	sub, err := h.bus.Subscribe(context.Background(), broker.SubscribeOptions{Filters: []string{"tank/valve"}}, func(_ context.Context, e *broker.Envelope) error {
		got <- e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	c.write(t, `<message to='tank.valve@hubtopics.localhost' type='chat'><body>close</body></message>`)
	select {
	case e := <-got:
		if string(e.Payload) != "close" || !strings.HasPrefix(e.Origin.ClientID, "carol@localhost/") || e.Origin.Protocol != "xmpp" {
			t.Errorf("envelope %+v", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("chat through prosody did not reach the bus")
	}
}

package crashtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hubsmith/hub/mqttwire"
)

// Greedy-user figures (issue 13): one user opens greedyConns MQTT
// connections and asks each for greedyFilters filters. Without limits the
// hub takes them all; with the defaults' kind of bounds (here smaller, to
// keep the test short) it holds max_connections_per_user of them with
// max_subscriptions_per_client filters each, and stays under
// greedyRSSBound while other users are served.
const (
	greedyConns   = 200
	greedyFilters = 250
	// greedyRSSBound is the hub's RSS bound with the limits below, in KiB.
	greedyRSSBound = 64 << 10
)

// greedyLimits is the limits: section of the limited run.
const greedyLimits = "limits:\n  max_connections_per_user: 20\n  max_subscriptions_per_client: 50\n"

// noLimits is the limits: section of the run without limits.
const noLimits = "limits:\n  max_connections: -1\n  max_connections_per_address: -1\n  max_connections_per_user: -1\n  max_subscriptions_per_client: -1\n"

// TestGreedyUserLimits runs the hub binary twice, without limits and with
// them, against one user's many connections and subscriptions, and
// reports RSS before and after; with the limits the refusals are the
// protocol's (CONNACK 3, SUBACK 0x80 in 3.1.1), RSS stays under the bound
// and another user is served over MQTT, REST and XMPP.
func TestGreedyUserLimits(t *testing.T) {
	if testing.Short() {
		t.Skip("opens hundreds of connections")
	}
	type result struct {
		held, granted, refusedConns, refusedSubs int
		before, after                            int // RSS KiB
		xmppRefused                              string
	}
	run := func(t *testing.T, section string) result {
		cfg := filepath.Join(t.TempDir(), "hub.yaml")
		if err := os.WriteFile(cfg, []byte(section), 0o600); err != nil {
			t.Fatal(err)
		}
		h := newHub(t, "", "--config", cfg)
		h.start()
		var r result
		r.before = h.rssKB()
		var conns []*rawMQTT
		defer func() {
			for _, c := range conns {
				c.close()
			}
		}()
		deadline := time.Now().Add(90 * time.Second)
		for i := 0; i < greedyConns && time.Now().Before(deadline); i++ {
			c, code, err := rawConnectAs(h.mqtt, fmt.Sprintf("greedy%d", i), "alice", "alicepw")
			if err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
			if code != 0 {
				if code != 0x03 {
					t.Errorf("connection %d refused with 0x%02x, want 0x03", i, code)
				}
				r.refusedConns++
				continue
			}
			conns = append(conns, c)
			codes, err := c.subscribeMany(i, greedyFilters)
			if err != nil {
				t.Fatalf("subscribe on connection %d: %v", i, err)
			}
			for _, b := range codes {
				if b < 0x80 {
					r.granted++
				} else {
					r.refusedSubs++
				}
			}
		}
		r.held = len(conns)
		r.after = h.rssKB()
		// The per-user bound counts every protocol: alice's XMPP login
		// now is one connection too many in the limited run.
		xctx, xcancel := context.WithTimeout(context.Background(), ackTimeout)
		xs, xerr := xmppLogin(xctx, h, "alice", "alicepw")
		xcancel()
		if xerr == nil {
			_ = xs.Close()
			_ = xs.Conn().Close()
		} else {
			r.xmppRefused = xerr.Error()
		}
		// Another user is served meanwhile, over every protocol.
		sub := dialMQTTSub(t, h, "other-user", true)
		sub.subscribe(t, "other/x", 1)
		x := dialXMPPSub(t, h, "admin", "adminpw")
		x.subscribeTopic(t, "other/x")
		if code, err := restPublish(h, "other/x", 1, "served"); err != nil || code != 200 {
			t.Fatalf("other user's REST publish: %d %v", code, err)
		}
		for name, ch := range map[string]chan string{"MQTT": sub.msgs, "XMPP": x.msgs} {
			select {
			case m := <-ch:
				if m != "served" {
					t.Errorf("%s: got %q", name, m)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("%s: the other user's message did not arrive", name)
			}
		}
		return r
	}
	var without, with result
	t.Run("without limits", func(t *testing.T) { without = run(t, noLimits) })
	t.Run("with limits", func(t *testing.T) { with = run(t, greedyLimits) })
	t.Logf("without limits: %d connections held, %d subscriptions granted; RSS %d -> %d KiB",
		without.held, without.granted, without.before, without.after)
	t.Logf("with limits: %d connections held (%d refused), %d subscriptions granted (%d refused); RSS %d -> %d KiB (bound %d)",
		with.held, with.refusedConns, with.granted, with.refusedSubs, with.before, with.after, greedyRSSBound)
	if with.held != 20 || with.refusedConns != greedyConns-20 {
		t.Errorf("with limits: %d held, %d refused; want 20 and %d", with.held, with.refusedConns, greedyConns-20)
	}
	if with.granted != 20*50 || with.refusedSubs != 20*(greedyFilters-50) {
		t.Errorf("with limits: %d filters granted, %d refused; want %d and %d", with.granted, with.refusedSubs, 20*50, 20*(greedyFilters-50))
	}
	if without.xmppRefused != "" || !strings.Contains(with.xmppRefused, "policy-violation") {
		t.Errorf("alice's XMPP login: without limits %q, with them %q (want policy-violation)", without.xmppRefused, with.xmppRefused)
	}
	if with.after > greedyRSSBound {
		t.Errorf("with limits: RSS %d KiB over the bound %d", with.after, greedyRSSBound)
	}
	if without.held != greedyConns && !t.Failed() {
		t.Logf("without limits only %d connections were held (the 90 s bound)", without.held)
	}
}

// rawConnectAs connects with MQTT 3.1.1 as user (clean session) and
// returns the CONNACK code; the connection is closed unless it is 0.
func rawConnectAs(addr, id, user, pass string) (*rawMQTT, byte, error) {
	return rawConnectSpec(addr, mqttwire.ConnectSpec{Version: mqttwire.V311, ClientID: id, Username: user, Password: pass, Clean: true})
}

// subscribeMany subscribes to n distinct filters in one SUBSCRIBE and
// returns the SUBACK codes.
func (c *rawMQTT) subscribeMany(conn, n int) ([]byte, error) {
	filters := make([]string, n)
	for i := range filters {
		filters[i] = fmt.Sprintf("greedy/%d/%d/+", conn, i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dl, _ := ctx.Deadline()
	_ = c.conn.SetDeadline(dl)
	defer func() { _ = c.conn.SetDeadline(time.Time{}) }()
	if _, err := c.conn.Write(mqttwire.AppendSubscribe(nil, c.version, 1, 0, filters...)); err != nil {
		return nil, err
	}
	for {
		p, err := c.read()
		if err != nil {
			return nil, err
		}
		if p.Type == mqttwire.Suback {
			_, codes, err := mqttwire.ParseSuback(p, c.version)
			return codes, err
		}
	}
}

// TestSIGHUPLimits: the hub binary, sent SIGHUP after its configuration
// file raised a limit, lets in the connection it refused, and one that
// lowers it drops nobody connected.
func TestSIGHUPLimits(t *testing.T) {
	cfgPath := filepath.Join(t.TempDir(), "hub.yaml")
	write := func(body string) {
		t.Helper()
		if err := os.WriteFile(cfgPath, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("limits:\n  max_connections_per_user: 2\n")
	h := newHub(t, "", "--config", cfgPath, "--log-level", "info")
	h.start()
	connect := func(id string) (*rawMQTT, byte) {
		t.Helper()
		c, code, err := rawConnectAs(h.mqtt, id, "alice", "alicepw")
		if err != nil {
			t.Fatal(err)
		}
		if c != nil {
			t.Cleanup(c.close)
		}
		return c, code
	}
	held := []*rawMQTT{}
	for _, id := range []string{"a1", "a2"} {
		c, code := connect(id)
		if code != 0 {
			t.Fatalf("%s: 0x%02x", id, code)
		}
		held = append(held, c)
	}
	if _, code := connect("a3"); code != 0x03 {
		t.Fatalf("third connection: 0x%02x, want 0x03", code)
	}
	hangup := func(n int) {
		t.Helper()
		if err := syscall.Kill(h.pid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		for end := time.Now().Add(15 * time.Second); strings.Count(h.logTail(), "reload: limits") < n; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("no reload of the limits in the log:\n%s", h.logTail())
			}
		}
	}
	write("limits:\n  max_connections_per_user: 3\n")
	hangup(1)
	c3, code := connect("a3")
	if code != 0 {
		t.Fatalf("after raising the bound: 0x%02x", code)
	}
	held = append(held, c3)
	write("limits:\n  max_connections_per_user: 1\n")
	hangup(2)
	for i, c := range held {
		if code, err := c.publish1("alice/x", "still", 1); err != nil || code != 0 {
			t.Errorf("held connection %d after lowering the bound: %v", i, err)
		}
	}
	if _, code := connect("a4"); code != 0x03 {
		t.Errorf("a new connection after lowering the bound: 0x%02x, want 0x03", code)
	}
}

package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	piondtls "github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/options"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker/natsbus"
	"github.com/hubsmith/hub/gateway"
	"github.com/hubsmith/hub/hubtest"
)

// natsServer starts one NATS server with JetStream on a loopback port,
// stopped after the hubs of the test (its cleanup is registered first).
func natsServer(t testing.TB) *server.Server {
	t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true,
		StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() }) // after the hubs stop
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server did not start")
	}
	return srv
}

// twoHubs starts hubs a and b on one NATS server, with the user bob
// added on a and known on both (the principal records are shared).
func twoHubs(t testing.TB) (*hubtest.Hub, *hubtest.Hub) {
	t.Helper()
	srv := natsServer(t)
	var hubs []*hubtest.Hub
	for _, name := range []string{"a", "b"} {
		hubs = append(hubs, hubtest.Start(t, func(c *gateway.Config) { c.Node = name; c.NATS.URL = srv.ClientURL() }))
	}
	addUserEverywhere(t, "bob", "bobpw", hubs...)
	return hubs[0], hubs[1]
}

// addUserEverywhere adds a user on the first hub and waits until every
// other hub of the cluster has its record.
func addUserEverywhere(t testing.TB, name, password string, hubs ...*hubtest.Hub) {
	t.Helper()
	ctx := context.Background()
	if err := hubs[0].Store.AddUser(ctx, name, password, adapters.RoleUser); err != nil {
		t.Fatal(err)
	}
	for _, h := range hubs[1:] {
		for end := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if _, err := h.Store.GetUser(ctx, name); err == nil {
				break
			}
			if time.Now().After(end) {
				t.Fatalf("user %q added on one hub is not known on another after 10 s", name)
			}
		}
	}
}

func presenceOf(from, typ string) func(stanza) bool {
	return func(v stanza) bool {
		return v.XMLName.Local == "presence" && v.Type == typ && (v.From == from || strings.HasPrefix(v.From, from+"/"))
	}
}

// chatBody matches a chat message with a body.
func chatBody(body string) func(stanza) bool {
	return func(v stanza) bool { return v.XMLName.Local == "message" && v.Body == body }
}

// arrives reports whether c receives a stanza match accepts within d,
// skipping others.
func (c *xmppClient) arrives(d time.Duration, match func(stanza) bool) bool {
	deadline := time.After(d)
	for {
		select {
		case v := <-c.in:
			if match(v) {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

// noMore fails if c receives a stanza match accepts within d.
func (c *xmppClient) noMore(t *testing.T, d time.Duration, match func(stanza) bool) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case v := <-c.in:
			if match(v) {
				t.Fatalf("xmpp: unexpected %+v", v)
			}
		case <-deadline:
			return
		}
	}
}

// befriend makes alice and bob subscribe to each other's presence (RFC
// 6121 3) and waits until each saw the other available.
func befriend(t *testing.T, alice, bob *xmppClient) {
	t.Helper()
	alice.send(t, `<presence type='subscribe' to='bob@localhost'/>`)
	bob.expect(t, "alice's subscription request", presenceOf("alice@localhost", "subscribe"))
	bob.send(t, `<presence type='subscribed' to='alice@localhost'/>`)
	alice.expect(t, "bob's approval", presenceOf("bob@localhost", "subscribed"))
	alice.expect(t, "bob's presence after the approval", presenceOf("bob@localhost", ""))
	bob.send(t, `<presence type='subscribe' to='alice@localhost'/>`)
	alice.expect(t, "bob's subscription request", presenceOf("bob@localhost", "subscribe"))
	alice.send(t, `<presence type='subscribed' to='bob@localhost'/>`)
	bob.expect(t, "alice's approval", presenceOf("alice@localhost", "subscribed"))
	bob.expect(t, "alice's presence after the approval", presenceOf("alice@localhost", ""))
}

// TestXMPPChatAcrossHubs: alice on hub A and bob on hub B subscribe to
// each other's presence, chat both ways (bare and full JID), see each
// other come and go; IQs reach a full JID on the other hub; a message for
// bob while he is on no hub is kept once and delivered when he logs in
// again; his roster is the same on either hub and a change made on one is
// pushed to his resource on the other.
func TestXMPPChatAcrossHubs(t *testing.T) {
	a, b := twoHubs(t)
	alice := dialXMPP(t, a.Addr(t, "xmpp"), "alice", "alicepw")
	bob := dialXMPPAnswering(t, b.Addr(t, "xmpp"), "bob", "bobpw", func(v stanza) string {
		return `<iq type='result' id='` + v.ID + `' to='` + v.From + `'><query xmlns='jabber:iq:version'><name>bob's client</name></query></iq>`
	})
	bob.send(t, `<presence/>`)
	befriend(t, alice, bob)

	alice.send(t, `<message type='chat' to='bob@localhost'><body>hi bob</body></message>`)
	m := bob.expect(t, "alice's chat on B", chatBody("hi bob"))
	if !strings.HasPrefix(m.From, "alice@localhost/") {
		t.Fatalf("from = %q, want alice's full JID", m.From)
	}
	bob.send(t, `<message type='chat' to='`+m.From+`'><body>hi alice</body></message>`)
	r := alice.expect(t, "bob's answer on A", chatBody("hi alice"))
	if !strings.HasPrefix(r.From, "bob@localhost/") {
		t.Fatalf("from = %q, want bob's full JID", r.From)
	}
	// A full JID no hub has: a chat message goes to the bare JID (RFC
	// 6121 8.5.3.2.1), here bob on B.
	alice.send(t, `<message type='chat' to='bob@localhost/nowhere'><body>to a gone resource</body></message>`)
	bob.expect(t, "a message for a resource no hub has", chatBody("to a gone resource"))

	// Presence broadcasts: bob changes his, then leaves.
	bob.send(t, `<presence><show>away</show></presence>`)
	alice.expect(t, "bob away", func(v stanza) bool {
		return presenceOf("bob@localhost", "")(v) &&
			slices.ContainsFunc(v.Children, func(n xmlNode) bool { return n.XMLName.Local == "show" && n.Text == "away" })
	})

	// IQs to a full JID on another hub are relayed, the answer too; one
	// to a full JID no hub has is answered by the server.
	alice.send(t, `<iq type='get' id='v1' to='`+r.From+`'><query xmlns='jabber:iq:version'/></iq>`)
	if v := alice.expect(t, "bob's answer to an iq", func(v stanza) bool { return v.XMLName.Local == "iq" && v.ID == "v1" }); v.From != r.From || v.Type != "result" {
		t.Fatalf("answer to the iq: %+v", v)
	}
	alice.send(t, `<iq type='get' id='v2' to='bob@localhost/nowhere'><query xmlns='jabber:iq:version'/></iq>`)
	if v := alice.expect(t, "the server's answer", func(v stanza) bool { return v.XMLName.Local == "iq" && v.ID == "v2" }); v.Type != "error" ||
		!slices.ContainsFunc(v.Children, func(n xmlNode) bool {
			return n.XMLName.Local == "error" && len(n.Children) > 0 && n.Children[0].XMLName.Local == "service-unavailable"
		}) {
		t.Fatalf("iq to a full JID no hub has: %+v", v)
	}
	_ = bob.s.Close()
	<-bob.done
	alice.expect(t, "bob unavailable", presenceOf("bob@localhost", "unavailable"))

	// Offline: kept once (by A), delivered once when bob logs in on B.
	alice.send(t, `<message type='chat' to='bob@localhost'><body>while you were away</body></message>`)
	bob2 := dialXMPP(t, b.Addr(t, "xmpp"), "bob", "bobpw")
	bob2.expect(t, "the offline message on B", chatBody("while you were away"))
	bob2.noMore(t, 300*time.Millisecond, chatBody("while you were away"))
	alice.expect(t, "bob back", presenceOf("bob@localhost", ""))

	// The same roster on A as on B.
	bob3 := dialXMPPSilent(t, a.Addr(t, "xmpp"), "bob", "bobpw")
	bob3.send(t, `<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>`)
	roster := bob3.expect(t, "bob's roster on A", func(v stanza) bool { return v.XMLName.Local == "iq" && v.ID == "r1" })
	if roster.Type != "result" || len(roster.Children) != 1 || !slices.ContainsFunc(roster.Children[0].Children, func(n xmlNode) bool {
		return attr(n, "jid") == "alice@localhost" && attr(n, "subscription") == "both"
	}) {
		t.Fatalf("bob's roster on A: %+v", roster)
	}
	// A roster change made on B is pushed to bob's resource on A.
	bob2.send(t, `<iq type='set' id='r2'><query xmlns='jabber:iq:roster'><item jid='alice@localhost' name='Alice'/></query></iq>`)
	bob3.expect(t, "the roster push on A", func(v stanza) bool {
		return v.XMLName.Local == "iq" && v.Type == "set" && len(v.Children) == 1 && slices.ContainsFunc(v.Children[0].Children, func(n xmlNode) bool {
			return attr(n, "jid") == "alice@localhost" && attr(n, "name") == "Alice" && attr(n, "subscription") == "both"
		})
	})
}

// TestXMPPTopicSubscriptionAcrossHubs: a topic subscription made on A is
// resumed on B with what was published meanwhile, in order, once.
func TestXMPPTopicSubscriptionAcrossHubs(t *testing.T) {
	a, b := twoHubs(t)
	alice := dialXMPP(t, a.Addr(t, "xmpp"), "alice", "alicepw")
	alice.subscribeTopic(t, "garden.soil@topics.localhost")
	_ = alice.s.Close()
	<-alice.done
	eventually(t, "the subscription detached on A", func() bool {
		return !a.Bus.(*natsbus.Bus).Attached("xmpp:alice:garden/soil")
	})
	restA := "http://" + a.Addr(t, "rest") + "/api/v1/topics/garden/soil?qos=1"
	for i := range 3 {
		if code, body, _ := httpDo(t, http.MethodPost, restA, "text/plain", fmt.Sprint("moist", i)); code/100 != 2 {
			t.Fatalf("publish on A: %d %s", code, body)
		}
	}
	back := dialXMPP(t, b.Addr(t, "xmpp"), "alice", "alicepw")
	for i := range 3 {
		back.expect(t, fmt.Sprint("queued reading ", i, " on B"), chatBody(fmt.Sprint("moist", i)))
	}
	back.noMore(t, 300*time.Millisecond, messageFrom("garden.soil@topics.localhost"))
	// Live, too.
	if code, body, _ := httpDo(t, http.MethodPost, restA, "text/plain", "wet"); code/100 != 2 {
		t.Fatalf("publish on A: %d %s", code, body)
	}
	back.expect(t, "a live reading on B", chatBody("wet"))
}

// TestDeviceCommandsAcrossHubsCoAPAndXMPP: REST commands on hub A reach a
// CoAP device (observing its command topic over DTLS) and an XMPP device
// (XEP-0050) connected to hub B, and their answers come back.
func TestDeviceCommandsAcrossHubsCoAPAndXMPP(t *testing.T) {
	srv := natsServer(t)
	var hubs []*hubtest.Hub
	for _, name := range []string{"a", "b"} {
		h := hubtest.Start(t, func(c *gateway.Config) {
			c.Node = name
			c.NATS.URL = srv.ClientURL()
			c.CoAP.DTLSAddr = "127.0.0.1:0"
		})
		hubs = append(hubs, h)
	}
	a, b := hubs[0], hubs[1]
	// Registered on A only: the device records are shared.
	for _, d := range []string{
		`{"id":"therm1","protocol":"coap","psk":"746865726d6b6579"}`,
		`{"id":"valve1","protocol":"xmpp","password":"valvepw"}`,
	} {
		if s, body := httpAsBody(t, http.MethodPost, "http://"+a.Addr(t, "rest")+"/api/v1/devices", "admin", "adminpw", d); s != http.StatusCreated {
			t.Fatalf("add device on a: %d %s", s, body)
		}
	}
	for _, id := range []string{"therm1", "valve1"} {
		for end := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if _, err := b.Store.GetDevice(context.Background(), id); err == nil {
				break
			}
			if time.Now().After(end) {
				t.Fatalf("device %s added on a is not known on b after 10 s", id)
			}
		}
	}
	baseA := "http://" + a.Addr(t, "rest")
	cmd := func(device string) (int, string) {
		return httpAsBody(t, http.MethodPost, baseA+"/api/v1/devices/"+device+"/commands/set?timeout=5s", "admin", "adminpw", `{"level":3}`)
	}
	for _, d := range []string{"therm1", "valve1"} {
		if s, body := cmd(d); s != http.StatusServiceUnavailable {
			t.Fatalf("command to %s online nowhere: %d %s, want 503", d, s, body)
		}
	}

	// The CoAP device on B observes its commands and answers each.
	cc, err := dtls.Dial(b.Addr(t, "coap.coaps"), dtls.NewDTLSClientOptions(
		piondtls.WithPSK(func([]byte) ([]byte, error) { return []byte("thermkey"), nil }),
		piondtls.WithPSKIdentityHint([]byte("therm1")),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8),
	), options.WithErrors(func(error) {}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close(); <-cc.Done() })
	reqs := make(chan string, 8)
	obs, err := cc.Observe(ctx(t), "/ps/devices/therm1/commands/+", observeInto(reqs))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = obs.Cancel(ctx(t)) }()
	go func() {
		for body := range reqs {
			var req struct{ ID string }
			if json.Unmarshal([]byte(body), &req) != nil || req.ID == "" {
				continue
			}
			id := req.ID
			rctx, cancel := context.WithTimeout(context.Background(), wait)
			resp, err := cc.Post(rctx, "/ps/devices/therm1/responses/"+id, message.AppJSON, strings.NewReader(`{"coap":"done"}`))
			cancel()
			if err != nil || resp.Code() != codes.Changed {
				t.Logf("CoAP device reply: %v %v", err, resp)
			}
		}
	}()
	// A POST makes the DTLS device online (its presence reaches A).
	if resp, err := cc.Post(ctx(t), "/ps/devices/therm1/temp", message.TextPlain, strings.NewReader("20")); err != nil || resp.Code() != codes.Changed {
		t.Fatalf("CoAP device POST: %v %v", err, resp)
	}

	// The XMPP device on B answers ad-hoc commands.
	valve := dialXMPPAnswering(t, b.Addr(t, "xmpp"), "valve1", "valvepw", func(v stanza) string {
		return `<iq type='result' id='` + v.ID + `' to='` + v.From + `'><command xmlns='http://jabber.org/protocol/commands' node='set' status='completed' sessionid='s1'><x xmlns='jabber:x:data' type='result'><field var='result'><value>{"xmpp":"done"}</value></field></x></command></iq>`
	})
	valve.send(t, `<presence/>`)

	for _, tc := range []struct{ device, want string }{{"therm1", `"coap":"done"`}, {"valve1", `"xmpp":"done"`}} {
		eventually(t, tc.device+" online on A", func() bool {
			_, body := httpAsBody(t, http.MethodGet, baseA+"/api/v1/devices/"+tc.device, "admin", "adminpw", "")
			return strings.Contains(body, `"online":true`)
		})
		s, body := cmd(tc.device)
		if s != http.StatusOK || !strings.Contains(body, tc.want) {
			t.Fatalf("command on A to %s on B: %d %s", tc.device, s, body)
		}
	}
}

// TestXMPPChatLatencyFigures measures chat latency (send on alice's
// connection to receipt on bob's, one message at a time) for 200
// messages, with both users on one hub and with alice on A and bob on B,
// and logs median and p99 (figures for the README; nothing is asserted
// about time). HUB_FIGURES=1 adds hubs on two nodes of an embedded
// three-node cluster.
func TestXMPPChatLatencyFigures(t *testing.T) {
	if testing.Short() {
		t.Skip("figures")
	}
	a, b := twoHubs(t)
	const n = 200
	cases := []struct {
		name     string
		aliceHub *hubtest.Hub
		bobHub   *hubtest.Hub
	}{{"one hub", a, a}, {"across hubs on one NATS server", a, b}}
	if os.Getenv("HUB_FIGURES") != "" {
		// Hubs on different nodes of an embedded three-node cluster: the
		// NATS route between the nodes is on the path.
		hubs := startCluster(t, clusterConfigs(t))
		addUserEverywhere(t, "bob", "bobpw", hubs[:2]...)
		cases = append(cases, struct {
			name             string
			aliceHub, bobHub *hubtest.Hub
		}{"across an embedded three-node cluster", hubs[0], hubs[1]})
	}
	for _, tc := range cases {
		alice := dialXMPP(t, tc.aliceHub.Addr(t, "xmpp"), "alice", "alicepw")
		bob := dialXMPP(t, tc.bobHub.Addr(t, "xmpp"), "bob", "bobpw")
		// Warm up: the first message also waits for bob's interest.
		eventually(t, "bob reachable "+tc.name, func() bool {
			alice.send(t, `<message type='chat' to='bob@localhost'><body>warm</body></message>`)
			select {
			case <-bob.in:
				return true
			case <-time.After(200 * time.Millisecond):
				return false
			}
		})
		for len(bob.in) > 0 {
			<-bob.in
		}
		lat := make([]time.Duration, 0, n)
		for i := range n {
			body := fmt.Sprint("m", i)
			start := time.Now()
			alice.send(t, `<message type='chat' to='bob@localhost'><body>`+body+`</body></message>`)
			bob.expect(t, "message "+body, chatBody(body))
			lat = append(lat, time.Since(start))
		}
		slices.Sort(lat)
		t.Logf("%s: %d messages, median %v, p99 %v, max %v", tc.name, n, lat[n/2], lat[n*99/100], lat[n-1])
		_ = alice.s.Close()
		_ = bob.s.Close()
		<-alice.done
		<-bob.done
	}
}

// TestXMPPOfflineOnceAcrossHubs: messages kept for bob while he is on no
// hub reach him once each when he comes online on A and B at once (each
// is claimed by one hub), in order on the session that takes them.
func TestXMPPOfflineOnceAcrossHubs(t *testing.T) {
	a, b := twoHubs(t)
	alice := dialXMPP(t, a.Addr(t, "xmpp"), "alice", "alicepw")
	const n = 20
	for i := range n {
		alice.send(t, fmt.Sprintf(`<message type='chat' to='bob@localhost'><body>away %d</body></message>`, i))
	}
	// A's answer to an iq sent after them: A routed (kept) them all.
	alice.send(t, `<iq type='get' id='sync' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`)
	alice.expect(t, "the ping's answer", func(v stanza) bool { return v.XMLName.Local == "iq" && v.ID == "sync" })
	onA := dialXMPPSilent(t, a.Addr(t, "xmpp"), "bob", "bobpw")
	onB := dialXMPPSilent(t, b.Addr(t, "xmpp"), "bob", "bobpw")
	onA.send(t, `<presence/>`)
	onB.send(t, `<presence/>`)
	got := map[string]int{}
	last := map[*xmppClient]int{onA: -1, onB: -1}
	deadline := time.After(wait)
	for total := 0; total < n; {
		var v stanza
		var c *xmppClient
		select {
		case v = <-onA.in:
			c = onA
		case v = <-onB.in:
			c = onB
		case <-deadline:
			t.Fatalf("%d of %d offline messages arrived: %v", total, n, got)
		}
		var i int
		if v.XMLName.Local != "message" || !strings.HasPrefix(v.Body, "away ") {
			continue
		}
		if _, err := fmt.Sscanf(v.Body, "away %d", &i); err != nil {
			t.Fatalf("body %q", v.Body)
		}
		if i <= last[c] {
			t.Fatalf("offline message %d after %d on one session", i, last[c])
		}
		last[c] = i
		got[v.Body]++
		total++
	}
	for _, c := range []*xmppClient{onA, onB} {
		c.noMore(t, 300*time.Millisecond, func(v stanza) bool { return strings.HasPrefix(v.Body, "away ") })
	}
	for body, k := range got {
		if k != 1 {
			t.Errorf("%q arrived %d times", body, k)
		}
	}
	t.Logf("offline messages taken by the two sessions: %d, %d (last index seen)", last[onA], last[onB])
}

// TestXMPPHubCutOffFromNATS: when NATS goes away, the users of a hub stay
// connected and chat with each other; a message that would have to be
// kept offline is refused with resource-constraint (the KV is out of
// reach), not lost silently.
func TestXMPPHubCutOffFromNATS(t *testing.T) {
	srv := natsServer(t)
	a := hubtest.Start(t, func(c *gateway.Config) { c.Node = "a"; c.NATS.URL = srv.ClientURL() })
	if err := a.Store.AddUser(context.Background(), "bob", "bobpw", adapters.RoleUser); err != nil {
		t.Fatal(err)
	}
	alice := dialXMPP(t, a.Addr(t, "xmpp"), "alice", "alicepw")
	bob := dialXMPP(t, a.Addr(t, "xmpp"), "bob", "bobpw")
	srv.Shutdown()
	srv.WaitForShutdown()

	alice.send(t, `<message type='chat' to='bob@localhost'><body>still here</body></message>`)
	bob.expect(t, "a chat between two users of the cut-off hub", chatBody("still here"))
	alice.send(t, `<message type='chat' id='off1' to='admin@localhost'><body>for later</body></message>`)
	alice.expect(t, "the refusal of an offline message", func(v stanza) bool {
		return v.XMLName.Local == "message" && v.Type == "error" && v.ID == "off1" &&
			slices.ContainsFunc(v.Children, func(n xmlNode) bool {
				return n.XMLName.Local == "error" && attr(n, "type") == "wait" && len(n.Children) > 0 && n.Children[0].XMLName.Local == "resource-constraint"
			})
	})
}

// TestXMPPUserOfDeadHubGoesUnavailable: a hub that vanishes (here a bare
// NATS client speaking the hubs' frames: it sends alice the presence of
// bob@localhost/ghost, answers for that JID, then drops its connection
// without a word) sends no unavailable presence; alice's hub notices that
// nobody holds the JID any more and sends it in its stead, and not while
// the JID is still held.
func TestXMPPUserOfDeadHubGoesUnavailable(t *testing.T) {
	srv := natsServer(t)
	a := hubtest.Start(t, func(c *gateway.Config) {
		c.Node = "a"
		c.NATS.URL = srv.ClientURL()
		c.XMPP.ClusterLiveness = 100 * time.Millisecond
	})
	alice := dialXMPP(t, a.Addr(t, "xmpp"), "alice", "alicepw")
	ghost, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer ghost.Close()
	tok := func(s string) string { return "j" + base64.RawURLEncoding.EncodeToString([]byte(s)) }
	if _, err := ghost.Subscribe("hub.x.r."+tok("bob@localhost")+"."+tok("ghost"), func(m *nats.Msg) { _ = m.Respond([]byte("1")) }); err != nil {
		t.Fatal(err)
	}
	// Sent again until it arrives: alice's hub subscribes to her subject
	// at bind, and the NATS server may not have that subscription yet.
	ghostPresence := func(v stanza) bool {
		return v.XMLName.Local == "presence" && v.From == "bob@localhost/ghost" && v.Type == ""
	}
	for end := time.Now().Add(wait); ; {
		if err := ghost.Publish("hub.x.u."+tok("alice@localhost"),
			[]byte(`{"kind":"presence","node":"ghosthub","stanza":"<presence xmlns='jabber:client' from='bob@localhost/ghost'/>"}`)); err != nil {
			t.Fatal(err)
		}
		if alice.arrives(200*time.Millisecond, ghostPresence) {
			break
		}
		if time.Now().After(end) {
			t.Fatal("xmpp: the ghost's presence: nothing arrived")
		}
	}
	alice.noMore(t, 600*time.Millisecond, presenceOf("bob@localhost", "unavailable")) // six checks answered
	ghost.Close()
	alice.expect(t, "the ghost's unavailable presence", func(v stanza) bool {
		return v.XMLName.Local == "presence" && v.From == "bob@localhost/ghost" && v.Type == "unavailable"
	})
}

package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"

	"github.com/hubsmith/hub/hubtest"
)

// The access tests: a user whose ACL denies secret/# reads and streams
// everything ("#", or "+/+" where a CoAP path cannot carry "#") in every
// protocol, and receives nothing under secret/, retained or live; an open
// stream loses access to secret/x within two seconds of an ACL change
// (adapters.Auth.CanRead runs for every envelope right before it is sent).

// revokeWithin is how soon an ACL change reaches open streams (DESIGN.md:
// decisions are cached for at most 2 s).
const revokeWithin = 2 * time.Second

const (
	aclDenySecret = `[{"action":"all","filter":"secret/#","allow":false},{"action":"all","filter":"#","allow":true}]`
	aclAllowAll   = `[{"action":"all","filter":"#","allow":true}]`
)

// received is one envelope as a client saw it (for XMPP, also presence
// and iq results: see xmppReceived).
type received struct {
	topic, payload string
	children       []xmlNode
}

// setACL replaces a user's ACL rules through the REST admin API (an
// anonymous client on a loopback listener may administer).
func setACL(t *testing.T, h *hubtest.Hub, user, rules string) {
	t.Helper()
	code, body, _ := httpDo(t, http.MethodPut, "http://"+h.Addr(t, "rest")+"/api/v1/users/"+user+"/acl", "application/json", rules)
	if code != http.StatusOK && code != http.StatusNoContent {
		t.Fatalf("PUT acl of %s = %d %s", user, code, body)
	}
}

// pub publishes over REST (retained when retain) and fails the test unless
// the bus took it.
func pub(t *testing.T, h *hubtest.Hub, topic, payload string, retain bool) {
	t.Helper()
	code, body, _ := httpDo(t, http.MethodPost, fmt.Sprintf("http://%s/api/v1/topics/%s?qos=1&retain=%v", h.Addr(t, "rest"), topic, retain), "text/plain", payload)
	if code != http.StatusOK {
		t.Fatalf("publish %s = %d %s", topic, code, body)
	}
}

// httpAs is an HTTP request with basic credentials.
func httpAs(t *testing.T, method, url, user, pass string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(user, pass)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// readUntil reads from ch until stop accepts an item and returns all it
// read, that one included; it fails the test after wait.
func readUntil(t *testing.T, ch <-chan received, what string, stop func(received) bool) []received {
	t.Helper()
	deadline := time.After(wait)
	var got []received
	for {
		select {
		case r := <-ch:
			got = append(got, r)
			if stop(r) {
				return got
			}
		case <-deadline:
			t.Fatalf("%s: not received within %v (got %v)", what, wait, got)
		}
	}
}

func is(topic, payload string) func(received) bool {
	return func(r received) bool { return r.topic == topic && r.payload == payload }
}

func noSecrets(t *testing.T, phase string, got []received) {
	t.Helper()
	for _, r := range got {
		if strings.HasPrefix(r.topic, "secret/") {
			t.Errorf("%s: a user denied secret/# received %s = %q", phase, r.topic, r.payload)
		}
	}
}

// streamCase opens alice's stream in one protocol. open returns what
// arrives, once the subscription is in place; grant, when set, runs once
// alice may read secret/x (a topic JID is subscribed one topic at a time).
type streamCase struct {
	name  string
	open  func(t *testing.T, h *hubtest.Hub) <-chan received
	grant func(t *testing.T)
}

// TestStreamsSkipDeniedTopics is the cross-protocol table: per protocol, a
// user denied secret/# who streams everything gets the retained and live
// values of public/ topics and none of secret/; once allowed, secret/x
// arrives on the same stream, and an ACL change that denies it again stops
// it within revokeWithin.
func TestStreamsSkipDeniedTopics(t *testing.T) {
	var jidClient *xmppClient // the topic-JID case subscribes secret.x once granted
	cases := []streamCase{
		{name: "sse", open: func(t *testing.T, h *hubtest.Hub) <-chan received {
			return openSSEAs(t, "http://"+h.Addr(t, "rest")+"/api/v1/subscribe?filter=%23", "alice", "alicepw")
		}},
		{name: "websocket", open: func(t *testing.T, h *hubtest.Hub) <-chan received {
			return openWebSocketAs(t, "ws://"+h.Addr(t, "rest")+"/api/v1/subscribe?filter=%23", "alice", "alicepw")
		}},
		{name: "coap observe +/+", open: func(t *testing.T, h *hubtest.Hub) <-chan received {
			return observeAs(t, h.Addr(t, "coap"), "/ps/+/+", "alice", "alicepw")
		}},
		{name: "xmpp pubsub of all", open: func(t *testing.T, h *hubtest.Hub) <-chan received {
			c := dialXMPP(t, h.Addr(t, "xmpp"), "alice", "alicepw")
			ch := xmppReceived(t, c)
			c.send(t, `<iq type='set' id='sub1' to='pubsub.localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'><subscribe node='#' jid='alice@localhost'/></pubsub></iq>`)
			readUntil(t, ch, "pubsub subscription", is("iq:result", "sub1"))
			return ch
		}},
		{name: "xmpp topic JIDs", open: func(t *testing.T, h *hubtest.Hub) <-chan received {
			c := dialXMPP(t, h.Addr(t, "xmpp"), "alice", "alicepw")
			jidClient = c
			ch := xmppReceived(t, c)
			var setup []received
			for _, j := range []string{"secret.a@topics.localhost", "secret.b@topics.localhost"} {
				c.send(t, `<presence type='subscribe' to='`+j+`'/>`)
				setup = append(setup, readUntil(t, ch, "refusal of "+j, is("presence:unsubscribed", j))...)
			}
			// public.a last: its retained value follows the approval, for
			// the test to read.
			for _, j := range []string{"public.b@topics.localhost", "public.x@topics.localhost", "public.a@topics.localhost"} {
				c.send(t, `<presence type='subscribe' to='`+j+`'/>`)
				setup = append(setup, readUntil(t, ch, "approval of "+j, is("presence:subscribed", j))...)
			}
			noSecrets(t, "subscribing", setup)
			return ch
		}},
		{name: "mqtt subscriber of all", open: func(t *testing.T, h *hubtest.Hub) <-chan received {
			c := dialMQTT(t, h.Addr(t, "mqtt"), "alice-mqtt", "alice", "alicepw", true)
			c.subscribe(t, "#", 1)
			ch := make(chan received, 100)
			done := make(chan struct{})
			t.Cleanup(func() { close(done) })
			go func() {
				for {
					select {
					case m := <-c.msgs:
						ch <- received{topic: m.Topic, payload: m.Payload}
					case <-done:
						return
					}
				}
			}()
			return ch
		}},
	}
	cases[4].grant = func(t *testing.T) {
		jidClient.send(t, `<presence type='subscribe' to='secret.x@topics.localhost'/>`)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := hubtest.Start(t)
			setACL(t, h, "alice", aclDenySecret)
			// secret/a is the newest retained value, so a reader that
			// picks the newest of a filter would pick it.
			pub(t, h, "public/a", "p-ret", true)
			pub(t, h, "secret/a", "s-ret", true)

			ch := c.open(t, h)
			noSecrets(t, "retained", readUntil(t, ch, "retained public/a", is("public/a", "p-ret")))
			pub(t, h, "secret/b", "s-live", false)
			pub(t, h, "public/b", "p-live", false)
			noSecrets(t, "live", readUntil(t, ch, "live public/b", is("public/b", "p-live")))

			setACL(t, h, "alice", aclAllowAll)
			if c.grant != nil {
				c.grant(t)
			}
			expectGranted(t, h, ch)

			setACL(t, h, "alice", aclDenySecret)
			expectRevoked(t, h, ch, time.Now(), ch)
		})
	}
}

// TestDeletedUserStreamStops: deleting a user ends what its open SSE
// stream and CoAP observation deliver within revokeWithin.
func TestDeletedUserStreamStops(t *testing.T) {
	h := hubtest.Start(t)
	base := "http://" + h.Addr(t, "rest")
	code, body, _ := httpDo(t, http.MethodPost, base+"/api/v1/users", "application/json", `{"name":"bob","password":"bobpw","role":"user"}`)
	if code != http.StatusCreated && code != http.StatusOK {
		t.Fatalf("add bob = %d %s", code, body)
	}
	sse := openSSEAs(t, base+"/api/v1/subscribe?filter=%23", "bob", "bobpw")
	obs := observeAs(t, h.Addr(t, "coap"), "/ps/+/+", "bob", "bobpw")
	markers := openSSEAs(t, base+"/api/v1/subscribe?filter=public/%23", "admin", "adminpw")
	expectGranted(t, h, sse)
	expectGranted(t, h, obs)
	drain(markers)
	if code, body, _ := httpDo(t, http.MethodDelete, base+"/api/v1/users/bob", "", ""); code != http.StatusNoContent && code != http.StatusOK {
		t.Fatalf("delete bob = %d %s", code, body)
	}
	t0 := time.Now()
	expectRevoked(t, h, markers, t0, sse, obs)
}

// expectGranted publishes secret/x, each time followed by a public/x
// marker, until one reaches ch.
func expectGranted(t *testing.T, h *hubtest.Hub, ch <-chan received) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for n := 0; ; n++ {
		pub(t, h, "secret/x", fmt.Sprintf("g-%d", n), false)
		pub(t, h, "public/x", fmt.Sprintf("gm-%d", n), false)
		for _, r := range readUntil(t, ch, "marker", is("public/x", fmt.Sprintf("gm-%d", n))) {
			if r.topic == "secret/x" {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("secret/x never arrived once allowed")
		}
	}
}

// expectRevoked publishes rounds of secret/x "r-N" then public/x "m-N"
// until each watched stream has had five marker rounds in a row without
// secret/x after the last one it did receive; for each, the first round it
// did not receive must have been published within revokeWithin of t0. The
// marker is read from markers: the watched stream itself, or (for a
// principal that may read nothing any more) a stream beside it, against
// which the watched ones are drained. A marker on a subscription beside
// the secret's (topic JIDs, another stream) may overtake it; a secret that
// arrives late still shows up in a later round and counts.
func expectRevoked(t *testing.T, h *hubtest.Hub, markers <-chan received, t0 time.Time, watched ...<-chan received) {
	t.Helper()
	var sent []time.Time
	last := make([]int, len(watched))
	for i := range last {
		last[i] = -1
	}
	quiet := func(n int) bool {
		for _, l := range last {
			if n-l <= 5 {
				return false
			}
		}
		return true
	}
	for n := 0; !quiet(n); n++ {
		if time.Since(t0) > wait {
			t.Fatalf("secret/x still arrives %v after the change (rounds %v)", wait, last)
		}
		sent = append(sent, time.Now())
		pub(t, h, "secret/x", fmt.Sprintf("r-%d", n), false)
		pub(t, h, "public/x", fmt.Sprintf("m-%d", n), false)
		marked := readUntil(t, markers, "marker", is("public/x", fmt.Sprintf("m-%d", n)))
		for i, w := range watched {
			got := marked
			if w != markers {
				got = drain(w)
			}
			for _, r := range got {
				var k int
				if _, err := fmt.Sscanf(r.payload, "r-%d", &k); err == nil && r.topic == "secret/x" {
					last[i] = max(last[i], k)
				}
			}
		}
	}
	for i, l := range last {
		if took := sent[l+1].Sub(t0); took > revokeWithin {
			t.Errorf("stream %d: secret/x stopped %v after the change, want within %v", i, took, revokeWithin)
		} else {
			t.Logf("stream %d: secret/x stopped %v after the change (%d rounds still delivered)", i, took, l+1)
		}
	}
}

// drain returns what ch holds now.
func drain(ch <-chan received) []received {
	var out []received
	for {
		select {
		case r := <-ch:
			out = append(out, r)
		default:
			return out
		}
	}
}

// TestReadsSkipDeniedTopics: the one-shot reads of a user denied secret/#
// (REST GET of "#", CoAP GET of "+/a" and /.well-known/core, PubSub items
// of "#", disco items of the PubSub service) show public values and no
// secret; reading the secret topic itself is refused.
func TestReadsSkipDeniedTopics(t *testing.T) {
	h := hubtest.Start(t)
	setACL(t, h, "alice", aclDenySecret)
	pub(t, h, "public/a", "p-ret", true)
	pub(t, h, "secret/a", "s-ret", true)
	base := "http://" + h.Addr(t, "rest")
	cc := dialCoAP(t, h.Addr(t, "coap"))
	creds := []message.Option{coapQuery("u=alice"), coapQuery("p=alicepw")}
	coapGet := func(t *testing.T, path string) (codes.Code, string) {
		resp, err := cc.Get(ctx(t), path, creds...)
		if err != nil {
			t.Fatalf("CoAP GET %s: %v", path, err)
		}
		b, _ := resp.ReadBody()
		return resp.Code(), string(b)
	}
	xc := dialXMPP(t, h.Addr(t, "xmpp"), "alice", "alicepw")
	xch := xmppReceived(t, xc)
	xmppIQ := func(t *testing.T, id, query string) []xmlNode {
		xc.send(t, `<iq type='get' id='`+id+`' to='pubsub.localhost'>`+query+`</iq>`)
		got := readUntil(t, xch, "iq "+id, is("iq:result", id))
		return got[len(got)-1].children
	}

	cases := []struct {
		name string
		read func(t *testing.T) string // what the user got, as text
		want string                    // must appear
	}{
		{"rest GET #", func(t *testing.T) string {
			code, body := httpAs(t, http.MethodGet, base+"/api/v1/topics/%23", "alice", "alicepw")
			if code != http.StatusOK {
				t.Fatalf("GET # = %d %s", code, body)
			}
			return body
		}, `"public/a"`},
		{"rest GET secret/a", func(t *testing.T) string {
			if code, body := httpAs(t, http.MethodGet, base+"/api/v1/topics/secret/a", "alice", "alicepw"); code != http.StatusForbidden {
				t.Fatalf("GET secret/a = %d %s, want 403", code, body)
			}
			return "refused"
		}, "refused"},
		{"coap GET +/a", func(t *testing.T) string {
			code, body := coapGet(t, "/ps/+/a")
			if code != codes.Content {
				t.Fatalf("CoAP GET +/a = %v %s", code, body)
			}
			return body
		}, "p-ret"},
		{"coap GET secret/a", func(t *testing.T) string {
			if code, body := coapGet(t, "/ps/secret/a"); code != codes.Forbidden {
				t.Fatalf("CoAP GET secret/a = %v %s, want 4.03", code, body)
			}
			return "refused"
		}, "refused"},
		{"coap /.well-known/core", func(t *testing.T) string {
			_, body := coapGet(t, "/.well-known/core")
			return body
		}, "</ps/public/a>"},
		{"pubsub items #", func(t *testing.T) string {
			res := xmppIQ(t, "items1", `<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='#'/></pubsub>`)
			var b strings.Builder
			for _, r := range payloads(res) {
				fmt.Fprintf(&b, "%s=%s ", r.topic, r.payload)
			}
			return b.String()
		}, "public/a=p-ret"},
		{"pubsub disco items", func(t *testing.T) string {
			return flatten(xmppIQ(t, "disco1", `<query xmlns='http://jabber.org/protocol/disco#items'/>`))
		}, "public/a"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := c.read(t)
			if !strings.Contains(got, c.want) {
				t.Errorf("got %s, want %s in it", got, c.want)
			}
			if strings.Contains(got, "secret") || strings.Contains(got, "s-ret") {
				t.Errorf("a user denied secret/# read %s", got)
			}
		})
	}
}

// openSSEAs opens an SSE stream with basic credentials; each event's topic
// and payload go to the channel.
func openSSEAs(t *testing.T, url, user, pass string) <-chan received {
	t.Helper()
	c, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(c, http.MethodGet, url, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	req.SetBasicAuth(user, pass)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("sse %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		cancel()
		t.Fatalf("sse %s: status %d", url, resp.StatusCode)
	}
	ch := make(chan received, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer resp.Body.Close()
		buf := make([]byte, 0, 4096)
		tmp := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(tmp)
			buf = append(buf, tmp[:n]...)
			for {
				i := strings.Index(string(buf), "\n")
				if i < 0 {
					break
				}
				line := string(buf[:i])
				buf = buf[i+1:]
				if d, ok := strings.CutPrefix(line, "data:"); ok {
					ch <- decodeEvent(d)
				}
			}
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return ch
}

// openWebSocketAs opens the subscribe WebSocket with basic credentials.
func openWebSocketAs(t *testing.T, url, user, pass string) <-chan received {
	t.Helper()
	hdr := http.Header{}
	req, _ := http.NewRequest(http.MethodGet, "http://x", nil)
	req.SetBasicAuth(user, pass)
	hdr.Set("Authorization", req.Header.Get("Authorization"))
	c := ctxLong(t)
	conn, _, err := websocket.Dial(c, url, &websocket.DialOptions{HTTPHeader: hdr})
	if err != nil {
		t.Fatalf("websocket %s: %v", url, err)
	}
	ch := make(chan received, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			_, data, err := conn.Read(c)
			if err != nil {
				return
			}
			ch <- decodeEvent(string(data))
		}
	}()
	t.Cleanup(func() { _ = conn.CloseNow(); <-done })
	// The server subscribes before it accepts the upgrade, so the stream
	// is in place once Dial returns.
	return ch
}

func decodeEvent(data string) received {
	var ev struct {
		Topic           string `json:"topic"`
		Payload         string `json:"payload"`
		PayloadEncoding string `json:"payload_encoding"`
	}
	_ = json.Unmarshal([]byte(strings.TrimSpace(data)), &ev)
	if ev.PayloadEncoding == "base64" {
		b, _ := base64.StdEncoding.DecodeString(ev.Payload)
		ev.Payload = string(b)
	}
	return received{topic: ev.Topic, payload: ev.Payload}
}

func coapQuery(q string) message.Option {
	return message.Option{ID: message.URIQuery, Value: []byte(q)}
}

// observeAs observes a CoAP path with EMQX-style query credentials; each
// notification's topic (Location-Path) and payload go to the channel.
func observeAs(t *testing.T, addr, path, user, pass string) <-chan received {
	t.Helper()
	cc := dialCoAP(t, addr)
	ch := make(chan received, 1024)
	obs, err := cc.Observe(ctxLong(t), path, func(m *pool.Message) {
		var segs []string
		for _, o := range m.Options() {
			if o.ID == message.LocationPath {
				segs = append(segs, string(o.Value))
			}
		}
		if len(segs) < 2 || segs[0] != "ps" {
			return // the registration response
		}
		var b []byte
		if m.Body() != nil {
			b, _ = io.ReadAll(m.Body())
		}
		ch <- received{topic: strings.Join(segs[1:], "/"), payload: string(b)}
	}, coapQuery("u="+user), coapQuery("p="+pass))
	if err != nil {
		t.Fatalf("observe %s: %v", path, err)
	}
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		_ = obs.Cancel(c) // a plain GET of the filter too; its answer does not matter here
	})
	return ch
}

// xmppReceived turns what c receives into received items: PubSub event
// payloads and topic-JID chat messages as (topic, payload), presence as
// ("presence:TYPE", from) and iq results as ("iq:result", id) with the
// iq's inner XML.
func xmppReceived(t *testing.T, c *xmppClient) <-chan received {
	t.Helper()
	ch := make(chan received, 1024)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			var v stanza
			select {
			case v = <-c.in:
			case <-stop:
				return
			}
			var items []received
			switch v.XMLName.Local {
			case "presence":
				typ := v.Type
				if typ == "" {
					typ = "available"
				}
				items = append(items, received{topic: "presence:" + typ, payload: v.From})
			case "iq":
				items = append(items, received{topic: "iq:" + v.Type, payload: v.ID, children: v.Children})
			case "message":
				if ps := payloads(v.Children); len(ps) > 0 {
					items = append(items, ps...)
				} else if local, ok := strings.CutSuffix(v.From, "@topics.localhost"); ok {
					items = append(items, received{topic: strings.ReplaceAll(local, ".", "/"), payload: v.Body})
				}
			}
			for _, it := range items {
				select {
				case ch <- it:
				case <-stop:
					return
				}
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	return ch
}

// payloads returns the hub's PubSub payload elements found under nodes
// (<payload topic='...'> base64, <text/> and XEP-0335 <json/>), decoded.
func payloads(nodes []xmlNode) []received {
	var out []received
	for _, n := range nodes {
		switch {
		case n.XMLName.Local == "payload":
			b, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(n.Text))
			out = append(out, received{topic: attr(n, "topic"), payload: string(b)})
			continue
		case (n.XMLName.Local == "text" || n.XMLName.Local == "json") && attr(n, "topic") != "":
			out = append(out, received{topic: attr(n, "topic"), payload: n.Text})
			continue
		}
		out = append(out, payloads(n.Children)...)
	}
	return out
}

func attr(n xmlNode, name string) string {
	for _, a := range n.Attrs {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

// flatten renders nodes as text (names, attributes, text) for a test to
// search.
func flatten(nodes []xmlNode) string {
	var b strings.Builder
	for _, n := range nodes {
		b.WriteString("<" + n.XMLName.Local)
		for _, a := range n.Attrs {
			fmt.Fprintf(&b, " %s=%q", a.Name.Local, a.Value)
		}
		b.WriteString(">" + strings.TrimSpace(n.Text) + flatten(n.Children) + "</" + n.XMLName.Local + ">")
	}
	return b.String()
}

func ctxLong(t *testing.T) context.Context {
	c, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return c
}

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/gateway"
	"github.com/hubsmith/hub/hubtest"
)

// The ACL table: a hub whose MQTT, CoAP and HTTP listeners are bound to
// 0.0.0.0 (reached through 127.0.0.1) with allow_anonymous: true, and for
// each protocol × principal × action the decision DESIGN.md ("Users,
// devices and access") asks for.

// aclPrincipal is one row of the table; user "" is anonymous.
type aclPrincipal struct {
	name, user, pass string
	// marker is a topic the principal may publish, to tell "refused" from
	// "not arrived yet" for MQTT 3.1.1, which acknowledges refused
	// publishes.
	marker string
}

var aclPrincipals = []aclPrincipal{
	{"admin", "admin", "adminpw", "home/marker"},
	{"deny rule", "dan", "danpw", "other/marker"},
	{"allow-list", "lisa", "lisapw", "home/marker"},
	{"device", "lamp1", "lamppw", "devices/lamp1/marker"},
	{"anonymous", "", "", "home/marker"},
}

// aclAction is one column: a publish, a read, a command or an
// administration, with the expected decision per principal (by name).
type aclAction struct {
	name  string
	kind  string // publish, read, command, administer
	topic string // for publish and read
	allow map[string]bool
}

func allowOnly(names ...string) map[string]bool {
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m
}

var aclActions = []aclAction{
	{"publish home/x", "publish", "home/x", allowOnly("admin", "deny rule", "allow-list", "anonymous")},
	{"publish secret/x", "publish", "secret/x", allowOnly("admin", "anonymous")},
	{"publish other/x", "publish", "other/x", allowOnly("admin", "deny rule", "anonymous")},
	{"publish the device's state", "publish", "devices/lamp1/state", allowOnly("admin", "device")},
	{"publish a device reply", "publish", "devices/lamp1/responses/r0", allowOnly("admin", "device")},
	{"publish a file descriptor", "publish", "files/fw", allowOnly()},
	{"read home/x", "read", "home/x", allowOnly("admin", "deny rule", "allow-list", "anonymous")},
	{"read secret/x", "read", "secret/x", allowOnly("admin", "anonymous")},
	{"read the device's commands", "read", "devices/lamp1/commands/x", allowOnly("admin", "device")},
	{"read $hub presence", "read", "$hub/devices/lamp1/presence", allowOnly("admin")},
	{"command the device", "command", "", allowOnly("admin", "allow-list")},
	{"administer", "administer", "", allowOnly("admin")},
}

// loopback turns a listener's bound address (0.0.0.0:port, [::]:port)
// into one a client on this machine dials.
func loopback(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("listener address %q: %v", addr, err)
	}
	return "127.0.0.1:" + port
}

// startACLHub starts the hub of the table: listeners on 0.0.0.0,
// anonymous clients allowed (under the default anonymous rules), lisa's
// rules in the configuration, dan's stored, and device lamp1 online over
// MQTT answering every command with {"ok":true}.
func startACLHub(t *testing.T) (*hubtest.Hub, *aclDevice) {
	t.Helper()
	h := hubtest.Start(t, func(c *gateway.Config) {
		c.MQTT.Addr, c.CoAP.Addr, c.HTTP.Addr, c.XMPP.Addr = "0.0.0.0:0", "0.0.0.0:0", "0.0.0.0:0", "0.0.0.0:0"
		c.AllowAnonymous = true
		c.ACL = map[string][]adapters.ACLRule{
			"lisa": {{Action: "all", Filter: "home/#", Allow: true}, {Action: "command", Filter: "lamp1", Allow: true}},
		}
	})
	ctx := t.Context()
	for _, u := range [][2]string{{"dan", "danpw"}, {"lisa", "lisapw"}} {
		if err := h.Store.AddUser(ctx, u[0], u[1], adapters.RoleUser); err != nil {
			t.Fatal(err)
		}
	}
	base := "http://" + loopback(t, h.Addr(t, "rest"))
	if s, b := httpAsBody(t, http.MethodPut, base+"/api/v1/users/dan/acl", "admin", "adminpw",
		`[{"action":"all","filter":"secret/#","allow":false},{"action":"all","filter":"#","allow":true}]`); s != http.StatusOK {
		t.Fatalf("PUT dan's acl: %d %s", s, b)
	}
	if s, b := httpAsBody(t, http.MethodPost, base+"/api/v1/devices", "admin", "adminpw",
		`{"id":"lamp1","protocol":"mqtt","password":"lamppw"}`); s != http.StatusCreated {
		t.Fatalf("add device: %d %s", s, b)
	}
	for _, topic := range []string{"home/x", "secret/x", "devices/lamp1/commands/x"} {
		if s, b := httpAsBody(t, http.MethodPost, base+"/api/v1/topics/"+topic+"?qos=1&retain=true", "admin", "adminpw", "retained"); s != http.StatusOK {
			t.Fatalf("retain %s: %d %s", topic, s, b)
		}
	}
	dev := startACLDevice(t, h)
	eventually(t, "lamp1 online", func() bool {
		_, body := httpAsBody(t, http.MethodGet, base+"/api/v1/devices/lamp1", "admin", "adminpw", "")
		return strings.Contains(body, `"online":true`)
	})
	return h, dev
}

// aclDevice is device lamp1 over MQTT: it hands each command's request id
// to whoever waits on reqs, and answers with reply unless hold is set.
type aclDevice struct {
	c    *mqttClient
	reqs chan string
	mu   sync.Mutex
	hold bool
}

func startACLDevice(t *testing.T, h *hubtest.Hub) *aclDevice {
	t.Helper()
	d := &aclDevice{reqs: make(chan string, 16)}
	d.c = dialMQTT(t, loopback(t, h.Addr(t, "mqtt.mqtt")), "lamp1", "lamp1", "lamppw", true)
	tok := d.c.Subscribe("devices/lamp1/commands/+", 1, func(_ paho.Client, m paho.Message) {
		var req struct{ ID string }
		if json.Unmarshal(m.Payload(), &req) != nil || req.ID == "" {
			return // the retained value of the table, no command
		}
		d.mu.Lock()
		hold := d.hold
		d.mu.Unlock()
		if hold {
			d.reqs <- req.ID
			return
		}
		d.c.Publish("devices/lamp1/responses/"+req.ID, 1, false, `{"ok":true}`)
	})
	if !tok.WaitTimeout(wait) || tok.Error() != nil || subackCode(tok, "devices/lamp1/commands/+") >= 0x80 {
		t.Fatalf("device subscribe: %v", tok.Error())
	}
	return d
}

func TestACLDecisions(t *testing.T) {
	h, _ := startACLHub(t)
	mqttAddr := loopback(t, h.Addr(t, "mqtt.mqtt"))
	restBase := "http://" + loopback(t, h.Addr(t, "rest"))
	coapAddr := loopback(t, h.Addr(t, "coap"))
	observer := dialMQTT(t, mqttAddr, "acl-observer", "admin", "adminpw", true)
	observer.subscribe(t, "#", 1)

	decisions := 0
	for _, p := range aclPrincipals {
		mq := dialMQTT(t, mqttAddr, "acl-"+strings.ReplaceAll(p.name, " ", "-"), p.user, p.pass, true)
		cc := dialCoAP(t, coapAddr)
		for _, a := range aclActions {
			want := a.allow[p.name]
			check := func(proto string, got bool) {
				t.Helper()
				decisions++
				if got != want {
					t.Errorf("%s / %s / %s: allowed %v, want %v", proto, p.name, a.name, got, want)
				}
			}
			switch a.kind {
			case "publish":
				check("mqtt", mqttPublishes(t, mq, observer, a.topic, p.marker))
				s, b := httpAsBody(t, http.MethodPost, restBase+"/api/v1/topics/"+a.topic+"?qos=1", p.user, p.pass, "rest")
				check("rest", restAllowed(t, s, b))
				check("coap", coapAllowed(t, cc, codes.POST, a.topic, p))
			case "read":
				check("mqtt", mqttReads(t, mq, a.topic))
				s, b := httpAsBody(t, http.MethodGet, restBase+"/api/v1/topics/"+a.topic, p.user, p.pass, "")
				check("rest", restAllowed(t, s, b))
				if !strings.HasPrefix(a.topic, "$") { // a CoAP path cannot start with $ here
					check("coap", coapAllowed(t, cc, codes.GET, a.topic, p))
				}
			case "command":
				// A publish on a device's command topic is a command to it,
				// except for the device itself, whose tree it is.
				got := mqttPublishes(t, mq, observer, "devices/lamp1/commands/toggle", p.marker)
				if p.name == "device" {
					decisions++
					if !got {
						t.Errorf("mqtt / device / publish on its own command topic: refused")
					}
				} else {
					check("mqtt (publish on the command topic)", got)
				}
				s, b := httpAsBody(t, http.MethodPost, restBase+"/api/v1/devices/lamp1/commands/toggle?timeout=3s", p.user, p.pass, "")
				if want && (s != http.StatusOK || b != `{"ok":true}`) {
					t.Errorf("rest / %s / command: %d %s, want the device's reply", p.name, s, b)
				}
				check("rest", restAllowed(t, s, b))
			case "administer":
				body := fmt.Sprintf(`{"name":"made-by-%s","password":"pw","role":"admin"}`, strings.ReplaceAll(p.name, " ", "-"))
				s, b := httpAsBody(t, http.MethodPost, restBase+"/api/v1/users", p.user, p.pass, body)
				check("rest (create an admin)", restAllowed(t, s, b))
				s, b = httpAsBody(t, http.MethodGet, restBase+"/api/v1/users/dan/acl", p.user, p.pass, "")
				check("rest (read an ACL)", restAllowed(t, s, b))
			}
		}
	}
	t.Logf("%d decisions checked (%d principals × %d actions over MQTT, REST and CoAP)", decisions, len(aclPrincipals), len(aclActions))
}

// TestACLConfiguredRulesShown: GET /users/{name}/acl shows the
// configuration file's rules first, marked read_only, and a PUT of what it
// returned stores only the rest.
func TestACLConfiguredRulesShown(t *testing.T) {
	h, _ := startACLHub(t)
	url := "http://" + loopback(t, h.Addr(t, "rest")) + "/api/v1/users/lisa/acl"
	s, b := httpAsBody(t, http.MethodGet, url, "admin", "adminpw", "")
	want := `[{"action":"all","filter":"home/#","allow":true,"read_only":true},{"action":"command","filter":"lamp1","allow":true,"read_only":true}]`
	if s != http.StatusOK || b != want {
		t.Fatalf("GET lisa's acl = %d %s, want %s", s, b, want)
	}
	var rules []map[string]any
	if err := json.Unmarshal([]byte(b), &rules); err != nil {
		t.Fatal(err)
	}
	rules = append(rules, map[string]any{"action": "publish", "filter": "garden/#", "allow": true})
	put, _ := json.Marshal(rules)
	if s, b := httpAsBody(t, http.MethodPut, url, "admin", "adminpw", string(put)); s != http.StatusOK ||
		b != strings.TrimSuffix(want, "]")+`,{"action":"publish","filter":"garden/#","allow":true}]` {
		t.Fatalf("PUT back = %d %s", s, b)
	}
	stored, err := h.Store.ACL(t.Context(), "lisa")
	if err != nil || len(stored) != 1 || stored[0].Filter != "garden/#" {
		t.Fatalf("stored rules %+v %v, want only garden/#", stored, err)
	}
}

// TestForgedCommandReplyIgnored: a user cannot subscribe to other
// devices' commands, so it learns no request id that way; given one, its
// reply is refused at the publish, an admin's (which the ACL lets through)
// is ignored by the command, and the REST caller gets the device's own
// reply.
func TestForgedCommandReplyIgnored(t *testing.T) {
	h, dev := startACLHub(t)
	mqttAddr := loopback(t, h.Addr(t, "mqtt.mqtt"))
	restBase := "http://" + loopback(t, h.Addr(t, "rest"))
	dev.mu.Lock()
	dev.hold = true
	dev.mu.Unlock()

	dan := dialMQTT(t, mqttAddr, "dan-1", "dan", "danpw", true)
	tok := dan.Subscribe("devices/+/commands/#", 1, nil)
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	if code := subackCode(tok, "devices/+/commands/#"); code < 0x80 {
		t.Errorf("dan's subscription to devices/+/commands/# granted (%#x)", code)
	}
	dan.subscribe(t, "#", 1) // granted: deliveries are checked one by one
	admin := dialMQTT(t, mqttAddr, "admin-1", "admin", "adminpw", true)
	admin.subscribe(t, "devices/lamp1/responses/#", 1)

	type answer struct {
		status int
		body   string
	}
	done := make(chan answer, 1)
	go func() {
		s, b := httpAsBody(t, http.MethodPost, restBase+"/api/v1/devices/lamp1/commands/toggle?timeout=5s", "lisa", "lisapw", `{"on":true}`)
		done <- answer{s, b}
	}()
	var req string
	select {
	case req = <-dev.reqs:
	case <-ctxDone(t):
		t.Fatal("the device got no command")
	}
	topic := "devices/lamp1/responses/" + req
	dan.publish(t, topic, 1, false, `{"forged":"dan"}`)
	admin.publish(t, topic, 1, false, `{"forged":"admin"}`)
	// Once the admin's own subscription has the admin's forgery, the bus
	// has routed it to the command's reply subscription too.
	for m := admin.next(t); m.Payload != `{"forged":"admin"}`; m = admin.next(t) {
		if m.Payload == `{"forged":"dan"}` {
			t.Errorf("dan's forged reply reached the bus")
		}
	}
	dev.c.publish(t, topic, 1, false, `{"ok":"real"}`)
	select {
	case a := <-done:
		if a.status != http.StatusOK || a.body != `{"ok":"real"}` {
			t.Fatalf("command answered %d %s, want the device's reply", a.status, a.body)
		}
	case <-ctxDone(t):
		t.Fatal("the command did not answer")
	}

	// dan, subscribed to everything, saw no command: a marker published
	// after the command arrives, and nothing under devices/lamp1/commands/
	// before it.
	admin.publish(t, "home/marker", 1, false, "after")
	for m := dan.next(t); m.Topic != "home/marker"; m = dan.next(t) {
		if strings.HasPrefix(m.Topic, "devices/lamp1/commands/") {
			t.Errorf("dan received command %s = %s", m.Topic, m.Payload)
		}
	}
}

// mqttPublishes publishes payload on topic from c, then a marker, and
// reports whether the observer (an admin subscribed to #) got the publish
// before the marker.
func mqttPublishes(t *testing.T, c, observer *mqttClient, topic, marker string) bool {
	t.Helper()
	payload := fmt.Sprintf("%p-%s", c, topic)
	c.publish(t, topic, 1, false, payload)
	c.publish(t, marker, 1, false, payload+"-marker")
	seen := false
	for {
		m := observer.next(t)
		switch {
		case m.Topic == topic && m.Payload == payload:
			seen = true
		case m.Topic == marker && m.Payload == payload+"-marker":
			return seen
		}
	}
}

// mqttReads subscribes c to topic: the SUBACK decides, and a granted
// subscription brings the retained value.
func mqttReads(t *testing.T, c *mqttClient, topic string) bool {
	t.Helper()
	tok := c.Subscribe(topic, 1, nil)
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("mqtt subscribe %s: %v", topic, tok.Error())
	}
	defer c.Unsubscribe(topic).WaitTimeout(wait)
	if subackCode(tok, topic) >= 0x80 {
		return false
	}
	if strings.HasPrefix(topic, "$") {
		return true // presence is retained too, but its payload varies
	}
	for m := c.next(t); m.Topic != topic; m = c.next(t) {
	}
	return true
}

func subackCode(tok paho.Token, filter string) byte {
	st, ok := tok.(*paho.SubscribeToken)
	if !ok {
		return 0x80
	}
	code, ok := st.Result()[filter]
	if !ok {
		return 0x80
	}
	return code
}

// restAllowed reads an HTTP answer: 403 is a refusal, 2xx an allowed
// action; anything else fails the test.
func restAllowed(t *testing.T, status int, body string) bool {
	t.Helper()
	switch {
	case status == http.StatusForbidden:
		return false
	case status/100 == 2:
		return true
	}
	t.Errorf("unexpected HTTP answer %d %s", status, body)
	return false
}

// coapAllowed POSTs to or GETs /ps/{topic} with p's query credentials:
// 4.03 is a refusal, 2.xx an allowed action.
func coapAllowed(t *testing.T, cc *udpClient.Conn, method codes.Code, topic string, p aclPrincipal) bool {
	t.Helper()
	var opts []message.Option
	if p.user != "" {
		opts = append(opts, coapQuery("u="+p.user), coapQuery("p="+p.pass))
	}
	var (
		code codes.Code
		err  error
	)
	if method == codes.POST {
		resp, e := cc.Post(ctx(t), "/ps/"+topic, message.TextPlain, strings.NewReader("coap"), opts...)
		if err = e; e == nil {
			code = resp.Code()
		}
	} else {
		resp, e := cc.Get(ctx(t), "/ps/"+topic, opts...)
		if err = e; e == nil {
			code = resp.Code()
		}
	}
	if err != nil {
		t.Fatalf("coap %v /ps/%s: %v", method, topic, err)
	}
	switch {
	case code == codes.Forbidden:
		return false
	case code >= codes.Created && code <= codes.Content:
		return true
	}
	t.Errorf("coap %v /ps/%s as %s: unexpected %v", method, topic, p.name, code)
	return false
}

// httpAsBody is an HTTP request with a body and, unless user is "",
// basic credentials.
func httpAsBody(t *testing.T, method, url, user, pass, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader([]byte(body)))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func ctxDone(t *testing.T) <-chan struct{} { return ctx(t).Done() }

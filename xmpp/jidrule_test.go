package xmpp

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hubsmith/hub/broker"
)

var testRules = []JIDRule{
	{Topic: "sensors/{room}/temp", JID: "{room}-temp@sensors.{domain}"},
	{Topic: "sensors/{room}/hum", JID: "{room}-hum@sensors.{domain}"},
	{Topic: "plant/{line}/{machine}/state", JID: "m-{machine}.on-{line}@plant.{domain}"},
	{Topic: "{site}/door/{n}", JID: "door{n}x{site}@doors.{domain}"},
}

func mustRules(t testing.TB, rules []JIDRule) *ruleSet {
	t.Helper()
	rs, err := compileRules(rules, "localhost", "topics.localhost")
	if err != nil {
		t.Fatalf("compileRules: %v", err)
	}
	return rs
}

func TestJIDRuleMapping(t *testing.T) {
	t.Parallel()
	rs := mustRules(t, testRules)
	tests := []struct {
		topic, jid string // jid "" = no rule matches
	}{
		{"sensors/kitchen/temp", "kitchen-temp@sensors.localhost"},
		{"sensors/kitchen/hum", "kitchen-hum@sensors.localhost"},
		{"sensors/Living Room/temp", `\4civing\20\52oom-temp@sensors.localhost`},
		{"sensors/a.b/temp", `a\2eb-temp@sensors.localhost`},
		{"sensors/x-temp/temp", "x-temp-temp@sensors.localhost"},
		{`sensors/\2e/temp`, `\5c2e-temp@sensors.localhost`},
		{"plant/l1/press-2/state", "m-press-2.on-l1@plant.localhost"},
		{"plant/l1/a.on-b/state", `m-a\2eon-b.on-l1@plant.localhost`},
		{"plant/a-b/c.d/state", `m-c\2ed.on-a-b@plant.localhost`},
		{"hq/door/3", "door3xhq@doors.localhost"},
		{"x/door/x", `door\78x\78@doors.localhost`},
		{"a/door/b", "doorbxa@doors.localhost"},
		{"sensors//temp", ""},
		{"sensors/kitchen/temp/x", ""},
		{"sensors/kitchen/pressure", ""},
		{"plant/l1/m/state/x", ""},
	}
	for _, tt := range tests {
		t.Run(tt.topic, func(t *testing.T) {
			j, ok := rs.toJID(tt.topic)
			if tt.jid == "" {
				if ok {
					t.Fatalf("toJID(%q) = %q, want no match", tt.topic, j)
				}
				return
			}
			if !ok || j != tt.jid {
				t.Fatalf("toJID(%q) = %q %v, want %q", tt.topic, j, ok, tt.jid)
			}
			local, domain, _ := splitJID(j)
			back, ok := rs.fromJID(local, domain)
			if !ok || back != tt.topic {
				t.Fatalf("fromJID(%q) = %q %v, want %q", j, back, ok, tt.topic)
			}
		})
	}
}

func TestJIDRuleUnknownJIDs(t *testing.T) {
	t.Parallel()
	rs := mustRules(t, testRules)
	for _, j := range []string{
		"kitchen@sensors.localhost",      // no suffix
		"-temp@sensors.localhost",        // empty value
		`Kitchen-temp@sensors.localhost`, // not canonical (raw capital)
		`a\2fb-temp@sensors.localhost`,   // '/' in a value
		`a\5cx-temp@sensors.localhost`,   // needless escape of a backslash
		"kitchen-temp@topics.localhost",  // not a rule domain
		"kitchen-temp@other.localhost",   // not a rule domain
		"m-x.y.on-l@plant.localhost",     // separator key in a value
		"door1xx2@doors.localhost",       // separator key in a value
		"m-x.on-@plant.localhost",        // empty last value
		"m-.on-l@plant.localhost",        // empty first value
		"m-x@plant.localhost",            // no separator
		"a+-temp@sensors.localhost",      // wildcard
		"door1x+@doors.localhost",        // wildcard
		"",
	} {
		local, domain, _ := splitJID(j)
		if topic, ok := rs.fromJID(local, domain); ok {
			t.Errorf("fromJID(%q) = %q, want no topic", j, topic)
		}
	}
}

func TestJIDRuleValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		rule JIDRule
		want string
	}{
		{"empty topic", JIDRule{JID: "x@s.{domain}"}, "topic is empty"},
		{"no placeholder", JIDRule{Topic: "a/b", JID: "ab@s.{domain}"}, "no {placeholder}"},
		{"partial level", JIDRule{Topic: "a/x{b}", JID: "{b}@s.{domain}"}, "whole level"},
		{"wildcard", JIDRule{Topic: "a/+/{b}", JID: "{b}@s.{domain}"}, "wildcard"},
		{"hash", JIDRule{Topic: "a/{b}/#", JID: "{b}@s.{domain}"}, "wildcard"},
		{"bad name", JIDRule{Topic: "a/{b-c}", JID: "{b-c}@s.{domain}"}, "placeholder name"},
		{"twice in topic", JIDRule{Topic: "{a}/{a}", JID: "{a}@s.{domain}"}, "used twice"},
		{"twice in jid", JIDRule{Topic: "x/{a}", JID: "{a}-{a}@s.{domain}"}, "used twice"},
		{"missing in jid", JIDRule{Topic: "{a}/{b}", JID: "{a}@s.{domain}"}, "{b} is not in the jid"},
		{"unknown in jid", JIDRule{Topic: "x/{a}", JID: "{a}-{c}@s.{domain}"}, "{c} is not in the topic"},
		{"no at", JIDRule{Topic: "x/{a}", JID: "{a}"}, "localpart-template@domain-template"},
		{"domain itself", JIDRule{Topic: "x/{a}", JID: "{a}@{domain}"}, "subdomain"},
		{"fixed domain", JIDRule{Topic: "x/{a}", JID: "{a}@example.org"}, "subdomain"},
		{"placeholder in domain", JIDRule{Topic: "x/{a}", JID: "x@{a}.{domain}"}, "label"},
		{"topics domain", JIDRule{Topic: "x/{a}", JID: "{a}@topics.{domain}"}, "taken"},
		{"capital literal", JIDRule{Topic: "x/{a}", JID: "X{a}@s.{domain}"}, "literal text"},
		{"at in literal", JIDRule{Topic: "x/{a}", JID: "{a}\\@s.{domain}"}, "literal text"},
		{"adjacent placeholders", JIDRule{Topic: "{a}/{b}", JID: "{a}{b}@s.{domain}"}, "literal text between"},
		{"hex separator", JIDRule{Topic: "{a}/{b}", JID: "{a}1f{b}@s.{domain}"}, "other than 0-9 and a-f"},
		{"unclosed", JIDRule{Topic: "x/{a}", JID: "{a@s.{domain}"}, "unclosed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := compileRules([]JIDRule{{Topic: "ok/{v}", JID: "{v}@ok.{domain}"}, tt.rule}, "localhost", "topics.localhost")
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "JIDRules[1]") {
				t.Errorf("compileRules: %v, want an error naming JIDRules[1] with %q", err, tt.want)
			}
		})
	}
	// Two rules at one domain that could give the same JID are refused.
	_, err := compileRules([]JIDRule{
		{Topic: "a/{x}", JID: "{x}-temp@s.{domain}"},
		{Topic: "b/{x}", JID: "{x}@s.{domain}"},
	}, "localhost")
	if err == nil || !strings.Contains(err.Error(), "same JID") {
		t.Errorf("overlapping rules: %v", err)
	}
}

// FuzzJIDRule checks that every topic matching a rule round-trips through
// its JID, and that fromJID never panics and accepts only JIDs that toJID
// gives back.
func FuzzJIDRule(f *testing.F) {
	for _, s := range []string{"kitchen", "a.b", `\2e`, "x-temp", "A B", "ü", `\5c`, "-", "m-", ".on-", `\2d`, "+"} {
		f.Add(s, "l1")
	}
	rs := mustRules(f, testRules)
	f.Fuzz(func(t *testing.T, v, w string) {
		for _, topic := range []string{
			"sensors/" + v + "/temp", "sensors/" + v + "/hum",
			"plant/" + v + "/" + w + "/state", v + "/door/" + w,
		} {
			if broker.ValidateTopic(topic) != nil {
				continue
			}
			j, ok := rs.toJID(topic)
			if !ok {
				if v != "" && w != "" && !strings.Contains(v+w, "/") {
					t.Fatalf("toJID(%q): no match", topic)
				}
				continue
			}
			local, domain, _ := splitJID(j)
			if strings.ContainsAny(local, "/@ \"&'<>:") {
				t.Fatalf("localpart %q of %q holds a forbidden character", local, topic)
			}
			back, ok := rs.fromJID(local, domain)
			if !ok || back != topic {
				t.Fatalf("round trip %q -> %q -> %q %v", topic, j, back, ok)
			}
		}
		for _, d := range []string{"sensors.localhost", "plant.localhost", "doors.localhost"} {
			if topic, ok := rs.fromJID(v, d); ok {
				if j, _ := rs.jidAt(topic, d); j != v+"@"+d {
					t.Fatalf("fromJID(%q@%s) = %q, whose JID there is %q", v, d, topic, j)
				}
			}
		}
	})
}

func TestJIDRuleNewValidation(t *testing.T) {
	h := startHub(t, nil)
	cfg := h.a.cfg
	cfg.Addr = "127.0.0.1:0"
	cfg.JIDRules = []JIDRule{{Topic: "sensors/{room}/temp", JID: "{room}-temp@{domain}"}}
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "JIDRules[0]") {
		t.Errorf("New with a rule at {domain}: %v, want an error naming JIDRules[0]", err)
	}
	cfg.JIDRules = []JIDRule{{Topic: "sensors/{room}/temp", JID: "{room}-temp@pubsub.{domain}"}}
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "JIDRules[0]") {
		t.Errorf("New with a rule at pubsub.{domain}: %v, want an error naming JIDRules[0]", err)
	}
}

func TestJIDRuleRouting(t *testing.T) {
	h := startHub(t, func(c *Config) {
		c.JIDRules = []JIDRule{{Topic: "sensors/{room}/temp", JID: "{room}-temp@sensors.{domain}"}}
	})
	ctx := context.Background()
	if err := h.bus.Publish(ctx, &broker.Envelope{Topic: "sensors/kitchen/temp", Payload: []byte("19"), Retain: true}); err != nil {
		t.Fatal(err)
	}
	const ruleJID, defJID = "kitchen-temp@sensors.localhost", "sensors.kitchen.temp@topics.localhost"
	alice := connect(t, h, "alice", "alicepw")
	bob := connect(t, h, "bob", "bobpw")
	alice.send(t, `<presence to='`+ruleJID+`' type='subscribe'/>`)
	alice.expect(t, "subscribed", func(v rx) bool { return v.XMLName.Local == "presence" && v.Type == "subscribed" && v.From == ruleJID })
	if got := alice.expect(t, "retained value", isMessageFrom(ruleJID)); got.Body != "19" {
		t.Errorf("retained body %q", got.Body)
	}
	bob.send(t, `<presence to='`+defJID+`' type='subscribe'/>`)
	bob.expect(t, "subscribed", func(v rx) bool { return v.XMLName.Local == "presence" && v.Type == "subscribed" && v.From == defJID })
	bob.expect(t, "retained value", isMessageFrom(defJID))

	if err := h.bus.Publish(ctx, &broker.Envelope{Topic: "sensors/kitchen/temp", Payload: []byte("21"), ContentType: "text/plain"}); err != nil {
		t.Fatal(err)
	}
	if got := alice.expect(t, "live value via the rule JID", isMessageFrom(ruleJID)); got.Body != "21" {
		t.Errorf("alice body %q", got.Body)
	}
	if got := bob.expect(t, "live value via the default JID", isMessageFrom(defJID)); got.Body != "21" {
		t.Errorf("bob body %q", got.Body)
	}

	// A chat message to the rule JID publishes on the topic.
	got := make(chan *broker.Envelope, 1)
	sub, err := h.bus.Subscribe(ctx, broker.SubscribeOptions{Filters: []string{"sensors/+/temp"}}, func(_ context.Context, e *broker.Envelope) error {
		if e.Origin.Protocol == broker.ProtoXMPP {
			got <- e
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	bob.send(t, `<message to='hall-temp@sensors.localhost' type='chat'><body>18</body></message>`)
	select {
	case e := <-got:
		if e.Topic != "sensors/hall/temp" || string(e.Payload) != "18" || e.Origin.Principal != "bob" {
			t.Errorf("envelope %+v", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no envelope on the bus")
	}

	// An unknown JID at the rule domain is item-not-found.
	_, out := alice.iq(t, `<iq type='get' id='u1' to='kitchen-hum@sensors.localhost'><ping xmlns='urn:xmpp:ping'/></iq>`)
	if !strings.Contains(out, "item-not-found") {
		t.Errorf("iq to an unknown rule JID: %s", out)
	}
	alice.send(t, `<message to='kitchen-hum@sensors.localhost' type='chat' id='m1'><body>x</body></message>`)
	alice.expect(t, "message error", func(v rx) bool {
		return v.XMLName.Local == "message" && v.Type == "error" && strings.Contains(v.Inner, "item-not-found")
	})

	// Disco: the server lists the rule domain; the rule domain its JIDs.
	_, out = alice.iq(t, `<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>`)
	if !strings.Contains(out, `jid="sensors.localhost"`) {
		t.Errorf("server disco#items lacks the rule domain: %s", out)
	}
	_, out = alice.iq(t, `<iq type='get' id='d2' to='sensors.localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>`)
	if !strings.Contains(out, ruleJID) {
		t.Errorf("rule domain disco#items lacks %s: %s", ruleJID, out)
	}

	// Unsubscribing from the rule JID leaves the default subscription.
	alice.send(t, `<presence to='`+ruleJID+`' type='unsubscribe'/>`)
	alice.expect(t, "unsubscribed", func(v rx) bool { return v.XMLName.Local == "presence" && v.Type == "unsubscribed" && v.From == ruleJID })
	if err := h.bus.Publish(ctx, &broker.Envelope{Topic: "sensors/kitchen/temp", Payload: []byte("22"), ContentType: "text/plain"}); err != nil {
		t.Fatal(err)
	}
	if got := bob.expect(t, "value after alice left", isMessageFrom(defJID)); got.Body != "22" {
		t.Errorf("bob body %q", got.Body)
	}
	select {
	case v := <-alice.in:
		if v.XMLName.Local == "message" && v.From == ruleJID {
			t.Errorf("message after unsubscribe: %+v", v)
		}
	case <-time.After(300 * time.Millisecond):
	}
}

// TestJIDRuleSubscriptionKept checks that a subscription through a rule JID
// is attached again when the user comes back, from the same JID.
func TestJIDRuleSubscriptionKept(t *testing.T) {
	h := startHub(t, func(c *Config) {
		c.JIDRules = []JIDRule{{Topic: "sensors/{room}/temp", JID: "{room}-temp@sensors.{domain}"}}
	})
	const ruleJID = "attic-temp@sensors.localhost"
	alice := connect(t, h, "alice", "alicepw")
	alice.send(t, `<presence to='`+ruleJID+`' type='subscribe'/>`)
	alice.expect(t, "subscribed", func(v rx) bool { return v.XMLName.Local == "presence" && v.Type == "subscribed" && v.From == ruleJID })
	alice.send(t, `<presence type='unavailable'/>`)
	time.Sleep(100 * time.Millisecond)
	if err := h.bus.Publish(context.Background(), &broker.Envelope{Topic: "sensors/attic/temp", Payload: []byte("30"), QoS: 1, ContentType: "text/plain"}); err != nil {
		t.Fatal(err)
	}
	alice.send(t, `<presence/>`)
	if got := alice.expect(t, "queued value", isMessageFrom(ruleJID)); got.Body != "30" {
		t.Errorf("queued body %q", got.Body)
	}
	ctx := context.Background()
	if _, err := h.st.KVGet(ctx, jidBucket, "alice@localhost "+ruleJID); err != nil {
		t.Fatalf("subscription record: %v", err)
	}
	// Removing the rule JID from the roster ends the subscription.
	if typ, out := alice.iq(t, `<iq type='set' id='r1'><query xmlns='jabber:iq:roster'><item jid='`+ruleJID+`' subscription='remove'/></query></iq>`); typ != "result" {
		t.Fatalf("roster remove: %s %s", typ, out)
	}
	if _, err := h.st.KVGet(ctx, jidBucket, "alice@localhost "+ruleJID); err == nil {
		t.Error("subscription record kept after roster remove")
	}
	if err := h.bus.Publish(ctx, &broker.Envelope{Topic: "sensors/attic/temp", Payload: []byte("31"), ContentType: "text/plain"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(300 * time.Millisecond)
	for {
		select {
		case v := <-alice.in:
			if v.XMLName.Local == "message" && v.From == ruleJID {
				t.Fatalf("message after roster remove: %+v", v)
			}
			continue
		case <-deadline:
		}
		break
	}
}

// FuzzJIDRuleTemplates compiles fuzzed rules and checks that every topic
// made from a rule's template round-trips through the rule set, so that
// no two topics share a JID, also across two rules at one domain.
func FuzzJIDRuleTemplates(f *testing.F) {
	f.Add("sensors/{room}/temp", "{room}-temp@sensors.{domain}", "s/{a}", "{a}-hum@sensors.{domain}", "kitchen", "x")
	f.Add("{a}/{b}", "{a}-{b}@s.{domain}", "{a}/x/{b}", "p{b}.{a}q@s.{domain}", "a-b", "c.d")
	f.Add("{a}/{b}/{c}", "{a}x{b}2ey{c}@s.{domain}", "x/{b}", "{b}z@s.{domain}", `\78`, "yy")
	f.Fuzz(func(t *testing.T, t1, j1, t2, j2, v1, v2 string) {
		rules := []JIDRule{{Topic: t1, JID: j1}, {Topic: t2, JID: j2}}
		rs, err := compileRules(rules, "localhost")
		if err != nil {
			rules = rules[:1]
			if rs, err = compileRules(rules, "localhost"); err != nil {
				return
			}
		}
		vals := []string{v1, v2, v1 + v2, v2 + v1}
		for _, r := range rs.rules {
			levels := make([]string, len(r.levels))
			n := 0
			for i, l := range r.levels {
				if r.names[i] == "" {
					levels[i] = l
					continue
				}
				levels[i] = vals[n%len(vals)]
				n++
			}
			topic := strings.Join(levels, "/")
			if broker.ValidateTopic(topic) != nil {
				continue
			}
			j, ok := rs.toJID(topic)
			if !ok {
				if strings.Count(topic, "/") == len(levels)-1 && v1 != "" && v2 != "" {
					t.Fatalf("toJID(%q): no match for a topic made from %+v", topic, rules)
				}
				continue
			}
			local, domain, _ := splitJID(j)
			if back, ok := rs.fromJID(local, domain); !ok || back != topic {
				t.Fatalf("rules %+v: round trip %q -> %q -> %q %v", rules, topic, j, back, ok)
			}
		}
		for _, d := range rs.domainList() {
			if topic, ok := rs.fromJID(v1, d); ok {
				if j, _ := rs.jidAt(topic, d); j != v1+"@"+d {
					t.Fatalf("rules %+v: fromJID(%q@%s) = %q, whose JID there is %q", rules, v1, d, topic, j)
				}
			}
		}
	})
}

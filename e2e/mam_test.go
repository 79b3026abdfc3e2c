package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/gateway"
	"github.com/hubsmith/hub/hubtest"
)

// child returns n's first child element named local (any namespace).
func child(n xmlNode, local string) (xmlNode, bool) {
	for _, c := range n.Children {
		if c.XMLName.Local == local {
			return c, true
		}
	}
	return xmlNode{}, false
}

func stanzaChild(s stanza, local string) (xmlNode, bool) {
	return child(xmlNode{Children: s.Children}, local)
}

// mamPage is what one MAM query returned.
type mamPage struct {
	bodies    []string
	ids       []string
	stamps    []string
	complete  string
	count     string
	first     string
	index     string
	last      string
	errorCond string
}

// queryMAM sends a MAM query with the given form fields and RSM set to
// the archive at to and collects the results up to the iq's answer.
func queryMAM(t *testing.T, c *xmppClient, to, id, fields, set string) mamPage {
	t.Helper()
	form := ""
	if fields != "" {
		form = `<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>` + fields + `</x>`
	}
	if set != "" {
		set = `<set xmlns='http://jabber.org/protocol/rsm'>` + set + `</set>`
	}
	c.send(t, `<iq type='set' id='`+id+`' to='`+to+`'><query xmlns='urn:xmpp:mam:2' queryid='q-`+id+`'>`+form+set+`</query></iq>`)
	var p mamPage
	for {
		s := c.expect(t, "MAM results of "+id, func(s stanza) bool {
			if s.XMLName.Local == "iq" {
				return s.ID == id
			}
			r, ok := stanzaChild(s, "result")
			return s.XMLName.Local == "message" && ok && attr(r, "queryid") == "q-"+id
		})
		if s.XMLName.Local == "iq" {
			if s.Type == "error" {
				e, _ := stanzaChild(s, "error")
				if len(e.Children) > 0 {
					p.errorCond = e.Children[0].XMLName.Local
				}
				return p
			}
			fin, ok := stanzaChild(s, "fin")
			if !ok || s.Type != "result" {
				t.Fatalf("MAM answer %+v: want a result with <fin/>", s)
			}
			p.complete = attr(fin, "complete")
			rsm, _ := child(fin, "set")
			cnt, _ := child(rsm, "count")
			first, _ := child(rsm, "first")
			last, _ := child(rsm, "last")
			p.count, p.first, p.index, p.last = cnt.Text, first.Text, attr(first, "index"), last.Text
			return p
		}
		if s.From != to {
			t.Fatalf("MAM result from %q; want the archive %s", s.From, to)
		}
		r, _ := stanzaChild(s, "result")
		fwd, ok := child(r, "forwarded")
		if !ok {
			t.Fatalf("MAM result without <forwarded/>: %+v", r)
		}
		delay, _ := child(fwd, "delay")
		msg, _ := child(fwd, "message")
		body, _ := child(msg, "body")
		if attr(msg, "from") != to {
			t.Errorf("archived message from %q; want %s", attr(msg, "from"), to)
		}
		p.bodies = append(p.bodies, body.Text)
		p.ids = append(p.ids, attr(r, "id"))
		p.stamps = append(p.stamps, attr(delay, "stamp"))
	}
}

// TestMAMTopicArchive: readings published over MQTT are in the topic
// JID's XEP-0313 archive, paged with XEP-0059 and filtered by time, for
// a user with the topic's read right, and refused to one without.
func TestMAMTopicArchive(t *testing.T) {
	t.Parallel()
	h := hubtest.Start(t, func(c *gateway.Config) {
		c.CoAP.Addr = gateway.Off
		c.History.FlushInterval = 20 * time.Millisecond
		c.ACL = map[string][]adapters.ACLRule{
			"dan": {{Action: "all", Filter: "secret/#", Allow: false}, {Action: "all", Filter: "#", Allow: true}},
		}
	})
	if err := h.Store.AddUser(t.Context(), "dan", "danpw", adapters.RoleUser); err != nil {
		t.Fatal(err)
	}
	pubc := dialMQTT(t, h.Addr(t, "mqtt.mqtt"), "sensor1", "", "", true)
	for i := range 5 {
		pubc.publish(t, "home/t", 1, false, fmt.Sprint(20+i))
	}
	pubc.publish(t, "secret/x", 1, false, "42")
	pubc.publish(t, "home/env", 1, false, `{"temp":21.5}`)
	hist := "http://" + h.Addr(t, "rest") + "/api/v1/history/"
	eventually(t, "the readings recorded", func() bool {
		a, b, _ := httpDo(t, http.MethodGet, hist+"home/t", "", "")
		c, _, _ := httpDo(t, http.MethodGet, hist+"home/env", "", "")
		d, _, _ := httpDo(t, http.MethodGet, hist+"secret/x", "", "")
		return a == http.StatusOK && strings.Count(b, `"value":`) == 5 && c == http.StatusOK && d == http.StatusOK
	})

	const archive = "home.t@topics.localhost"
	alice := dialXMPP(t, h.Addr(t, "xmpp"), "alice", "alicepw")
	alice.send(t, `<iq type='get' id='disco1' to='`+archive+`'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`)
	info := alice.expect(t, "disco#info of the topic JID", func(s stanza) bool { return s.ID == "disco1" })
	if q, _ := stanzaChild(info, "query"); !strings.Contains(flattenAttrs(q), "urn:xmpp:mam:2") {
		t.Fatalf("disco#info of %s does not advertise urn:xmpp:mam:2: %+v", archive, info)
	}

	first := queryMAM(t, alice, archive, "p1", "", "<max>2</max>")
	if strings.Join(first.bodies, ",") != "20,21" || first.complete == "true" || first.count != "5" || first.index != "0" ||
		first.first != first.ids[0] || first.last != first.ids[1] {
		t.Fatalf("first page %+v; want 20,21 of 5, index 0, not complete", first)
	}
	if _, err := time.Parse(time.RFC3339Nano, first.stamps[0]); err != nil {
		t.Errorf("delay stamp %q: %v", first.stamps[0], err)
	}
	second := queryMAM(t, alice, archive, "p2", "", "<max>2</max><after>"+first.last+"</after>")
	third := queryMAM(t, alice, archive, "p3", "", "<max>2</max><after>"+second.last+"</after>")
	if strings.Join(second.bodies, ",") != "22,23" || second.index != "2" || second.complete == "true" ||
		strings.Join(third.bodies, ",") != "24" || third.complete != "true" || third.index != "4" {
		t.Fatalf("forward paging: %+v then %+v; want 22,23 then 24 (complete)", second, third)
	}
	last := queryMAM(t, alice, archive, "p4", "", "<max>2</max><before/>")
	if strings.Join(last.bodies, ",") != "23,24" || last.index != "3" {
		t.Fatalf("last page %+v; want 23,24 at index 3", last)
	}
	back := queryMAM(t, alice, archive, "p5", "", "<max>2</max><before>"+last.first+"</before>")
	if strings.Join(back.bodies, ",") != "21,22" || back.complete == "true" {
		t.Fatalf("the page before %+v; want 21,22, not complete", back)
	}
	since := queryMAM(t, alice, archive, "p6", "<field var='start'><value>"+second.stamps[0]+"</value></field>", "")
	if strings.Join(since.bodies, ",") != "22,23,24" || since.count != "3" || since.complete != "true" {
		t.Fatalf("start filter %+v; want 22,23,24", since)
	}
	until := queryMAM(t, alice, archive, "p7", "<field var='end'><value>"+first.stamps[1]+"</value></field>", "")
	if strings.Join(until.bodies, ",") != "20,21" {
		t.Fatalf("end filter %+v; want 20,21", until)
	}
	env := queryMAM(t, alice, "home.env@topics.localhost", "p8", "", "")
	if strings.Join(env.bodies, ",") != `{"temp":21.5}` {
		t.Fatalf("home/env archive %+v", env)
	}
	empty := queryMAM(t, alice, "nothing.here@topics.localhost", "p9", "", "")
	if len(empty.bodies) != 0 || empty.complete != "true" || empty.count != "0" || empty.errorCond != "" {
		t.Fatalf("archive of a topic without history %+v; want an empty complete page", empty)
	}

	for _, tt := range []struct {
		name, to, fields, set, cond string
	}{
		{"bad start", archive, "<field var='start'><value>yesterday</value></field>", "", "bad-request"},
		{"unknown field", archive, "<field var='colour'><value>red</value></field>", "", "bad-request"},
		{"unknown after", archive, "", "<after>123-nope</after>", "item-not-found"},
		{"garbage after", archive, "", "<after>garbage</after>", "bad-request"},
		{"bad max", archive, "", "<max>many</max>", "bad-request"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := queryMAM(t, alice, tt.to, strings.ReplaceAll(tt.name, " ", "-"), tt.fields, tt.set)
			if p.errorCond != tt.cond {
				t.Errorf("query %s: %+v; want <%s/>", tt.name, p, tt.cond)
			}
		})
	}

	dan := dialXMPP(t, h.Addr(t, "xmpp"), "dan", "danpw")
	if p := queryMAM(t, dan, "secret.x@topics.localhost", "d1", "", ""); p.errorCond != "forbidden" || len(p.bodies) != 0 {
		t.Fatalf("dan's query of secret/x: %+v; want forbidden", p)
	}
	if p := queryMAM(t, dan, archive, "d2", "", "<max>1</max><before/>"); strings.Join(p.bodies, ",") != "24" {
		t.Fatalf("dan's query of home/t: %+v; want 24", p)
	}
}

// flattenAttrs is every attribute value below n, for a contains check.
func flattenAttrs(n xmlNode) string {
	var b strings.Builder
	for _, a := range n.Attrs {
		b.WriteString(a.Value + " ")
	}
	for _, c := range n.Children {
		b.WriteString(flattenAttrs(c))
	}
	return b.String()
}

package e2e

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/gateway"
	"github.com/hubsmith/hub/history"
	"github.com/hubsmith/hub/hubtest"
)

// historyGet is GET {url} with basic credentials (none when user is "")
// and an Accept header.
func historyGet(t *testing.T, url, user, pass, accept string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// startHistoryHub starts a hub on 0.0.0.0 (credentials required) that
// writes history every 20 ms, with user dan denied secret/#.
func startHistoryHub(t *testing.T, opts ...hubtest.Option) (*hubtest.Hub, string) {
	t.Helper()
	h := hubtest.Start(t, append([]hubtest.Option{func(c *gateway.Config) {
		c.MQTT.Addr, c.CoAP.Addr, c.HTTP.Addr = "0.0.0.0:0", gateway.Off, "0.0.0.0:0"
		c.XMPP.Addr = gateway.Off
		c.History.FlushInterval = 20 * time.Millisecond
		c.ACL = map[string][]adapters.ACLRule{
			"dan": {{Action: "all", Filter: "secret/#", Allow: false}, {Action: "all", Filter: "#", Allow: true}},
		}
	}}, opts...)...)
	if err := h.Store.AddUser(t.Context(), "dan", "danpw", adapters.RoleUser); err != nil {
		t.Fatal(err)
	}
	return h, "http://" + loopback(t, h.Addr(t, "rest")) + "/api/v1/history/"
}

// TestHistoryOverREST publishes readings over MQTT (paho) and reads them
// back over REST as JSON and CSV, plain and downsampled, as a user with
// the read right; one without it, or without credentials, is refused.
func TestHistoryOverREST(t *testing.T) {
	t.Parallel()
	h, base := startHistoryHub(t)
	pubc := dialMQTT(t, loopback(t, h.Addr(t, "mqtt.mqtt")), "sensor1", "admin", "adminpw", true)
	for i := range 10 {
		pubc.publish(t, "home/t", 1, false, fmt.Sprint(20+i))
		pubc.publish(t, "home/env", 1, false, fmt.Sprintf(`{"temp":%d.5,"air":{"co2":%d}}`, i, 400+i))
	}
	pubc.publish(t, "secret/x", 1, false, "42")
	pubc.publish(t, "home/text", 1, false, "not a number")

	var doc struct {
		Topic  string `json:"topic"`
		Series []struct {
			Field  string           `json:"field"`
			Points []map[string]any `json:"points"`
		} `json:"series"`
	}
	eventually(t, "10 points of home/t over REST", func() bool {
		code, body, _ := historyGet(t, base+"home/t", "dan", "danpw", "")
		if code != http.StatusOK {
			return false
		}
		if err := json.Unmarshal([]byte(body), &doc); err != nil {
			t.Fatalf("history JSON %s: %v", body, err)
		}
		return len(doc.Series) == 1 && len(doc.Series[0].Points) == 10
	})
	if doc.Topic != "home/t" || doc.Series[0].Field != "value" {
		t.Fatalf("history %+v; want topic home/t, field value", doc)
	}
	var prev time.Time
	for i, p := range doc.Series[0].Points {
		keys := make([]string, 0, len(p))
		for k := range p {
			keys = append(keys, k)
		}
		if len(keys) != 2 || p["value"] != float64(20+i) {
			t.Fatalf("point %d = %v; want exactly time and value %d", i, p, 20+i)
		}
		at, err := time.Parse(time.RFC3339Nano, p["time"].(string))
		if err != nil || at.Before(prev) {
			t.Fatalf("point %d time %v (%v): want RFC 3339, oldest first", i, p["time"], err)
		}
		prev = at
	}

	eventually(t, "home/env's two series", func() bool {
		code, body, _ := historyGet(t, base+"home/env?field=air.co2", "alice", "alicepw", "")
		return code == http.StatusOK && strings.Count(body, `"value":`) == 10 && strings.Contains(body, `"field":"air.co2"`) && !strings.Contains(body, `"temp"`)
	})

	// CSV, plain and with a step: one bucket holds all ten readings
	// (published within a second; a minute's bucket unless the minute
	// turned, then two).
	code, body, hdr := historyGet(t, base+"home/t?limit=3", "alice", "alicepw", "text/csv")
	if code != http.StatusOK || !strings.HasPrefix(hdr.Get("Content-Type"), "text/csv") {
		t.Fatalf("CSV: %d %s %s", code, hdr.Get("Content-Type"), body)
	}
	rows, err := csv.NewReader(strings.NewReader(body)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(rows[0], []string{"time", "field", "value"}) || len(rows) != 4 || rows[3][2] != "29" || rows[1][2] != "27" {
		t.Fatalf("CSV rows %v; want the header and the 3 newest, oldest first", rows)
	}
	code, body, _ = historyGet(t, base+"home/t?step=1h", "alice", "alicepw", "text/csv")
	rows, err = csv.NewReader(strings.NewReader(body)).ReadAll()
	if code != http.StatusOK || err != nil || !reflect.DeepEqual(rows[0], []string{"time", "field", "value", "min", "max", "count"}) {
		t.Fatalf("CSV with step: %d %v %v", code, rows, err)
	}
	total := 0
	for _, r := range rows[1:] {
		var n int
		fmt.Sscan(r[5], &n)
		total += n
	}
	if len(rows) < 2 || len(rows) > 3 || total != 10 {
		t.Fatalf("CSV buckets %v; want 1 or 2 buckets of 10 readings in all", rows)
	}
	code, body, _ = historyGet(t, base+"home/t?step=3600", "alice", "alicepw", "")
	if code != http.StatusOK || !strings.Contains(body, `"min":`) || !strings.Contains(body, `"max":`) || !strings.Contains(body, `"count":`) {
		t.Fatalf("JSON with step: %d %s", code, body)
	}

	since := prev.Add(-time.Nanosecond).Format(time.RFC3339Nano)
	code, body, _ = historyGet(t, base+"home/t?since="+since, "alice", "alicepw", "")
	if code != http.StatusOK || strings.Count(body, `"value":`) != 1 || !strings.Contains(body, `"value":29`) {
		t.Fatalf("since the last point: %d %s", code, body)
	}
	code, body, _ = historyGet(t, fmt.Sprintf("%shome/t?until=%d", base, prev.Add(-time.Hour).Unix()), "alice", "alicepw", "")
	if code != http.StatusOK || !strings.Contains(body, `"points":[]`) {
		t.Fatalf("until an hour before: %d %s", code, body)
	}

	eventually(t, "secret/x recorded", func() bool {
		code, _, _ := historyGet(t, base+"secret/x", "admin", "adminpw", "")
		return code == http.StatusOK
	})
	for _, tt := range []struct {
		name, path, user, pass string
		code                   int
		msg                    string
	}{
		{"denied by ACL", "secret/x", "dan", "danpw", http.StatusForbidden, ""},
		{"no credentials off loopback", "home/t", "", "", http.StatusUnauthorized, ""},
		{"bad password", "home/t", "dan", "nope", http.StatusUnauthorized, ""},
		{"no history", "nothing/here", "alice", "alicepw", http.StatusNotFound, "no"},
		{"text has no history", "home/text", "alice", "alicepw", http.StatusNotFound, ""},
		{"unknown field", "home/t?field=nope", "alice", "alicepw", http.StatusNotFound, "nope"},
		{"a filter is no topic", "home/%2B", "alice", "alicepw", http.StatusBadRequest, ""},
		{"bad since", "home/t?since=yesterday", "alice", "alicepw", http.StatusBadRequest, "since"},
		{"bad until", "home/t?until=12:00", "alice", "alicepw", http.StatusBadRequest, "until"},
		{"until before since", "home/t?since=2000&until=1000", "alice", "alicepw", http.StatusBadRequest, "after since"},
		{"bad limit", "home/t?limit=0", "alice", "alicepw", http.StatusBadRequest, "limit"},
		{"bad step", "home/t?step=fast", "alice", "alicepw", http.StatusBadRequest, "step"},
		{"zero step", "home/t?step=0", "alice", "alicepw", http.StatusBadRequest, "step"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, body, _ := historyGet(t, base+tt.path, tt.user, tt.pass, "")
			if code != tt.code || !strings.Contains(body, `"error":`) || !strings.Contains(body, tt.msg) {
				t.Errorf("GET %s as %q = %d %s; want %d with an error naming %q", tt.path, tt.user, code, body, tt.code, tt.msg)
			}
		})
	}
	// A large limit is capped, not refused.
	if code, _, _ := historyGet(t, base+"home/t?limit=99999999", "alice", "alicepw", ""); code != http.StatusOK {
		t.Errorf("limit past the cap: %d; want 200", code)
	}
}

// TestHistoryRulesOff: a filter whose rule turns history off records
// nothing, and SenML published over REST lands under its resolved names.
func TestHistoryRulesOff(t *testing.T) {
	t.Parallel()
	off := false
	h, base := startHistoryHub(t, func(c *gateway.Config) {
		c.History.Rules = []history.Rule{{Filter: "noisy/#", Enabled: &off}}
	})
	rest := "http://" + loopback(t, h.Addr(t, "rest")) + "/api/v1/topics/"
	for _, p := range []struct{ topic, ct, body string }{
		{"noisy/a", "text/plain", "1"},
		{"lab/senml", "application/senml+json", `[{"bn":"lab:","n":"temp","u":"Cel","v":21.5},{"n":"hum","v":40}]`},
	} {
		if s, b := httpAsBodyType(t, rest+p.topic+"?qos=1", p.ct, p.body); s != http.StatusOK {
			t.Fatalf("publish %s: %d %s", p.topic, s, b)
		}
	}
	eventually(t, "lab/senml's series", func() bool {
		code, body, _ := historyGet(t, base+"lab/senml", "admin", "adminpw", "")
		return code == http.StatusOK && strings.Contains(body, `"field":"lab:hum"`) && strings.Contains(body, `"field":"lab:temp"`)
	})
	// lab/senml was published after noisy/a and is recorded: noisy/a
	// would be by now.
	if code, body, _ := historyGet(t, base+"noisy/a", "admin", "adminpw", ""); code != http.StatusNotFound {
		t.Errorf("noisy/a with history off: %d %s; want 404", code, body)
	}
}

func httpAsBodyType(t *testing.T, url, ct, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", ct)
	req.SetBasicAuth("admin", "adminpw")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestHistorySenMLCBOROverCoAP: a CoAP sensor POSTs SenML CBOR
// (Content-Format 112); its records are series read back over REST, and
// its archived payload reaches an XMPP client's MAM query as bytes.
func TestHistorySenMLCBOROverCoAP(t *testing.T) {
	t.Parallel()
	h := hubtest.Start(t, func(c *gateway.Config) { c.History.FlushInterval = 20 * time.Millisecond })
	pack, err := cbor.Marshal([]map[int]any{
		{-2: "urn:dev:mac:0024befffe804ff1:", -3: float64(time.Now().Add(-time.Minute).Unix()), 0: "temp", 1: "Cel", 2: 23.5},
		{0: "temp", 2: 23.7, 6: 30},
		{0: "hum", 1: "%RH", 2: 41},
	})
	if err != nil {
		t.Fatal(err)
	}
	cc := dialCoAP(t, h.Addr(t, "coap"))
	resp, err := cc.Post(ctx(t), "/ps/lab/node1", message.AppSenmlCbor, bytes.NewReader(pack))
	if err != nil || resp.Code() != codes.Changed {
		t.Fatalf("CoAP POST: %v %v", resp, err)
	}
	base := "http://" + h.Addr(t, "rest") + "/api/v1/history/lab/node1"
	var body string
	eventually(t, "the SenML series", func() bool {
		var code int
		code, body, _ = httpDo(t, http.MethodGet, base+"?field=urn:dev:mac:0024befffe804ff1:temp", "", "")
		return code == http.StatusOK && strings.Count(body, `"value":`) == 2
	})
	if !strings.Contains(body, `"value":23.5`) || !strings.Contains(body, `"value":23.7`) {
		t.Fatalf("temp series %s", body)
	}
	code, body, _ := httpDo(t, http.MethodGet, base+"?field=urn:dev:mac:0024befffe804ff1:hum", "", "")
	if code != http.StatusOK || !strings.Contains(body, `"value":41`) {
		t.Fatalf("hum series: %d %s", code, body)
	}
	alice := dialXMPP(t, h.Addr(t, "xmpp"), "alice", "alicepw")
	p := queryMAM(t, alice, "lab.node1@topics.localhost", "c1", "", "")
	if len(p.bodies) != 1 || !strings.Contains(p.bodies[0], "application/senml+cbor") {
		t.Fatalf("MAM of a CBOR reading: %+v; want one message whose body names its type", p)
	}
}

package rest

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/store"
)

// startAuthHub starts a hub on a non-loopback listener (so credentials are
// required) with an admin and a user.
func startAuthHub(t *testing.T) *testHub {
	t.Helper()
	h := startHub(t, hubOpts{addr: "0.0.0.0:0"})
	ctx := context.Background()
	for _, u := range []struct{ name, pw, role string }{
		{"admin", "adminpw", adapters.RoleAdmin},
		{"alice", "alicepw", adapters.RoleUser},
	} {
		if err := h.st.AddUser(ctx, u.name, u.pw, u.role); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

func TestAuthRefusals(t *testing.T) {
	t.Parallel()
	h := startAuthHub(t)
	tests := []struct {
		name, method, path, auth, body string
		status                         int
		msg                            string
	}{
		{"no credentials", "POST", "/api/v1/topics/a", "", "x", 401, "authentication required"},
		{"wrong password", "POST", "/api/v1/topics/a", "alice:nope", "x", 401, "bad username or password"},
		{"unknown user", "GET", "/api/v1/topics/a", "bob:pw", "", 401, "bad username or password"},
		{"bad token", "GET", "/api/v1/topics/a", "Bearer nonsense", "", 401, "token"},
		{"user lists users", "GET", "/api/v1/users", "alice:alicepw", "", 403, "not an admin"},
		{"user adds device", "POST", "/api/v1/devices", "alice:alicepw", `{"id":"d"}`, 403, "not an admin"},
		{"user reads $hub", "GET", "/api/v1/topics/$hub/devices/d/presence", "alice:alicepw", "", 403, "not authorized"},
		{"user subscribes $hub", "GET", "/api/v1/subscribe?filter=$hub/%23", "alice:alicepw", "", 403, "not authorized"},
		{"no credentials subscribe", "GET", "/api/v1/subscribe?filter=a", "", "", 401, "authentication required"},
	}
	for _, tt := range tests {
		s, hdr, b := h.do(tt.method, tt.path, tt.auth, "text/plain", tt.body)
		if s != tt.status {
			t.Errorf("%s: %d %s, want %d", tt.name, s, b, tt.status)
			continue
		}
		if msg := errorOf(t, b); !strings.Contains(msg, tt.msg) {
			t.Errorf("%s: message %q does not say %q", tt.name, msg, tt.msg)
		}
		if s == 401 && len(hdr.Values("WWW-Authenticate")) != 2 {
			t.Errorf("%s: WWW-Authenticate %q", tt.name, hdr.Values("WWW-Authenticate"))
		}
	}
	// Open endpoints stay open.
	for _, p := range []string{"/healthz", "/api/v1/openapi.json"} {
		if s, _, _ := h.do("GET", p, "", "", ""); s != 200 {
			t.Errorf("%s without credentials: %d", p, s)
		}
	}
}

func TestTokensAndACL(t *testing.T) {
	t.Parallel()
	h := startAuthHub(t)
	// Token from body credentials.
	s, _, b := h.do("POST", "/api/v1/tokens", "", "application/json", `{"name":"alice","password":"alicepw","ttl":"1h"}`)
	var tok tokenResponse
	if s != 201 || json.Unmarshal([]byte(b), &tok) != nil || tok.Token == "" || tok.User != "alice" || tok.Expires == nil {
		t.Fatalf("create token: %d %s", s, b)
	}
	bearer := "Bearer " + tok.Token
	if s, _, b := h.do("POST", "/api/v1/topics/rooms/1", bearer, "text/plain", "hi"); s != 202 {
		t.Fatalf("publish with token: %d %s", s, b)
	}
	// Token from basic auth: "0s" is the longest allowed, the cap.
	s, _, b = h.do("POST", "/api/v1/tokens", "admin:adminpw", "application/json", `{"ttl":"0s"}`)
	var adm tokenResponse
	if s != 201 || json.Unmarshal([]byte(b), &adm) != nil || adm.User != "admin" || adm.Expires == nil ||
		time.Until(*adm.Expires) > DefaultMaxTokenTTL || time.Until(*adm.Expires) < DefaultMaxTokenTTL-time.Hour {
		t.Fatalf("admin token: %d %s", s, b)
	}
	adminBearer := "Bearer " + adm.Token
	// A user's token does not mint tokens; an admin's does, for a named
	// user too; longer lives are capped.
	if s, _, b := h.do("POST", "/api/v1/tokens", bearer, "application/json", `{"ttl":"1h"}`); s != 403 || !strings.Contains(errorOf(t, b), "minted with the password") {
		t.Errorf("token minted by a user's token: %d %s", s, b)
	}
	if s, _, b := h.do("POST", "/api/v1/tokens", "", "application/json", `{"name":"alice"}`); s != 401 || !strings.Contains(errorOf(t, b), "password") {
		t.Errorf("token for a name without password: %d %s", s, b)
	}
	var minted tokenResponse
	s, _, b = h.do("POST", "/api/v1/tokens", adminBearer, "application/json", `{"name":"alice","ttl":"100000h"}`)
	if s != 201 || json.Unmarshal([]byte(b), &minted) != nil || minted.User != "alice" || minted.Expires == nil ||
		time.Until(*minted.Expires) > DefaultMaxTokenTTL {
		t.Errorf("admin mints for alice: %d %s", s, b)
	}
	if s, _, b := h.do("POST", "/api/v1/tokens", adminBearer, "application/json", `{"name":"nobody"}`); s != 404 {
		t.Errorf("admin mints for an unknown user: %d %s", s, b)
	}
	for _, tt := range []struct{ body, auth, msg string }{
		{`{"name":"alice","password":"x"}`, "", "bad username or password"},
		{``, "", "authentication required"},
		{`{"ttl":"forever"}`, "alice:alicepw", "ttl"},
		{`{"name":"alice","password":"alicepw","extra":1}`, "", `unknown field "extra"`},
	} {
		s, _, b := h.do("POST", "/api/v1/tokens", tt.auth, "application/json", tt.body)
		if s/100 != 4 || !strings.Contains(errorOf(t, b), tt.msg) {
			t.Errorf("token %s: %d %s", tt.body, s, b)
		}
	}
	// alice's rules deny publishing under rooms/2 and allow the rest of
	// rooms/; having rules, she may publish nothing else.
	rules := `[{"action":"publish","filter":"rooms/2/#","allow":false},{"action":"publish","filter":"rooms/#","allow":true}]`
	if s, _, b := h.do("PUT", "/api/v1/users/alice/acl", adminBearer, "application/json", rules); s != 200 {
		t.Fatalf("put acl: %d %s", s, b)
	}
	if s, _, b := h.do("GET", "/api/v1/users/alice/acl", adminBearer, "", ""); s != 200 || !strings.Contains(b, "rooms/2/#") {
		t.Fatalf("get acl: %d %s", s, b)
	}
	if s, _, b := h.do("POST", "/api/v1/topics/rooms/2/x", bearer, "text/plain", "x"); s != 403 {
		t.Fatalf("publish against the ACL: %d %s", s, b)
	}
	if s, _, b := h.do("POST", "/api/v1/topics/rooms/3", bearer, "text/plain", "x"); s != 202 {
		t.Fatalf("publish beside the ACL: %d %s", s, b)
	}
	if s, _, b := h.do("POST", "/api/v1/topics/other/3", bearer, "text/plain", "x"); s != 403 {
		t.Fatalf("publish that no rule allows: %d %s", s, b)
	}
	for _, bad := range []string{`[{"action":"read","filter":"a","allow":true}]`, `[{"action":"all","filter":"a/#/b","allow":true}]`, `{"action":"all"}`} {
		if s, _, b := h.do("PUT", "/api/v1/users/alice/acl", adminBearer, "application/json", bad); s != 400 {
			t.Errorf("bad rules %s: %d %s", bad, s, b)
		}
	}
	if s, _, _ := h.do("PUT", "/api/v1/users/nobody/acl", adminBearer, "application/json", "[]"); s != 404 {
		t.Errorf("acl of unknown user: %d", s)
	}
	// Revoking: alice may not revoke admin's token, but her own.
	if s, _, _ := h.do("DELETE", "/api/v1/tokens/"+adm.Token, bearer, "", ""); s != 403 {
		t.Errorf("alice revokes admin's token: %d", s)
	}
	if s, _, b := h.do("DELETE", "/api/v1/tokens/"+tok.Token, bearer, "", ""); s != 204 {
		t.Fatalf("revoke: %d %s", s, b)
	}
	if s, _, _ := h.do("GET", "/api/v1/topics/rooms/1", bearer, "", ""); s != 401 {
		t.Errorf("revoked token still works: %d", s)
	}
}

func TestUsersAdmin(t *testing.T) {
	t.Parallel()
	h := startAuthHub(t)
	const adm = "admin:adminpw"
	if s, _, b := h.do("POST", "/api/v1/users", adm, "application/json", `{"name":"carol","password":"pw1","role":"user"}`); s != 201 || !strings.Contains(b, `"carol"`) {
		t.Fatalf("add user: %d %s", s, b)
	}
	if s, _, b := h.do("POST", "/api/v1/users", adm, "application/json", `{"name":"carol","password":"pw1"}`); s != 409 {
		t.Fatalf("add user twice: %d %s", s, b)
	}
	tests := []struct{ body, msg string }{
		{`{"name":"dave","password":"pw","role":"root"}`, "role"},
		{`{"name":"a/b","password":"pw"}`, "name"},
		{`{"name":"dave"}`, "password"},
		{`{"name":"dave","password":"pw"`, "invalid JSON"},
		{`{"name":"dave","password":42}`, "field password: expected string"},
		{`{"name":"dave","password":"pw","admin":true}`, `unknown field "admin"`},
		{`{"name":"dave","password":"pw"} {}`, "after the JSON value"},
		{``, "empty body"},
		{`[1,2`, "invalid JSON"},
		{`{"name": "dave", "password": "pw",}`, "syntax error at byte"},
	}
	for _, tt := range tests {
		s, _, b := h.do("POST", "/api/v1/users", adm, "application/json", tt.body)
		if s != 400 || !strings.Contains(errorOf(t, b), tt.msg) {
			t.Errorf("add user %s: %d %s, want 400 saying %q", tt.body, s, b, tt.msg)
		}
	}
	s, _, b := h.do("GET", "/api/v1/users", adm, "", "")
	if s != 200 || !strings.Contains(b, `"carol"`) || !strings.Contains(b, `"alice"`) {
		t.Fatalf("list users: %d %s", s, b)
	}
	if strings.Contains(b, "pw1") {
		t.Fatal("list shows a password")
	}
	// The new user logs in.
	if s, _, _ := h.do("GET", "/api/v1/topics/x", "carol:pw1", "", ""); s != 404 {
		t.Fatalf("carol reads: %d", s)
	}
	if s, _, _ := h.do("DELETE", "/api/v1/users/carol", adm, "", ""); s != 204 {
		t.Fatalf("delete user: %d", s)
	}
	if s, _, _ := h.do("DELETE", "/api/v1/users/carol", adm, "", ""); s != 404 {
		t.Fatalf("delete user twice: %d", s)
	}
	if s, _, _ := h.do("GET", "/api/v1/topics/x", "carol:pw1", "", ""); s != 401 {
		t.Fatalf("deleted user still logs in: %d", s)
	}
}

// SSE clients that cannot set headers pass the token as access_token.
func TestSSEWithAccessToken(t *testing.T) {
	t.Parallel()
	h := startAuthHub(t)
	_, _, b := h.do("POST", "/api/v1/tokens", "alice:alicepw", "", "")
	var tok tokenResponse
	if err := json.Unmarshal([]byte(b), &tok); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, resp := h.sseStream(ctx, "filter=t/1&access_token="+tok.Token, "")
	if events == nil {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if s, _, b := h.do("POST", "/api/v1/topics/t/1", "alice:alicepw", "text/plain", "via curl"); s != http.StatusAccepted {
		t.Fatalf("publish %d %s", s, b)
	}
	ev := nextMessage(t, events)
	if !strings.Contains(ev.data, `"payload":"via curl"`) || !strings.Contains(ev.data, `"principal":"alice"`) {
		t.Fatalf("event %+v", ev)
	}
}

// Commands need a command rule for the device (admins always may): a
// device may not command another device or itself, a user only the
// devices a rule names, and a topic rule grants no command.
func TestCommandAccess(t *testing.T) {
	t.Parallel()
	h := startAuthHub(t)
	ctx := context.Background()
	for _, id := range []string{"d1", "d2"} {
		if err := h.reg.Add(ctx, store.Device{ID: id}, id+"pw"); err != nil {
			t.Fatal(err)
		}
	}
	rules := []adapters.ACLRule{{Action: "command", Filter: "d1", Allow: true}, {Action: "all", Filter: "#", Allow: true}}
	if err := h.st.SetACL(ctx, "alice", rules); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		auth, path string
		status     int
	}{
		{"d1:d1pw", "/api/v1/devices/d2/commands/x", 403},
		{"alice:alicepw", "/api/v1/devices/d2/commands/x", 403},
		{"alice:alicepw", "/api/v1/devices/d1/commands/x", 503},
		{"admin:adminpw", "/api/v1/devices/d2/commands/x", 503},
		{"d1:d1pw", "/api/v1/devices/d1/commands/x", 403},
		{"", "/api/v1/devices/d1/commands/x", 401},
		{"d1:d1pw", "/api/v1/devices/d1", 403},
	}
	for _, tt := range tests {
		method := "POST"
		if !strings.Contains(tt.path, "commands") {
			method = "GET"
		}
		if s, _, b := h.do(method, tt.path, tt.auth, "application/json", "{}"); s != tt.status {
			t.Errorf("%s %s: %d %s, want %d", tt.auth, tt.path, s, b, tt.status)
		}
	}
}

func TestAdminNotFounds(t *testing.T) {
	t.Parallel()
	h := startAuthHub(t)
	const adm = "admin:adminpw"
	for _, tt := range []struct{ method, path string }{
		{"GET", "/api/v1/users/nobody/acl"},
		{"DELETE", "/api/v1/users/nobody"},
		{"DELETE", "/api/v1/tokens/nosuchtoken"},
	} {
		if s, _, b := h.do(tt.method, tt.path, adm, "", ""); s != 404 {
			t.Errorf("%s %s: %d %s", tt.method, tt.path, s, b)
		} else {
			errorOf(t, b)
		}
	}
	if s, _, b := h.do("GET", "/api/v1/users/alice/acl", adm, "", ""); s != 200 || strings.TrimSpace(b) != "[]" {
		t.Errorf("empty acl: %d %s", s, b)
	}
	if s, _, b := h.do("GET", "/api/v1/users", "Basic", "", ""); s != 401 {
		t.Errorf("unsupported scheme: %d %s", s, b)
	}
}

// TestMetricsOffLoopback: /metrics on a listener that is not loopback-only
// needs credentials, even with allow_anonymous, unless public_metrics.
func TestMetricsOffLoopback(t *testing.T) {
	t.Parallel()
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("hub_up 1\n")) })
	tests := []struct {
		name   string
		opts   hubOpts
		auth   string
		status int
	}{
		{"loopback, anonymous", hubOpts{metrics: metrics}, "", 200},
		{"public listener, anonymous", hubOpts{addr: "0.0.0.0:0", metrics: metrics}, "", 401},
		{"allow_anonymous, anonymous", hubOpts{addr: "0.0.0.0:0", metrics: metrics, allowAnonymous: true}, "", 401},
		{"public listener, wrong password", hubOpts{addr: "0.0.0.0:0", metrics: metrics}, "alice:nope", 401},
		{"public listener, user", hubOpts{addr: "0.0.0.0:0", metrics: metrics}, "alice:alicepw", 200},
		{"public_metrics, anonymous", hubOpts{addr: "0.0.0.0:0", metrics: metrics, publicMetrics: true}, "", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := startHub(t, tt.opts)
			if err := h.st.AddUser(context.Background(), "alice", "alicepw", adapters.RoleUser); err != nil {
				t.Fatal(err)
			}
			s, _, b := h.do("GET", "/metrics", tt.auth, "", "")
			if s != tt.status {
				t.Fatalf("status %d %s, want %d", s, b, tt.status)
			}
			if s == 200 && !strings.Contains(b, "hub_up 1") {
				t.Errorf("body %q", b)
			}
		})
	}
}

// TestOriginForAdminsOnly: a reader learns which protocol a value came
// from, but the publisher's client id and principal only as an admin.
func TestOriginForAdminsOnly(t *testing.T) {
	t.Parallel()
	h := startAuthHub(t)
	if s, _, b := h.do("POST", "/api/v1/topics/rooms/1?retain=true&qos=1", "admin:adminpw", "text/plain", "21"); s/100 != 2 {
		t.Fatalf("publish: %d %s", s, b)
	}
	for _, tt := range []struct {
		auth   string
		shown  bool
		filter bool
	}{
		{"admin:adminpw", true, false}, {"alice:alicepw", false, false},
		{"admin:adminpw", true, true}, {"alice:alicepw", false, true},
	} {
		path := "/api/v1/topics/rooms/1"
		if tt.filter {
			path = "/api/v1/topics/rooms/%2B"
		}
		s, hdr, b := h.do("GET", path, tt.auth, "", "")
		if s != 200 {
			t.Fatalf("%s GET %s: %d %s", tt.auth, path, s, b)
		}
		var got bool
		if tt.filter {
			var es []EnvelopeJSON
			if err := json.Unmarshal([]byte(b), &es); err != nil || len(es) != 1 || es[0].Origin.Protocol != "rest" {
				t.Fatalf("%s: %s (%v)", tt.auth, b, err)
			}
			got = es[0].Origin.Principal == "admin"
		} else {
			if hdr.Get(HeaderOriginProtocol) != "rest" {
				t.Errorf("%s: protocol header %q", tt.auth, hdr.Get(HeaderOriginProtocol))
			}
			got = hdr.Get(HeaderOriginUser) == "admin"
		}
		if got != tt.shown {
			t.Errorf("%s GET %s: principal shown %v, want %v (%v %s)", tt.auth, path, got, tt.shown, hdr, b)
		}
	}
}

package rest

import (
	"context"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hubsmith/hub/broker"
)

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// TestDeleteUserEndsStreams: deleting a user ends its SSE stream and its
// WebSocket (close code 1008) at once; another user's stream goes on.
func TestDeleteUserEndsStreams(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOpts{})
	ctx := context.Background()
	for _, u := range []string{"alice", "bob"} {
		if err := h.st.AddUser(ctx, u, u+"pw", "user"); err != nil {
			t.Fatal(err)
		}
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	aliceSSE, _ := h.sseStream(sctx, "filter=x/%23", basic("alice", "alicepw"))
	bobSSE, _ := h.sseStream(sctx, "filter=x/%23", basic("bob", "bobpw"))
	if aliceSSE == nil || bobSSE == nil {
		t.Fatal("streams refused")
	}
	wsURL := "ws" + strings.TrimPrefix(h.base, "http") + "/api/v1/subscribe?filter=x/%23"
	ws, _, err := websocket.Dial(sctx, wsURL, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {basic("alice", "alicepw")}}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	wsErr := make(chan error, 1)
	go func() {
		_, _, err := ws.Read(sctx)
		wsErr <- err
	}()

	if code, _, body := h.do(http.MethodDelete, "/api/v1/users/alice", "", "", ""); code != http.StatusNoContent {
		t.Fatalf("delete: %d %s", code, body)
	}
	deadline := time.After(2 * time.Second)
	for open := true; open; {
		select {
		case _, open = <-aliceSSE:
		case <-deadline:
			t.Fatal("alice's SSE stream still open 2 s after the deletion")
		}
	}
	select {
	case err := <-wsErr:
		if websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
			t.Fatalf("websocket ended with %v, want close 1008", err)
		}
	case <-deadline:
		t.Fatal("alice's WebSocket still open 2 s after the deletion")
	}
	publishOnBus(t, h, &broker.Envelope{Topic: "x/y", Payload: []byte("1")})
	if ev := nextMessage(t, bobSSE); !strings.Contains(ev.data, `"x/y"`) {
		t.Fatalf("bob's stream: %+v", ev)
	}
}

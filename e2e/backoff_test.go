package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"
	"mellium.im/sasl"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/gateway"
	"github.com/hubsmith/hub/hubtest"
)

// login outcomes as each protocol tells them.
const (
	loginOK        = "ok"
	loginBad       = "bad credentials"
	loginThrottled = "backing off"
	// loginRefused is a refusal that does not say which of the two
	// (XMPP says not-authorized to both).
	loginRefused = "refused"
)

// TestLoginBackoff: in every protocol, on listeners bound to 0.0.0.0, a
// client that fails its logins more than the free five times from one
// address backs off: its next logins, even with the right password, are
// refused unchecked with the protocol's code for it, a back-off event is
// published on $hub/security/backoff and counted, and once the wait is over
// the right password gets in again.
func TestLoginBackoff(t *testing.T) {
	t.Parallel()
	type attempt func(t *testing.T, h *hubtest.Hub, user, pass string) string
	tests := []struct {
		protocol string
		try      attempt
		// throttled is what a refused login with the right password says.
		throttled string
	}{
		{broker.ProtoMQTT, mqttLogin, loginThrottled},
		{broker.ProtoREST, restLogin, loginThrottled},
		{broker.ProtoCoAP, coapLogin, loginThrottled},
		{broker.ProtoXMPP, xmppLogin, loginRefused},
	}
	for _, tt := range tests {
		t.Run(tt.protocol, func(t *testing.T) {
			t.Parallel()
			h := hubtest.Start(t, func(c *gateway.Config) {
				c.MQTT.Addr, c.CoAP.Addr, c.HTTP.Addr, c.XMPP.Addr = "0.0.0.0:0", "0.0.0.0:0", "0.0.0.0:0", "0.0.0.0:0"
				c.Security.LoginBackoff = adapters.GuardConfig{Free: 5, Base: 300 * time.Millisecond, Max: time.Second}
			})
			events := make(chan adapters.LoginEvent, 16)
			sub, err := h.Bus.Subscribe(t.Context(), broker.SubscribeOptions{Filters: []string{adapters.SecurityTopic}},
				func(_ context.Context, e *broker.Envelope) error {
					var ev adapters.LoginEvent
					if json.Unmarshal(e.Payload, &ev) == nil {
						select {
						case events <- ev:
						default:
						}
					}
					return nil
				})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = sub.Unsubscribe() })

			if got := tt.try(t, h, "alice", "alicepw"); got != loginOK {
				t.Fatalf("right password: %s", got)
			}
			want := loginBad
			if tt.throttled == loginRefused {
				want = loginRefused
			}
			for i := range 6 {
				if got := tt.try(t, h, "alice", "wrong"); got != want {
					t.Fatalf("wrong password %d: %s, want %s", i, got, want)
				}
			}
			if got := tt.try(t, h, "alice", "alicepw"); got != tt.throttled {
				t.Fatalf("right password while backing off: %s, want %s", got, tt.throttled)
			}
			select {
			case ev := <-events:
				if ev.Protocol != tt.protocol || ev.Failures != 6 || ev.RetryInMS != 300 || ev.Remote != "127.0.0.1" && ev.Name != "alice" {
					t.Errorf("event %+v", ev)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no back-off event on " + adapters.SecurityTopic)
			}
			failures, throttled := h.Auth.Guard().Stats()
			if failures[tt.protocol] < 6 || throttled[tt.protocol] < 1 {
				t.Errorf("stats: failures %v throttled %v", failures, throttled)
			}
			// The wait ends (300 ms for the first step past the free ones).
			eventually(t, "the right password gets in after the back-off", func() bool {
				return tt.try(t, h, "alice", "alicepw") == loginOK
			})
		})
	}
}

func mqttLogin(t *testing.T, h *hubtest.Hub, user, pass string) string {
	t.Helper()
	switch code := mqttConnack(t, loopback(t, h.Addr(t, "mqtt.mqtt")), nil, "guess", user, pass); code {
	case 0:
		return loginOK
	case 0x86:
		return loginBad
	case 0x9F:
		return loginThrottled
	default:
		t.Fatalf("mqtt connack 0x%02x", code)
	}
	return ""
}

func restLogin(t *testing.T, h *hubtest.Hub, user, pass string) string {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+loopback(t, h.Addr(t, "rest"))+"/api/v1/topics/x", nil)
	req.SetBasicAuth(user, pass)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotFound:
		return loginOK
	case http.StatusUnauthorized:
		return loginBad
	case http.StatusTooManyRequests:
		if resp.Header.Get("Retry-After") == "" {
			t.Error("429 without Retry-After")
		}
		return loginThrottled
	}
	t.Fatalf("rest status %d", resp.StatusCode)
	return ""
}

func coapLogin(t *testing.T, h *hubtest.Hub, user, pass string) string {
	t.Helper()
	cc := dialCoAP(t, loopback(t, h.Addr(t, "coap.coap")))
	defer cc.Close()
	resp, err := cc.Get(ctx(t), "/ps/x", coapQuery("u="+user), coapQuery("p="+pass))
	if err != nil {
		t.Fatal(err)
	}
	switch resp.Code() {
	case codes.NotFound:
		return loginOK
	case codes.Unauthorized:
		return loginBad
	case codes.TooManyRequests:
		return loginThrottled
	}
	t.Fatalf("coap code %v", resp.Code())
	return ""
}

func xmppLogin(t *testing.T, h *hubtest.Hub, user, pass string) string {
	t.Helper()
	err := xmppTry(t, loopback(t, h.Addr(t, "xmpp")), user, pass, sasl.ScramSha256)
	switch {
	case err == nil:
		return loginOK
	case strings.Contains(err.Error(), "not-authorized"):
		return loginRefused
	}
	t.Fatalf("xmpp login: %v", err)
	return ""
}

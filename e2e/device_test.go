package e2e

import (
	"net/http"
	"strings"
	"testing"

	piondtls "github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/options"

	"github.com/hubsmith/hub/gateway"
	"github.com/hubsmith/hub/hubtest"
)

// TestCoAPDeviceOverDTLS: a device registered over REST with a PSK logs in
// over DTLS, publishes under its own tree (an MQTT subscriber sees it), is
// refused elsewhere, and shows up online in the registry.
func TestCoAPDeviceOverDTLS(t *testing.T) {
	h := hubtest.Start(t, func(c *gateway.Config) { c.CoAP.DTLSAddr = "127.0.0.1:0" })
	base := "http://" + h.Addr(t, "rest")
	code, body, _ := httpDo(t, http.MethodPost, base+"/api/v1/devices", "application/json",
		`{"id":"therm1","name":"Thermometer","protocol":"coap","psk":"746865726d6b6579"}`)
	if code != http.StatusCreated && code != http.StatusOK {
		t.Fatalf("create device = %d %s", code, body)
	}
	mq := dialMQTT(t, h.Addr(t, "mqtt.mqtt"), "dash", "", "", true)
	mq.subscribe(t, "devices/#", 1)

	cc, err := dtls.Dial(h.Addr(t, "coap.coaps"), dtls.NewDTLSClientOptions(
		piondtls.WithPSK(func([]byte) ([]byte, error) { return []byte("thermkey"), nil }),
		piondtls.WithPSKIdentityHint([]byte("therm1")),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8),
	), options.WithErrors(func(error) {}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close(); <-cc.Done() })
	resp, err := cc.Post(ctx(t), "/ps/devices/therm1/temp", message.TextPlain, strings.NewReader("19.5"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Code() != codes.Changed {
		t.Fatalf("DTLS POST in its own tree = %v", resp.Code())
	}
	if m := mq.next(t); m.Topic != "devices/therm1/temp" || m.Payload != "19.5" {
		t.Fatalf("MQTT got %+v", m)
	}
	resp, err = cc.Post(ctx(t), "/ps/devices/other/temp", message.TextPlain, strings.NewReader("1"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Code() != codes.Forbidden {
		t.Fatalf("DTLS POST outside its tree = %v, want 4.03", resp.Code())
	}
	eventually(t, "CoAP device online", func() bool {
		_, body, _ := httpDo(t, http.MethodGet, base+"/api/v1/devices/therm1", "", "")
		return strings.Contains(body, `"online":true`)
	})
}

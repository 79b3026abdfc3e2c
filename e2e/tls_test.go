package e2e

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"mellium.im/sasl"

	"github.com/hubsmith/hub/gateway"
	"github.com/hubsmith/hub/hubtest"
)

// TestRequireTLS: with require_tls and every listener on 0.0.0.0,
// credentials in clear are refused in each protocol (MQTT 5 CONNACK 0x87,
// HTTP 403, CoAP 4.03, XMPP SASL before STARTTLS), while the TLS
// listeners (mqtts, https, STARTTLS) take them; without require_tls the
// hub warns at start about each listener where they could travel in
// clear.
func TestRequireTLS(t *testing.T) {
	t.Parallel()
	certFile, keyFile := hubtest.WriteCert(t)
	start := func(t *testing.T, require bool) (*hubtest.Hub, *hubtest.LogBuffer) {
		cfg := gateway.Defaults()
		cfg.DataDir = t.TempDir()
		cfg.ShutdownTimeout = 5 * time.Second
		cfg.MQTT.Addr, cfg.MQTT.TLSAddr = "0.0.0.0:0", "0.0.0.0:0"
		cfg.HTTP.Addr, cfg.HTTP.TLSAddr = "0.0.0.0:0", "0.0.0.0:0"
		cfg.CoAP.Addr, cfg.XMPP.Addr, cfg.XMPP.ProxyAddr = "0.0.0.0:0", "0.0.0.0:0", "127.0.0.1:0"
		cfg.TLS.CertFile, cfg.TLS.KeyFile = certFile, keyFile
		cfg.RequireTLS = require
		var logs hubtest.LogBuffer
		return hubtest.StartLogged(t, cfg, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))), &logs
	}

	t.Run("required", func(t *testing.T) {
		t.Parallel()
		h, _ := start(t, true)
		tlsConf := &tls.Config{InsecureSkipVerify: true}
		// MQTT: plain refused, mqtts taken.
		if code := mqttConnack(t, loopback(t, h.Addr(t, "mqtt.mqtt")), nil, "tls-check", "alice", "alicepw"); code != 0x87 {
			t.Errorf("MQTT with a password in clear: CONNACK 0x%02x, want 0x87", code)
		}
		if code := mqttConnack(t, loopback(t, h.Addr(t, "mqtt.mqtts")), tlsConf, "tls-check", "alice", "alicepw"); code != 0 {
			t.Errorf("MQTT over TLS: CONNACK 0x%02x, want 0", code)
		}
		// HTTP: plain refused, HTTPS taken; anonymous /healthz answers on both.
		httpsc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf}, Timeout: 10 * time.Second}
		for _, tt := range []struct {
			url    string
			client *http.Client
			status int
		}{
			{"http://" + loopback(t, h.Addr(t, "rest.http")) + "/api/v1/topics/x", http.DefaultClient, http.StatusForbidden},
			{"https://" + loopback(t, h.Addr(t, "rest.https")) + "/api/v1/topics/x", httpsc, http.StatusNotFound},
		} {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, tt.url, nil)
			req.SetBasicAuth("alice", "alicepw")
			resp, err := tt.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Errorf("GET %s with basic auth: %d, want %d", tt.url, resp.StatusCode, tt.status)
			}
		}
		resp, err := httpsc.Get("https://" + loopback(t, h.Addr(t, "rest.https")) + "/healthz")
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("https /healthz: %v %v", resp, err)
		}
		resp.Body.Close()
		// CoAP: query credentials over plain UDP refused.
		cc := dialCoAP(t, loopback(t, h.Addr(t, "coap.coap")))
		r, err := cc.Get(ctx(t), "/ps/x", coapQuery("u=alice"), coapQuery("p=alicepw"))
		if err != nil {
			t.Fatal(err)
		}
		if r.Code() != codes.Forbidden {
			t.Errorf("CoAP query credentials in clear: %v, want 4.03", r.Code())
		}
		// XMPP: SASL before STARTTLS is a policy violation; after it, in.
		conn, err := net.Dial("tcp", loopback(t, h.Addr(t, "xmpp")))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, _ = conn.Write([]byte(`<?xml version='1.0'?><stream:stream to='localhost' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>` +
			`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>biwsbj1hbGljZSxyPWFiYw==</auth>`))
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		var got strings.Builder
		buf := make([]byte, 4096)
		for !strings.Contains(got.String(), "</stream:stream>") {
			n, err := conn.Read(buf)
			got.Write(buf[:n])
			if err != nil {
				break
			}
		}
		if !strings.Contains(got.String(), "policy-violation") {
			t.Errorf("XMPP SASL before STARTTLS: %s", got.String())
		}
		if err := xmppTry(t, loopback(t, h.Addr(t, "xmpp")), "alice", "alicepw", sasl.Mechanism{}); err != nil {
			t.Errorf("XMPP with STARTTLS: %v", err)
		}
	})

	t.Run("warned", func(t *testing.T) {
		t.Parallel()
		h, logs := start(t, false)
		if code := mqttConnack(t, loopback(t, h.Addr(t, "mqtt.mqtt")), nil, "tls-check", "alice", "alicepw"); code != 0 {
			t.Errorf("MQTT in clear without require_tls: CONNACK 0x%02x", code)
		}
		l := logs.String()
		for _, key := range []string{"mqtt.addr", "http.addr", "coap.addr"} {
			if !strings.Contains(l, "credentials can travel in clear") || !strings.Contains(l, "listener="+key) {
				t.Errorf("no start warning for %s in:\n%s", key, l)
			}
		}
		if strings.Contains(l, "listener=xmpp") {
			t.Errorf("XMPP warned about, though it requires STARTTLS")
		}
	})
}

// mqttConnack connects as user over MQTT 5 (TLS when tc is set) with
// client id id and returns the CONNACK reason code.
func mqttConnack(t *testing.T, addr string, tc *tls.Config, id, user, pass string) byte {
	t.Helper()
	var conn net.Conn
	var err error
	if tc != nil {
		conn, err = tls.Dial("tcp", addr, tc)
	} else {
		conn, err = net.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	cctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	ca, err := c.Connect(cctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
		UsernameFlag: true, Username: user, PasswordFlag: true, Password: []byte(pass)})
	if ca == nil {
		t.Fatalf("mqtt connect %s: %v", addr, err)
	}
	if ca.ReasonCode == 0 {
		_ = c.Disconnect(&paho.Disconnect{})
	}
	return ca.ReasonCode
}

// TestReloadSwapsCertificate: a reload reads the TLS certificate files
// again; new handshakes get the new certificate, without a restart, and a
// pair that does not load is refused with the old one kept.
func TestReloadSwapsCertificate(t *testing.T) {
	t.Parallel()
	certFile, keyFile := hubtest.WriteCert(t)
	h := hubtest.Start(t, func(c *gateway.Config) {
		c.HTTP.TLSAddr = "127.0.0.1:0"
		c.TLS.CertFile, c.TLS.KeyFile = certFile, keyFile
	})
	serial := func() string {
		t.Helper()
		conn, err := tls.Dial("tcp", h.Addr(t, "rest.https"), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return string(conn.ConnectionState().PeerCertificates[0].Signature)
	}
	before := serial()
	c2, k2 := hubtest.WriteCert(t)
	for _, p := range [][2]string{{c2, certFile}, {k2, keyFile}} {
		b, err := os.ReadFile(p[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p[1], b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	changes, err := h.Reload(t.Context(), h.Config)
	if err != nil || !strings.Contains(strings.Join(changes, ";"), "tls: 1 certificate") {
		t.Fatalf("reload: %v %v", changes, err)
	}
	after := serial()
	if after == before {
		t.Fatal("the HTTPS listener still serves the old certificate after the reload")
	}
	if err := os.WriteFile(certFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Reload(t.Context(), h.Config); err == nil || !strings.Contains(err.Error(), "running configuration is kept") {
		t.Fatalf("reload with a broken certificate: %v", err)
	}
	if serial() != after {
		t.Fatal("a refused reload changed the certificate")
	}
}

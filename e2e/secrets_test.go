package e2e

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	piondtls "github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/options"
	"mellium.im/sasl"
	mxmpp "mellium.im/xmpp"
	"mellium.im/xmpp/jid"

	"github.com/hubsmith/hub/gateway"
	"github.com/hubsmith/hub/hubtest"
)

// TestLogsCarryNoSecrets: with logging at debug level and listeners on
// 0.0.0.0, logins with right and wrong passwords in every protocol, a
// token minted, used (header and ?access_token=) and deleted, a device
// made with a password and a PSK and logging in over DTLS: the log holds
// none of the passwords, tokens or keys.
func TestLogsCarryNoSecrets(t *testing.T) {
	t.Parallel()
	var logs hubtest.LogBuffer
	cfg := gateway.Defaults()
	cfg.DataDir = t.TempDir()
	cfg.MQTT.Addr, cfg.CoAP.Addr, cfg.HTTP.Addr, cfg.XMPP.Addr = "0.0.0.0:0", "0.0.0.0:0", "0.0.0.0:0", "0.0.0.0:0"
	cfg.CoAP.DTLSAddr, cfg.XMPP.ProxyAddr = "0.0.0.0:0", "127.0.0.1:0"
	cfg.ShutdownTimeout = 5 * time.Second
	h := hubtest.StartLogged(t, cfg, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	const (
		userPW   = "Sesame-user-pw-1"
		wrongPW  = "Sesame-wrong-pw-2"
		devPW    = "Sesame-device-pw-3"
		devKey   = "Sesame-psk-4"
		adminPW  = "adminpw"
		deviceID = "meter9"
	)
	secrets := []string{userPW, wrongPW, devPW, devKey, hex.EncodeToString([]byte(devKey))}
	base := "http://" + loopback(t, h.Addr(t, "rest"))
	if s, b := httpAsBody(t, http.MethodPost, base+"/api/v1/users", "admin", adminPW,
		`{"name":"carol","password":"`+userPW+`","role":"user"}`); s != http.StatusCreated {
		t.Fatalf("add user: %d %s", s, b)
	}
	if s, b := httpAsBody(t, http.MethodPost, base+"/api/v1/devices", "admin", adminPW,
		`{"id":"`+deviceID+`","protocol":"coap","password":"`+devPW+`","psk":"`+hex.EncodeToString([]byte(devKey))+`"}`); s != http.StatusCreated {
		t.Fatalf("add device: %d %s", s, b)
	}

	// REST: basic auth right and wrong, a token minted, used and deleted.
	for _, pw := range []string{userPW, wrongPW} {
		httpAs(t, http.MethodGet, base+"/api/v1/topics/x", "carol", pw)
	}
	s, body := httpAsBody(t, http.MethodPost, base+"/api/v1/tokens", "", "", `{"name":"carol","password":"`+userPW+`"}`)
	var tok struct{ Token string }
	if s != http.StatusCreated || json.Unmarshal([]byte(body), &tok) != nil || tok.Token == "" {
		t.Fatalf("token: %d %s", s, body)
	}
	secrets = append(secrets, tok.Token)
	for _, req := range []*http.Request{
		mustRequest(t, http.MethodGet, base+"/api/v1/topics/x", "Bearer "+tok.Token),
		mustRequest(t, http.MethodGet, base+"/api/v1/topics/x?access_token="+tok.Token, ""),
		mustRequest(t, http.MethodGet, base+"/api/v1/topics/x?access_token=not-"+tok.Token, ""),
		mustRequest(t, http.MethodDelete, base+"/api/v1/tokens/"+tok.Token, "Bearer "+tok.Token),
	} {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}

	// MQTT, right and wrong.
	for _, pw := range []string{userPW, wrongPW} {
		mqttLogin(t, h, "carol", pw)
	}
	// CoAP query credentials, right and wrong.
	for _, pw := range []string{userPW, wrongPW} {
		cc := dialCoAP(t, loopback(t, h.Addr(t, "coap.coap")))
		if _, err := cc.Get(ctx(t), "/ps/x", coapQuery("u=carol"), coapQuery("p="+pw)); err != nil {
			t.Fatal(err)
		}
	}
	// XMPP: SCRAM and PLAIN (inside TLS), right and wrong.
	for _, mech := range []sasl.Mechanism{sasl.ScramSha256, sasl.Plain} {
		for _, pw := range []string{userPW, wrongPW} {
			xmppTry(t, loopback(t, h.Addr(t, "xmpp")), "carol", pw, mech)
		}
	}
	// DTLS with the device's PSK, and with a wrong one.
	for _, key := range []string{devKey, "not-" + devKey} {
		cc, err := dtls.Dial(loopback(t, h.Addr(t, "coap.coaps")), dtls.NewDTLSClientOptions(
			piondtls.WithPSK(func([]byte) ([]byte, error) { return []byte(key), nil }),
			piondtls.WithPSKIdentityHint([]byte(deviceID)),
			piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8),
		), options.WithErrors(func(error) {}))
		if err == nil {
			c, cancel := context.WithTimeout(t.Context(), 3*time.Second)
			_, _ = cc.Get(c, "/ps/devices/"+deviceID+"/state")
			cancel()
			_ = cc.Close()
			<-cc.Done()
		}
	}
	eventually(t, "the logins are logged", func() bool {
		l := logs.String()
		return strings.Contains(l, "xmpp: authentication failed") && strings.Contains(l, "mqtt: connect refused") &&
			strings.Contains(l, "rest: request")
	})
	l := logs.String()
	for _, s := range secrets {
		if i := strings.Index(l, s); i >= 0 {
			line := l[strings.LastIndexByte(l[:i], '\n')+1:]
			if j := strings.IndexByte(line, '\n'); j >= 0 {
				line = line[:j]
			}
			t.Errorf("the log carries the secret %q: %s", s, line)
		}
	}
}

func mustRequest(t *testing.T, method, url, auth string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	return req
}

// xmppTry logs in over STARTTLS with mech and returns the error.
func xmppTry(t *testing.T, addr, user, pass string, mech sasl.Mechanism) error {
	if mech.Name == "" {
		mech = sasl.ScramSha256
	}
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	s, err := mxmpp.NewClientSession(c, jid.MustParse(user+"@localhost"), conn,
		mxmpp.StartTLS(&tls.Config{InsecureSkipVerify: true, ServerName: "localhost"}),
		mxmpp.SASL("", pass, mech), mxmpp.BindResource())
	if err == nil {
		_ = s.Close()
	}
	return err
}

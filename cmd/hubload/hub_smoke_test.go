package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/hubtest"
)

// startLoadHub starts a hub with users load0..load{n-1} (password loadpw)
// and returns it with its MQTT, XMPP and HTTP URLs.
func startLoadHub(t *testing.T, users int) (h *hubtest.Hub, mqttURL, xmppURL, httpURL string) {
	t.Helper()
	h = hubtest.Start(t)
	for i := range users {
		if err := h.Store.AddUser(context.Background(), fmt.Sprintf("load%d", i), "loadpw", adapters.RoleUser); err != nil {
			t.Fatal(err)
		}
	}
	return h, "tcp://" + h.Addr(t, "mqtt.mqtt"), "xmpp://" + h.Addr(t, "xmpp"), "http://" + h.Addr(t, "rest")
}

// TestSmokeHubXMPPAndSSE runs the XMPP chat, topic-JID and SSE modes
// against a real hub: every message must arrive once.
func TestSmokeHubXMPPAndSSE(t *testing.T) {
	_, mqttURL, xmppURL, httpURL := startLoadHub(t, 6)
	tests := []struct {
		name         string
		mode, url    string
		pubs, subs   int
		messages     int
		qos          byte
		fanout       bool
		wantExpected uint64
	}{
		{"chat pairs", "xmpp", xmppURL, 2, 2, 100, 0, false, 100},
		{"chat fan-in", "xmpp", xmppURL, 3, 1, 90, 0, false, 90},
		{"topic jid fan-out", "xmpp-topic", xmppURL, 1, 2, 50, 0, true, 100},
		{"topic jid qos1", "xmpp-topic", xmppURL, 1, 1, 50, 1, false, 50},
		{"sse qos0", "sse", httpURL, 1, 2, 50, 0, true, 100},
		{"sse qos1", "sse", httpURL, 2, 2, 50, 1, false, 50},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig(tc.mode, tc.url)
			c.mqttURL = mqttURL
			c.publishers, c.subscribers, c.messages, c.qos, c.fanout = tc.pubs, tc.subs, tc.messages, tc.qos, tc.fanout
			c.topic = "smoke/" + strings.ReplaceAll(tc.name, " ", "-") + "/%d"
			// Client ids of their own: a broker may still be ending the
			// previous case's connections of the same ids.
			c.clientPrefix = "smoke-" + strings.ReplaceAll(tc.name, " ", "-")
			c.domain, c.xmppUser, c.xmppPassword = "localhost", "load%d", "loadpw"
			c.textPayload = true
			if err := c.validate(); err != nil {
				t.Fatal(err)
			}
			tr, err := transportFor(c)
			if err != nil {
				t.Fatal(err)
			}
			r, err := runLoad(context.Background(), c, tr)
			if err != nil {
				t.Fatal(err)
			}
			checkClean(t, r, tc.wantExpected)
		})
	}
}

// TestSmokeHubIdleAndLogin opens idle sessions on a hub (this process) and
// logs in repeatedly.
func TestSmokeHubIdleAndLogin(t *testing.T) {
	_, mqttURL, xmppURL, _ := startLoadHub(t, 3)
	var out, errOut bytes.Buffer
	args := []string{"--mqtt-url", mqttURL, "--mqtt", "20", "--xmpp-url", xmppURL, "--xmpp", "4", "--xmpp-users", "2",
		"--pid", fmt.Sprint(os.Getpid()), "--settle", "1s", "--json"}
	if code := execute(context.Background(), append([]string{"idle"}, args...), &out, &errOut); code != 0 {
		t.Fatalf("idle: status %d: %s", code, errOut.String())
	}
	var ir IdleResult
	if err := json.Unmarshal(out.Bytes(), &ir); err != nil {
		t.Fatalf("idle JSON %q: %v", out.String(), err)
	}
	if ir.MQTT != 20 || ir.XMPP != 4 || ir.RSSBefore == 0 || ir.RSSAfter == 0 || ir.RSSPeak < ir.RSSAfter {
		t.Errorf("idle result %+v", ir)
	}

	out.Reset()
	errOut.Reset()
	args = []string{"--url", xmppURL, "--workers", "2", "--logins", "6", "--pid", fmt.Sprint(os.Getpid()), "--json"}
	if code := execute(context.Background(), append([]string{"login"}, args...), &out, &errOut); code != 0 {
		t.Fatalf("login: status %d: %s", code, errOut.String())
	}
	var lr LoginResult
	if err := json.Unmarshal(out.Bytes(), &lr); err != nil {
		t.Fatalf("login JSON %q: %v", out.String(), err)
	}
	if lr.Logins != 6 || lr.Failed != 0 || lr.Latency.Count != 6 || lr.LoginsPerS <= 0 || lr.Target == nil {
		t.Errorf("login result %+v", lr)
	}

	// A wrong password is a failed login, counted, not a crash.
	out.Reset()
	args = []string{"--url", xmppURL, "--workers", "1", "--logins", "1", "--xmpp-password", "wrong", "--json"}
	if code := execute(context.Background(), append([]string{"login"}, args...), &out, &errOut); code != 0 {
		t.Fatalf("login with a wrong password: status %d", code)
	}
	lr = LoginResult{}
	if err := json.Unmarshal(out.Bytes(), &lr); err != nil {
		t.Fatal(err)
	}
	if lr.Logins != 0 || lr.Failed != 1 || len(lr.Errors) != 1 {
		t.Errorf("login with a wrong password: %+v", lr)
	}
}

// TestMochiCommand runs the bare mochi broker and MQTT loads through it,
// with both clients.
func TestMochiCommand(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var out, errOut syncBuffer
	go func() { done <- execute(ctx, []string{"mochi", "--addr", addr}, &out, &errOut) }()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "listening on") {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("mochi did not start: %s %s", out.String(), errOut.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, client := range []string{mqttClientLean, mqttClientPaho} {
		for _, qos := range []byte{0, 1} {
			c := testConfig("mqtt", "tcp://"+addr)
			c.qos, c.mqttClient, c.subscribers, c.fanout = qos, client, 3, true
			c.clientPrefix = fmt.Sprintf("mochi-%s-%d", client, qos)
			r, err := runLoad(context.Background(), c, mqttTransport(c))
			if err != nil {
				t.Fatal(err)
			}
			checkClean(t, r, 300)
		}
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("mochi: status %d: %s", code, errOut.String())
	}
}

func TestModeRejects(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"chat fan-out", []string{"xmpp", "--subscribers", "2", "--fanout"}, "one to one"},
		{"chat more subscribers", []string{"xmpp", "--publishers", "1", "--subscribers", "2"}, "one to one"},
		{"chat qos1", []string{"xmpp", "--qos", "1"}, "plain stanzas"},
		{"xmpp user without %d", []string{"xmpp", "--xmpp-user", "bob"}, "must contain %d"},
		{"text size too small", []string{"sse", "--size", "40"}, "text header"},
		{"xmpp url scheme", []string{"xmpp", "--url", "tcp://127.0.0.1:5222"}, "want xmpp://"},
		{"idle nothing", []string{"idle", "--pid", "1"}, "want --mqtt or --xmpp"},
		{"idle no pid", []string{"idle", "--mqtt", "1"}, "--pid"},
		{"idle too many", []string{"idle", "--mqtt", "50001", "--pid", "1"}, "must be 0..50000"},
		{"idle remote", []string{"idle", "--mqtt", "1", "--pid", "1", "--mqtt-url", "tcp://192.0.2.1:1883"}, "not a loopback"},
		{"login workers", []string{"login", "--workers", "0"}, "--workers 0"},
		{"login url", []string{"login", "--url", "http://127.0.0.1:5222"}, "want xmpp://"},
		{"mochi remote", []string{"mochi", "--addr", "192.0.2.1:1883"}, "not a loopback"},
		{"mochi extra", []string{"mochi", "extra"}, "unexpected argument"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := execute(context.Background(), tc.args, &out, &errOut); code != 2 {
				t.Fatalf("status %d, want 2 (stderr %q)", code, errOut.String())
			}
			if !strings.Contains(errOut.String(), tc.want) {
				t.Errorf("stderr %q, want %q", errOut.String(), tc.want)
			}
		})
	}
}

func TestMQTTConnectPacket(t *testing.T) {
	tests := []struct {
		name, id, user, pass string
		want                 []byte
	}{
		{"anonymous", "c", "", "", []byte{0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 0, 0, 1, 'c'}},
		{"user and password", "c", "u", "p", []byte{0x10, 19, 0, 4, 'M', 'Q', 'T', 'T', 4, 0xc2, 0, 0, 0, 1, 'c', 0, 1, 'u', 0, 1, 'p'}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := mqttConnectPacket(tc.id, tc.user, tc.pass, 0); !bytes.Equal(got, tc.want) {
				t.Errorf("got % x, want % x", got, tc.want)
			}
		})
	}
	long := mqttConnectPacket(strings.Repeat("x", 200), "", "", 0)
	if long[1]&0x80 == 0 || len(long) != 2+1+12+200 {
		t.Errorf("a 200-byte id needs a two-byte length: % x (len %d)", long[:4], len(long))
	}
	for _, b := range [][]byte{{0x20, 2, 0, 5}, {0x30, 2, 0, 0}, {0x20, 2, 0}} {
		if checkConnack(b) == nil {
			t.Errorf("checkConnack(% x) accepted", b)
		}
	}
	if err := checkConnack([]byte{0x20, 2, 0, 0}); err != nil {
		t.Error(err)
	}
}

func TestTopicJID(t *testing.T) {
	tests := []struct{ topic, want string }{
		{"a/b/c", "a.b.c@topics.localhost"},
		{"v1.2/x y", `v1\2e2.x\20y@topics.localhost`},
		{"a@b/c:d", `a\40b.c\3ad@topics.localhost`},
	}
	for _, tc := range tests {
		if got := topicJID(tc.topic, "localhost"); got != tc.want {
			t.Errorf("topicJID(%q) = %q, want %q", tc.topic, got, tc.want)
		}
	}
}

func TestDecodeSSEData(t *testing.T) {
	tests := []struct {
		name, data string
		want       string
		wantErr    bool
	}{
		{"text", `{"payload":"hello"}`, "hello", false},
		{"base64", `{"payload":"aGk=","payload_encoding":"base64"}`, "hi", false},
		{"bad base64", `{"payload":"!!","payload_encoding":"base64"}`, "", true},
		{"unknown encoding", `{"payload":"x","payload_encoding":"rot13"}`, "", true},
		{"not json", `nope`, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeSSEData([]byte(tc.data))
			if (err != nil) != tc.wantErr || string(got) != tc.want {
				t.Errorf("decodeSSEData = %q, %v", got, err)
			}
		})
	}
}

func FuzzDecodeSSEData(f *testing.F) {
	f.Add([]byte(`{"payload":"aGk=","payload_encoding":"base64"}`))
	f.Add([]byte(`{"payload":"x"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = decodeSSEData(b)
	})
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

package crashtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"
	paho "github.com/eclipse/paho.mqtt.golang"
)

// mqtt5As is an MQTT 5 client logged in as user, for PUBACK reason codes.
func mqtt5As(t *testing.T, h *hubProc, id, user, pass string) *paho5.Client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", h.mqtt, ackTimeout)
	if err != nil {
		t.Fatal(err)
	}
	c := paho5.NewClient(paho5.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
	defer cancel()
	ca, err := c.Connect(ctx, &paho5.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
		UsernameFlag: true, Username: user, PasswordFlag: true, Password: []byte(pass)})
	if err != nil || ca.ReasonCode != 0 {
		t.Fatalf("mqtt 5 connect %s: %v", user, err)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho5.Disconnect{}) })
	return c
}

// reason publishes at QoS 1 and returns the PUBACK reason code (0xff when
// there was no PUBACK).
func reason(c *paho5.Client, topic string, retain bool, payload []byte) byte {
	ctx, cancel := context.WithTimeout(context.Background(), 2*ackTimeout)
	defer cancel()
	pr, _ := c.Publish(ctx, &paho5.Publish{Topic: topic, QoS: 1, Retain: retain, Payload: payload})
	if pr == nil {
		return 0xff
	}
	return pr.ReasonCode
}

// persistentSession leaves a persistent MQTT 3.1.1 session of user
// subscribed to filter at QoS 1, away.
func persistentSession(t *testing.T, h *hubProc, id, user, pass, filter string) {
	t.Helper()
	opts := paho.NewClientOptions().AddBroker("tcp://" + h.mqtt).SetClientID(id).SetUsername(user).SetPassword(pass).
		SetCleanSession(false).SetAutoReconnect(false).SetConnectTimeout(ackTimeout)
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(ackTimeout) || tok.Error() != nil {
		t.Fatalf("mqtt session %s: %v", id, tok.Error())
	}
	if tok := c.Subscribe(filter, 1, nil); !tok.WaitTimeout(ackTimeout) || tok.Error() != nil {
		t.Fatalf("mqtt session %s subscribe: %v", id, tok.Error())
	}
	c.Disconnect(100)
}

// restAs publishes at qos as user and returns the status and body.
func restAs(h *hubProc, user, pass, topic, query, payload string) (int, string) {
	req, err := http.NewRequest(http.MethodPost, "http://"+h.http+"/api/v1/topics/"+topic+"?"+query, strings.NewReader(payload))
	if err != nil {
		return 0, err.Error()
	}
	req.SetBasicAuth(user, pass)
	resp, err := (&http.Client{Timeout: 2 * ackTimeout}).Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	return resp.StatusCode, string(b)
}

// health reads /healthz.
func health(t *testing.T, h *hubProc) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get("http://" + h.http + "/healthz")
	if err != nil {
		t.Fatalf("healthz: %v", err)
	}
	defer resp.Body.Close()
	var r map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("healthz body: %v", err)
	}
	return resp.StatusCode, r
}

// diskUsed is the used and free bytes of the file system holding dir.
func diskUsed(t *testing.T, dir string) (used, free uint64) {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return (st.Blocks - st.Bfree) * uint64(st.Bsize), st.Bavail * uint64(st.Bsize)
}

const quotaExceeded = 0x97

// TestDiskFairness: on a 48 MiB store, a user with 8 persistent sessions
// that are away publishes 512 KiB messages at QoS 1. Its queued-bytes
// quota (by default a quarter of the free space at start) runs out long
// before the disk: it gets PUBACK 0x97, REST 507 and an XMPP
// policy-violation, while another user's QoS 1 still goes through over
// MQTT, REST and XMPP, and /healthz stays ok.
func TestDiskFairness(t *testing.T) {
	if testing.Short() {
		t.Skip("mounts a filesystem")
	}
	dir := mountTmpfsSize(t, "48m")
	h := newHub(t, dir)
	h.hubCmd("user", "add", "greedy", "--password", "greedypw", "--role", "user", "--data-dir", dir)
	h.hubCmd("user", "add", "bob", "--password", "bobpw", "--role", "user", "--data-dir", dir)
	h.start()
	used0, free0 := diskUsed(t, dir)
	for i := range 8 {
		persistentSession(t, h, fmt.Sprintf("greedy-%d", i), "greedy", "greedypw", "fair/#")
	}
	g := mqtt5As(t, h, "greedy-pub", "greedy", "greedypw")
	payload := make([]byte, 512<<10)
	accepted, refused := 0, 0
	for i := 0; i < 40 && refused < 10; i++ {
		switch rc := reason(g, "fair/greedy", false, payload); rc {
		case 0:
			accepted++
		case quotaExceeded:
			refused++
		default:
			t.Fatalf("greedy publish %d: reason 0x%02x\n%s", i+1, rc, h.logTail())
		}
	}
	used1, free1 := diskUsed(t, dir)
	t.Logf("greedy: %d publishes of 512 KiB to 8 away sessions accepted, then %d refused with 0x97; disk used %d → %d KiB, free %d → %d KiB",
		accepted, refused, used0>>10, used1>>10, free0>>10, free1>>10)
	if refused < 10 {
		t.Fatalf("greedy was never refused (%d accepted)", accepted)
	}
	if free1 < free0/2 {
		t.Errorf("the greedy user took more than half the free space: %d of %d KiB free", free1>>10, free0>>10)
	}
	// Fill what is left of the quota with smaller messages, so that the
	// 32 KiB ones below (8 copies) cannot fit either.
	for _, size := range []int{64 << 10, 16 << 10} {
		for i := 0; i < 100 && reason(g, "fair/greedy", false, payload[:size]) == 0; i++ {
			accepted++
		}
	}
	if s, body := restAs(h, "greedy", "greedypw", "fair/greedy", "qos=1", string(payload[:32<<10])); s != http.StatusInsufficientStorage {
		t.Errorf("greedy's REST QoS 1: %d %s, want 507", s, body)
	}
	if p, err := dialXMPPPub(h, "greedy", "greedypw", "fair/greedy"); err != nil {
		t.Errorf("greedy xmpp: %v", err)
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
		_ = p.send(ctx, strings.Repeat("x", 32<<10))
		cancel()
		deadline := time.Now().Add(ackTimeout)
		for p.errorFor("m1") == "" && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if cond := p.errorFor("m1"); cond != "policy-violation" {
			t.Errorf("greedy's XMPP chat with XEP-0198: error condition %q, want policy-violation", cond)
		}
		p.close()
	}

	// Everyone else goes on, to the same topic too.
	b := mqtt5As(t, h, "bob-pub", "bob", "bobpw")
	for _, topic := range []string{"fair/bob", "fair/greedy"} {
		if rc := reason(b, topic, false, payload[:64<<10]); rc != 0 {
			t.Errorf("bob's MQTT 5 QoS 1 to %s: reason 0x%02x, want 0", topic, rc)
		}
		if s, body := restAs(h, "bob", "bobpw", topic, "qos=1", "bob"); s != http.StatusOK {
			t.Errorf("bob's REST QoS 1 to %s: %d %s, want 200", topic, s, body)
		}
	}
	if p, err := dialXMPPPub(h, "alice", "alicepw", "fair/alice"); err != nil {
		t.Errorf("alice xmpp: %v", err)
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
		if err := p.send(ctx, "alice"); err != nil {
			t.Errorf("alice's XMPP chat with XEP-0198: %v", err)
		}
		cancel()
		p.close()
	}
	code, r := health(t, h)
	store, _ := r["store"].(map[string]any)
	used2, free2 := diskUsed(t, dir)
	t.Logf("end: %d of greedy's publishes accepted in all; disk used %d KiB, free %d KiB; healthz %d status %v, store %v; hub RSS %d KiB",
		accepted, used2>>10, free2>>10, code, r["status"], store, h.rssKB())
	if code != http.StatusOK || r["status"] != "ok" || store["write_failing"] != false {
		t.Errorf("healthz %d %v, want 200 ok with the store writing", code, r)
	}
	if t.Failed() {
		t.Logf("hub log:\n%s", h.logTail())
	}
}

// TestRetainedMemoryBound: one user publishes 300 retained values of 512
// KiB. Its retained bytes quota (64 MiB by default) refuses them past it
// with PUBACK 0x97, the hub's RSS stays bounded while it runs, and after a
// restart the values (above retained_cold_above) stay on disk: the RSS is
// far below their size. Another user can still retain a value.
func TestRetainedMemoryBound(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 64 MiB of retained values")
	}
	h := newHub(t, "")
	h.hubCmd("user", "add", "greedy", "--password", "greedypw", "--role", "user", "--data-dir", h.dataDir)
	h.start()
	rss0 := h.rssKB()
	g := mqtt5As(t, h, "greedy-ret", "greedy", "greedypw")
	payload := make([]byte, 512<<10)
	accepted, refused := 0, 0
	for i := range 300 {
		switch rc := reason(g, fmt.Sprintf("ret/%03d", i), true, payload); rc {
		case 0:
			accepted++
		case quotaExceeded:
			refused++
		default:
			t.Fatalf("retained publish %d: reason 0x%02x\n%s", i+1, rc, h.logTail())
		}
		if refused >= 20 {
			break // the bound holds; the rest would be refused the same way
		}
	}
	rss1 := h.rssKB()
	a := mqtt5As(t, h, "alice-ret", "alice", "alicepw")
	if rc := reason(a, "ret/alice", true, payload[:1024]); rc != 0 {
		t.Errorf("alice's retained publish: reason 0x%02x", rc)
	}
	h.stop()
	h.start()
	rss2 := h.rssKB()
	t.Logf("retained 512 KiB values: %d accepted, %d refused with 0x97; RSS %d KiB at start, %d KiB after, %d KiB after a restart",
		accepted, refused, rss0, rss1, rss2)
	if accepted == 0 || accepted > 128 || refused == 0 {
		t.Errorf("%d accepted, %d refused; want at most 128 (64 MiB) accepted and the rest refused", accepted, refused)
	}
	const boundKB, restartKB = 400 << 10, 100 << 10 // 64 MiB are retained
	if rss1 > boundKB || rss2 > restartKB {
		t.Errorf("RSS %d KiB running, %d KiB after a restart: over the %d and %d KiB bounds", rss1, rss2, boundKB, restartKB)
	}
}

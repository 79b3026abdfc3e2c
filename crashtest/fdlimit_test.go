package crashtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fdLimit is the descriptor limit the hub runs under in
// TestDescriptorExhaustion: enough to start, small enough to exhaust.
const fdLimit = 160

// healthReport is what the test reads of GET /healthz.
type healthReport struct {
	Status    string `json:"status"`
	Listeners []struct {
		Adapter      string `json:"adapter"`
		Name         string `json:"name"`
		State        string `json:"state"`
		Error        string `json:"error"`
		AcceptErrors uint64 `json:"accept_errors"`
	} `json:"listeners"`
}

func (r healthReport) state(name string) string {
	for _, l := range r.Listeners {
		if l.Adapter+"."+l.Name == name {
			return l.State
		}
	}
	return ""
}

func getHealth(c *http.Client, addr string) (int, healthReport, error) {
	var r healthReport
	resp, err := c.Get("http://" + addr + "/healthz")
	if err != nil {
		return 0, r, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return resp.StatusCode, r, fmt.Errorf("healthz body %q: %w", b, err)
	}
	return resp.StatusCode, r, nil
}

// openFDs counts the process's open descriptors.
func openFDs(pid int) int {
	ents, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "fd"))
	if err != nil {
		return -1
	}
	return len(ents)
}

// waitFor polls cond every 20 ms until it holds or within passes.
func waitFor(t *testing.T, what string, within time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v (last: %s)", what, within, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDescriptorExhaustion runs the hub under `prlimit --nofile`, holds
// idle TCP connections to the HTTP listener until its descriptors run
// out, and checks that /healthz (over a connection opened before) says
// 503 naming the listeners that cannot accept; then it frees them and
// checks that MQTT, XMPP and HTTP accept again and /healthz is 200.
func TestDescriptorExhaustion(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Skip("prlimit not installed")
	}
	cfg := filepath.Join(t.TempDir(), "hub.yaml")
	// Longer header timeout than the test, so the idle connections stay.
	if err := os.WriteFile(cfg, []byte("http:\n  read_header_timeout: 60s\n  read_timeout: 60s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := newHub(t, "", "--config", cfg)
	h.wrap = []string{prlimit, fmt.Sprintf("--nofile=%d:%d", fdLimit, fdLimit)}
	h.start()
	pid := h.pid()
	base := openFDs(pid)
	t.Logf("hub pid %d: %d descriptors open at start, limit %d", pid, base, fdLimit)
	if base < 0 || base >= fdLimit-20 {
		t.Fatalf("descriptors at start: %d of %d", base, fdLimit)
	}

	// One keep-alive connection opened now serves /healthz throughout.
	keep := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}}
	defer keep.CloseIdleConnections()
	if code, _, err := getHealth(keep, h.http); code != 200 || err != nil {
		t.Fatalf("healthz before: %d %v", code, err)
	}

	// Idle connections to HTTP until the hub holds fdLimit descriptors,
	// and some more waiting in the backlog, which the hub cannot accept.
	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			_ = c.Close()
		}
	}()
	for i := 0; i < fdLimit+20; i++ {
		c, err := net.DialTimeout("tcp", h.http, ackTimeout)
		if err != nil {
			t.Fatalf("idle connection %d: %v", i, err)
		}
		idle = append(idle, c)
	}
	waitFor(t, "the hub's descriptors exhausted", 10*time.Second, func() (bool, string) {
		n := openFDs(pid)
		return n >= fdLimit, fmt.Sprintf("%d open", n)
	})
	// A client of each other listener waits in its backlog.
	mqttWaiting, err := net.DialTimeout("tcp", h.mqtt, ackTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer mqttWaiting.Close()
	xmppWaiting, err := net.DialTimeout("tcp", h.xmpp, ackTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer xmppWaiting.Close()

	var during healthReport
	waitFor(t, "healthz 503 naming the failing listeners", 10*time.Second, func() (bool, string) {
		code, r, err := getHealth(keep, h.http)
		during = r
		return code == http.StatusServiceUnavailable && r.state("mqtt.mqtt") == "failing" &&
				r.state("xmpp.xmpp") == "failing" && r.state("rest.http") == "failing",
			fmt.Sprintf("%d %+v %v", code, r, err)
	})
	for _, l := range during.Listeners {
		t.Logf("exhausted: %s.%s %s (%s), %d accept errors", l.Adapter, l.Name, l.State, l.Error, l.AcceptErrors)
	}

	// Free the descriptors: every listener accepts again.
	for _, c := range idle {
		_ = c.Close()
	}
	idle = nil
	waitFor(t, "healthz 200 again", 15*time.Second, func() (bool, string) {
		code, r, err := getHealth(&http.Client{Timeout: 2 * time.Second}, h.http)
		return code == http.StatusOK && r.Status == "ok", fmt.Sprintf("%d %+v %v", code, r, err)
	})
	m, err := rawConnect(h.mqtt, "after-exhaustion", 5, true)
	if err != nil {
		t.Fatalf("MQTT after the descriptors came back: %v", err)
	}
	m.close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	xs, err := xmppLogin(ctx, h, "alice", "alicepw")
	if err != nil {
		t.Fatalf("XMPP after the descriptors came back: %v", err)
	}
	_ = xs.Close()
	if code, err := restPublish(h, "fd/after", 1, "x"); err != nil || code != http.StatusOK {
		t.Fatalf("REST publish after the descriptors came back: %d %v", code, err)
	}
	// The clients that waited in the backlogs were accepted too.
	_ = xmppWaiting.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(xmppWaiting, "<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	if n, err := xmppWaiting.Read(buf); err != nil || !strings.Contains(string(buf[:n]), "stream") {
		t.Errorf("XMPP client from the backlog: %q %v", buf[:n], err)
	}

	// Each adapter counted its accept errors.
	resp, err := http.Get("http://" + h.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	for _, name := range []string{"hub_mqtt_accept_errors_total", "hub_xmpp_accept_errors_total", "hub_rest_accept_errors_total"} {
		m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindSubmatch(body)
		if m == nil {
			t.Errorf("/metrics lacks %s", name)
			continue
		}
		if v, _ := strconv.ParseFloat(string(m[1]), 64); v < 1 {
			t.Errorf("%s = %s, want > 0", name, m[1])
		} else {
			t.Logf("%s %s", name, m[1])
		}
	}
	t.Logf("descriptors after: %d", openFDs(pid))
}

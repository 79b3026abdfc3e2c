package crashtest

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// tmpfsSize is the size of the small filesystem the hub's store lives on.
const tmpfsSize = "4m"

// mountTmpfs mounts a small tmpfs and unmounts it when the test ends; it
// skips the test where mounting is not permitted.
func mountTmpfs(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+tmpfsSize, "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Skipf("cannot mount a %s tmpfs for the full-disk test (needs root or CAP_SYS_ADMIN): %v %s", tmpfsSize, err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
	return dir
}

// fillDisk writes a file in dir until the filesystem is full and returns
// its path.
func fillDisk(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for i := 0; i < 1<<12; i++ {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				// Take the last bytes too.
				for n := 4096; n > 0; n /= 2 {
					for {
						if _, err := f.Write(buf[:n]); err != nil {
							break
						}
					}
				}
				return path
			}
			t.Fatal(err)
		}
	}
	t.Fatal("the filesystem never filled up")
	return ""
}

// TestDiskFull: with the store's filesystem full, QoS >= 1 publishes are
// refused with each protocol's error (MQTT 5 reason code, MQTT 3.1.1
// disconnect, REST 507, CoAP 5.03, XMPP resource-constraint), QoS 0 still
// flows, and once space is freed publishing works again; the away
// subscribers get what was acknowledged and nothing that was refused.
func TestDiskFull(t *testing.T) {
	if testing.Short() {
		t.Skip("mounts a filesystem and fills it")
	}
	dir := mountTmpfs(t)
	h := newHub(t, dir)
	h.start()

	// Durable subscribers that are away: every QoS 1 publish must be
	// written for them.
	ms := dialMQTTSub(t, h, "disk-away", false)
	ms.subscribe(t, "disk/#", 1)
	ms.c.Disconnect(100)
	xs := dialXMPPSub(t, h, "alice", "alicepw")
	xs.subscribeTopic(t, "disk/xmpp")
	xs.close()
	// A subscriber that stays: QoS 0 must keep reaching it.
	live := dialMQTTSub(t, h, "disk-live", true)
	live.subscribe(t, "disk/#", 0)
	time.Sleep(200 * time.Millisecond)

	filler := fillDisk(t, dir)
	t.Logf("filesystem full (%s tmpfs)", tmpfsSize)
	refused := map[string]bool{}
	accepted := map[string]bool{}
	note := func(payload string, ok bool) {
		if ok {
			accepted[payload] = true
		} else {
			refused[payload] = true
		}
	}

	checkRefusals(t, h, "full", note)

	// QoS 0 flows.
	q0, err := dialMQTTPub(h, "disk-q0", "disk/q0", 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
	_ = q0.send(ctx, "q0-full")
	cancel()
	q0.close()
	if code, err := restPublish(h, "disk/q0", 0, "rest-q0-full"); err != nil || code != http.StatusAccepted {
		t.Errorf("REST QoS 0 on a full disk: %d %v, want 202", code, err)
	}
	want := map[string]bool{"q0-full": true, "rest-q0-full": true}
	for end := time.After(5 * time.Second); len(want) > 0; {
		select {
		case m := <-live.msgs:
			delete(want, m)
		case <-end:
			t.Errorf("QoS 0 on a full disk: not delivered: %v", want)
			want = nil
		}
	}
	if resp, err := http.Get("http://" + h.http + "/healthz"); err != nil {
		t.Errorf("healthz on a full disk: %v", err)
	} else {
		_ = resp.Body.Close()
		t.Logf("healthz on a full disk: %d", resp.StatusCode)
	}

	// Space again.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	checkRefusals(t, h, "freed", note)

	// A crash, then the away subscribers come back: everything
	// acknowledged, nothing refused.
	h.kill9()
	h.start()
	ms = dialMQTTSub(t, h, "disk-away", false)
	xs = dialXMPPSub(t, h, "alice", "alicepw")
	for _, s := range []struct {
		who  string
		msgs <-chan string
		only string
	}{{"mqtt persistent session", ms.msgs, ""}, {"xmpp topic subscriber", xs.msgs, "xmpp"}} {
		got := map[string]bool{}
		for quiet := false; !quiet; {
			select {
			case m := <-s.msgs:
				got[m] = true
			case <-time.After(3 * time.Second):
				quiet = true
			}
		}
		for p := range accepted {
			if (s.only == "" || strings.HasPrefix(p, s.only)) && !got[p] {
				t.Errorf("%s: acknowledged %q not delivered", s.who, p)
			}
		}
		for p := range refused {
			if got[p] {
				t.Errorf("%s: refused %q was delivered all the same (half-written)", s.who, p)
			}
		}
	}
	if h.logHas("session store") {
		t.Logf("the hub logged session-store write failures but acknowledged the publishes (see mqtt/session.go put)")
	}
	if t.Failed() {
		t.Logf("hub log:\n%s", h.logTail())
	}
}

// checkRefusals publishes at QoS 1 once with each protocol and checks the
// answer: refused while the disk is full (phase "full"), accepted once
// space is back ("freed").
func checkRefusals(t *testing.T, h *hubProc, phase string, note func(string, bool)) {
	t.Helper()
	full := phase == "full"
	// MQTT 5: a PUBACK with a reason code >= 0x80.
	if c, err := rawConnect(h.mqtt, "disk-v5-"+phase, 5, true); err != nil {
		t.Errorf("%s: mqtt 5 connect: %v", phase, err)
	} else {
		code, err := c.publish1(5, "disk/mqtt5", "mqtt5-"+phase, 7)
		c.close()
		ok := err == nil && code < 0x80
		note("mqtt5-"+phase, ok)
		t.Logf("%s: MQTT 5 QoS 1 → reason 0x%02x %v", phase, code, err)
		if full && ok {
			t.Errorf("MQTT 5 QoS 1 on a full disk: acknowledged with success (0x%02x); want a reason code >= 0x80", code)
		}
		if !full && !ok {
			t.Errorf("MQTT 5 QoS 1 after freeing space: reason 0x%02x %v", code, err)
		}
	}
	// MQTT 3.1.1: the connection is closed instead of a PUBACK.
	if c, err := rawConnect(h.mqtt, "disk-v4-"+phase, 4, true); err != nil {
		t.Errorf("%s: mqtt 3.1.1 connect: %v", phase, err)
	} else {
		_, err := c.publish1(4, "disk/mqtt3", "mqtt3-"+phase, 7)
		c.close()
		note("mqtt3-"+phase, err == nil)
		t.Logf("%s: MQTT 3.1.1 QoS 1 → %v", phase, err)
		if full && err == nil {
			t.Errorf("MQTT 3.1.1 QoS 1 on a full disk: PUBACK; want the connection closed")
		}
		if !full && err != nil {
			t.Errorf("MQTT 3.1.1 QoS 1 after freeing space: %v", err)
		}
	}
	// REST: 507.
	code, err := restPublish(h, "disk/rest", 1, "rest-"+phase)
	note("rest-"+phase, err == nil && code == http.StatusOK)
	t.Logf("%s: REST QoS 1 → %d %v", phase, code, err)
	if full && code != http.StatusInsufficientStorage {
		t.Errorf("REST QoS 1 on a full disk: %d %v; want 507", code, err)
	}
	if !full && code != http.StatusOK {
		t.Errorf("REST QoS 1 after freeing space: %d %v", code, err)
	}
	// CoAP: 5.03.
	if p, err := dialCoAPPub(h, "disk/coap"); err != nil {
		t.Errorf("%s: coap: %v", phase, err)
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
		c, err := p.post(ctx, "", "coap-"+phase)
		cancel()
		p.close()
		note("coap-"+phase, err == nil && c == codes.Changed)
		t.Logf("%s: CoAP CON POST → %v %v", phase, c, err)
		if full && c != codes.ServiceUnavailable {
			t.Errorf("CoAP CON POST on a full disk: %v %v; want 5.03", c, err)
		}
		if !full && c != codes.Changed {
			t.Errorf("CoAP CON POST after freeing space: %v %v", c, err)
		}
	}
	// XMPP with stream management: resource-constraint.
	if p, err := dialXMPPPub(h, "admin", "adminpw", "disk/xmpp"); err != nil {
		t.Errorf("%s: xmpp: %v", phase, err)
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
		err := p.send(ctx, "xmpp-"+phase)
		cancel()
		// The error stanza may trail the <a/>: give it a moment.
		time.Sleep(200 * time.Millisecond)
		cond := p.errorFor("m1")
		p.close()
		note("xmpp-"+phase, err == nil && cond == "")
		t.Logf("%s: XMPP chat with XEP-0198 → %v, error condition %q", phase, err, cond)
		if full && cond != "resource-constraint" {
			t.Errorf("XMPP chat to a topic on a full disk: error %q (%v); want resource-constraint", cond, err)
		}
		if !full && (err != nil || cond != "") {
			t.Errorf("XMPP chat after freeing space: %v %q", err, cond)
		}
	}
}

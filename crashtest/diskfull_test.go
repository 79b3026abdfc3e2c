package crashtest

import (
	"context"
	"errors"
	"io"
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
	return mountTmpfsSize(t, tmpfsSize)
}

// mountTmpfsSize is mountTmpfs with a size of its own ("48m").
func mountTmpfsSize(t *testing.T, tmpfsSize string) string {
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

// ext4FS is a small ext4 filesystem on a loop device, mounted with
// errors=remount-ro, whose errors the test can trigger.
type ext4FS struct {
	img, dir, dev string
}

// mountExt4 makes and mounts an ext4 image and unmounts it when the test
// ends; it skips the test where that, or triggering an error, is not
// possible (no root, no loop devices, a kernel without trigger_fs_error).
func mountExt4(t *testing.T) *ext4FS {
	t.Helper()
	base := t.TempDir()
	fs := &ext4FS{img: filepath.Join(base, "store.img"), dir: filepath.Join(base, "data")}
	if err := os.Mkdir(fs.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(name string, args ...string) (string, error) {
		out, err := exec.Command(name, args...).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	if out, err := run("truncate", "-s", "64M", fs.img); err != nil {
		t.Fatalf("truncate: %v %s", err, out)
	}
	if out, err := run("mkfs.ext4", "-q", "-F", fs.img); err != nil {
		t.Skipf("cannot make an ext4 image (mkfs.ext4): %v %s", err, out)
	}
	if out, err := run("mount", "-o", "loop,errors=remount-ro", fs.img, fs.dir); err != nil {
		t.Skipf("cannot mount an ext4 image on a loop device (needs root and loop devices): %v %s", err, out)
	}
	t.Cleanup(func() { fs.unmount(t) })
	dev, err := fs.device()
	if err != nil {
		t.Skipf("loop device of %s: %v", fs.dir, err)
	}
	fs.dev = dev
	if _, err := os.Stat(fs.trigger()); err != nil {
		t.Skipf("this kernel cannot trigger ext4 errors (%v)", err)
	}
	return fs
}

// device returns the loop device's name ("loop3") from /proc/mounts.
func (fs *ext4FS) device() (string, error) {
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[1] == fs.dir {
			return filepath.Base(f[0]), nil
		}
	}
	return "", errors.New("not mounted")
}

func (fs *ext4FS) trigger() string { return "/sys/fs/ext4/" + fs.dev + "/trigger_fs_error" }

// mountOptions returns the filesystem's options in /proc/mounts.
func (fs *ext4FS) mountOptions(t *testing.T) string {
	b, _ := os.ReadFile("/proc/mounts")
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 4 && f[1] == fs.dir {
			return f[3]
		}
	}
	return "not mounted"
}

// triggerError makes the kernel see an ext4 error: with errors=remount-ro
// the filesystem refuses every write from then on.
func (fs *ext4FS) triggerError(t *testing.T) {
	t.Helper()
	if err := os.WriteFile(fs.trigger(), []byte("crashtest\n"), 0o200); err != nil {
		t.Fatalf("trigger an ext4 error: %v", err)
	}
	probe := filepath.Join(fs.dir, "probe")
	if err := os.WriteFile(probe, []byte("x"), 0o600); err == nil {
		t.Fatalf("the filesystem still takes writes after the error (%s)", fs.mountOptions(t))
	}
}

// fsckAndRemount does what an operator does after the error: unmount,
// check and repair, mount again.
func (fs *ext4FS) fsckAndRemount(t *testing.T) {
	t.Helper()
	fs.unmount(t)
	// e2fsck exits 1 when it fixed something.
	if out, err := exec.Command("e2fsck", "-fy", fs.img).CombinedOutput(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() > 1 {
			t.Fatalf("e2fsck: %v %s", err, out)
		}
	}
	if out, err := exec.Command("mount", "-o", "loop,errors=remount-ro", fs.img, fs.dir).CombinedOutput(); err != nil {
		t.Fatalf("mount again: %v %s", err, out)
	}
	dev, err := fs.device()
	if err != nil {
		t.Fatal(err)
	}
	fs.dev = dev
}

func (fs *ext4FS) unmount(t *testing.T) {
	if _, err := fs.device(); err != nil {
		return
	}
	if out, err := exec.Command("umount", fs.dir).CombinedOutput(); err != nil {
		// The hub may still be going away: detach lazily.
		if out2, err2 := exec.Command("umount", "-l", fs.dir).CombinedOutput(); err2 != nil {
			t.Errorf("umount %s: %v %s / %v %s", fs.dir, err, out, err2, out2)
		}
	}
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
	var filler string
	runStoreFault(t, dir, storeFault{
		name: "full",
		breaks: func(t *testing.T, h *hubProc) {
			filler = fillDisk(t, dir)
			t.Logf("filesystem full (%s tmpfs)", tmpfsSize)
		},
		repair: func(t *testing.T, h *hubProc) {
			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
		},
	})
}

// TestReadOnlyStore: the store's filesystem turns read-only under the
// running hub, as ext4 does on an I/O error (errors=remount-ro, the usual
// setting for an SD card). QoS >= 1 publishes are refused with each
// protocol's error and QoS 0 flows, as on a full disk; after a restart on
// the checked and remounted filesystem, publishing works again and the
// away subscribers get what was acknowledged and nothing that was refused.
func TestReadOnlyStore(t *testing.T) {
	if testing.Short() {
		t.Skip("mounts a filesystem and breaks it")
	}
	fs := mountExt4(t)
	// An ext4 error discards the dirty pages the unmount finds, as a
	// power loss would: what survives it is what was fsynced, so this
	// runs with sync_interval always (with a duration, the writes of the
	// last interval before the error, here the subscriptions, are lost).
	conf := filepath.Join(t.TempDir(), "hub.yaml")
	if err := os.WriteFile(conf, []byte("sync_interval: always\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	runStoreFault(t, fs.dir, storeFault{
		name:  "read-only",
		flags: []string{"--config", conf},
		breaks: func(t *testing.T, h *hubProc) {
			fs.triggerError(t)
			t.Logf("filesystem read-only (%s)", fs.mountOptions(t))
		},
		repair: func(t *testing.T, h *hubProc) {
			h.kill9()
			fs.fsckAndRemount(t)
			h.start()
		},
	})
}

// storeFault breaks the store's filesystem under a running hub and
// repairs it.
type storeFault struct {
	name           string
	flags          []string // more serve flags
	breaks, repair func(t *testing.T, h *hubProc)
}

// runStoreFault runs the checks of TestDiskFull and TestReadOnlyStore on
// a hub whose data dir is dir.
func runStoreFault(t *testing.T, dir string, f storeFault) {
	h := newHub(t, dir, f.flags...)
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

	f.breaks(t, h)
	refused := map[string]bool{}
	accepted := map[string]bool{}
	note := func(payload string, ok bool) {
		if ok {
			accepted[payload] = true
		} else {
			refused[payload] = true
		}
	}

	checkRefusals(t, h, f.name, true, note)

	// QoS 0 flows.
	q0, err := dialMQTTPub(h, "disk-q0", "disk/q0", 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
	_ = q0.send(ctx, "q0-"+f.name)
	cancel()
	q0.close()
	if code, err := restPublish(h, "disk/q0", 0, "rest-q0-"+f.name); err != nil || code != http.StatusAccepted {
		t.Errorf("REST QoS 0, store %s: %d %v, want 202", f.name, code, err)
	}
	want := map[string]bool{"q0-" + f.name: true, "rest-q0-" + f.name: true}
	for end := time.After(5 * time.Second); len(want) > 0; {
		select {
		case m := <-live.msgs:
			delete(want, m)
		case <-end:
			t.Errorf("QoS 0, store %s: not delivered: %v", f.name, want)
			want = nil
		}
	}
	if resp, err := http.Get("http://" + h.http + "/healthz"); err != nil {
		t.Errorf("healthz, store %s: %v", f.name, err)
	} else {
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		t.Logf("healthz, store %s: %d %s", f.name, resp.StatusCode, b)
		// The store's writes fail: the hub says so, by name.
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(b), `"write_failing":true`) ||
			!strings.Contains(string(b), "store: ") {
			t.Errorf("healthz, store %s: %d, want 503 naming the store's write error", f.name, resp.StatusCode)
		}
	}

	f.repair(t, h)
	checkRefusals(t, h, "repaired", false, note)

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
	if t.Failed() {
		t.Logf("hub log:\n%s", h.logTail())
	}
}

// checkRefusals publishes at QoS 1 once with each protocol (payloads name
// the phase) and checks the answer: refused while the store is broken
// (full), accepted once it is repaired.
func checkRefusals(t *testing.T, h *hubProc, phase string, full bool, note func(string, bool)) {
	t.Helper()
	// MQTT 5: a PUBACK with a reason code >= 0x80.
	if c, err := rawConnect(h.mqtt, "disk-v5-"+phase, 5, true); err != nil {
		t.Errorf("%s: mqtt 5 connect: %v", phase, err)
	} else {
		code, err := c.publish1("disk/mqtt5", "mqtt5-"+phase, 7)
		c.close()
		ok := err == nil && code < 0x80
		note("mqtt5-"+phase, ok)
		t.Logf("%s: MQTT 5 QoS 1 → reason 0x%02x %v", phase, code, err)
		if full && ok {
			t.Errorf("%s: MQTT 5 QoS 1 acknowledged with success (0x%02x); want a reason code >= 0x80", phase, code)
		}
		if !full && !ok {
			t.Errorf("%s: MQTT 5 QoS 1: reason 0x%02x %v", phase, code, err)
		}
	}
	// MQTT 3.1.1: the connection is closed instead of a PUBACK.
	if c, err := rawConnect(h.mqtt, "disk-v4-"+phase, 4, true); err != nil {
		t.Errorf("%s: mqtt 3.1.1 connect: %v", phase, err)
	} else {
		_, err := c.publish1("disk/mqtt3", "mqtt3-"+phase, 7)
		c.close()
		note("mqtt3-"+phase, err == nil)
		t.Logf("%s: MQTT 3.1.1 QoS 1 → %v", phase, err)
		if full && err == nil {
			t.Errorf("%s: MQTT 3.1.1 QoS 1: PUBACK; want the connection closed", phase)
		}
		if !full && err != nil {
			t.Errorf("%s: MQTT 3.1.1 QoS 1: %v", phase, err)
		}
	}
	// REST: 507.
	code, err := restPublish(h, "disk/rest", 1, "rest-"+phase)
	note("rest-"+phase, err == nil && code == http.StatusOK)
	t.Logf("%s: REST QoS 1 → %d %v", phase, code, err)
	if full && code != http.StatusInsufficientStorage {
		t.Errorf("%s: REST QoS 1: %d %v; want 507", phase, code, err)
	}
	if !full && code != http.StatusOK {
		t.Errorf("%s: REST QoS 1: %d %v", phase, code, err)
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
			t.Errorf("%s: CoAP CON POST: %v %v; want 5.03", phase, c, err)
		}
		if !full && c != codes.Changed {
			t.Errorf("%s: CoAP CON POST: %v %v", phase, c, err)
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
			t.Errorf("%s: XMPP chat to a topic: error %q (%v); want resource-constraint", phase, cond, err)
		}
		if !full && (err != nil || cond != "") {
			t.Errorf("%s: XMPP chat: %v %q", phase, err, cond)
		}
	}
}

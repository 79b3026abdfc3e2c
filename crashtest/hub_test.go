package crashtest

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hubsmith/hub/hubtest"
)

// hubBin is the hub binary built once by TestMain.
var hubBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "crashtest-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "crashtest:", err)
		os.Exit(1)
	}
	hubBin = filepath.Join(dir, "hub")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	out, err := exec.CommandContext(ctx, "go", "build", "-o", hubBin, "github.com/hubsmith/hub/cmd/hub").CombinedOutput()
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "crashtest: go build ./cmd/hub: %v\n%s", err, out)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// hubProc is one hub process: its data directory and ports stay the same
// across restarts, so clients reconnect to the same addresses.
type hubProc struct {
	t       testing.TB
	dataDir string
	logPath string
	mqtt    string // host:port
	coap    string
	xmpp    string
	http    string
	extra   []string // more serve flags
	wrap    []string // a command the hub runs under (e.g. prlimit --nofile=N:N)

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
	runs int
}

// freePorts returns n distinct loopback ports free for TCP and UDP, from
// below the ephemeral range (hubtest.FreePorts says why).
func freePorts(t testing.TB, n int) []int { return hubtest.FreePorts(t, n) }

// newHub prepares a hub on dataDir ("" = a fresh temporary directory)
// with the users admin/adminpw and alice/alicepw, created with
// `hub user add` before the first start. It does not start it.
func newHub(t testing.TB, dataDir string, extra ...string) *hubProc {
	t.Helper()
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	p := freePorts(t, 4)
	h := &hubProc{
		t: t, dataDir: dataDir, logPath: filepath.Join(t.TempDir(), "hub.log"),
		mqtt: addr(p[0]), coap: addr(p[1]), xmpp: addr(p[2]), http: addr(p[3]), extra: extra,
	}
	h.hubCmd("user", "add", "admin", "--password", "adminpw", "--role", "admin", "--data-dir", dataDir)
	h.hubCmd("user", "add", "alice", "--password", "alicepw", "--role", "user", "--data-dir", dataDir)
	t.Cleanup(h.stop)
	return h
}

func addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// hubCmd runs a short hub subcommand and fails the test if it fails.
func (h *hubProc) hubCmd(args ...string) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, hubBin, args...).CombinedOutput()
	if err != nil {
		h.t.Fatalf("hub %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// start starts the hub and waits until GET /healthz answers 200.
func (h *hubProc) start() {
	h.t.Helper()
	if err := h.tryStart(15 * time.Second); err != nil {
		h.t.Fatal(err)
	}
}

// tryStart is start returning the error.
func (h *hubProc) tryStart(within time.Duration) error {
	h.mu.Lock()
	if h.cmd != nil {
		h.mu.Unlock()
		return fmt.Errorf("crashtest: hub already running")
	}
	lf, err := os.OpenFile(h.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		h.mu.Unlock()
		return err
	}
	h.runs++
	fmt.Fprintf(lf, "=== run %d at %s\n", h.runs, time.Now().Format(time.RFC3339Nano))
	args := []string{"serve", "--data-dir", h.dataDir,
		"--mqtt-addr", h.mqtt, "--coap-addr", h.coap, "--xmpp-addr", h.xmpp, "--http-addr", h.http,
		"--xmpp-proxy-addr", "off", "--log-level", "warn"}
	args = append(args, h.extra...)
	cmd := exec.Command(hubBin, args...)
	if len(h.wrap) > 0 {
		cmd = exec.Command(h.wrap[0], append(append(h.wrap[1:len(h.wrap):len(h.wrap)], hubBin), args...)...)
	}
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		h.mu.Unlock()
		_ = lf.Close()
		return fmt.Errorf("crashtest: start hub: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	h.cmd, h.done, h.log = cmd, done, lf
	h.mu.Unlock()

	deadline := time.Now().Add(within)
	client := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-done:
			h.reap()
			return fmt.Errorf("crashtest: hub exited during start-up; log:\n%s", h.logTail())
		default:
		}
		resp, err := client.Get("http://" + h.http + "/healthz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("crashtest: hub not healthy within %v (last: %v); log:\n%s", within, err, h.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pid is the running hub's process id (0 when none).
func (h *hubProc) pid() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cmd == nil {
		return 0
	}
	return h.cmd.Process.Pid
}

// kill9 sends SIGKILL and waits for the process to be gone.
func (h *hubProc) kill9() {
	h.t.Helper()
	h.mu.Lock()
	cmd, done := h.cmd, h.done
	h.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		h.t.Fatal("crashtest: hub did not die on SIGKILL")
	}
	h.reap()
}

// term sends SIGTERM and waits up to within for a graceful exit; it
// reports how long the exit took and whether it happened.
func (h *hubProc) term(within time.Duration) (time.Duration, bool) {
	h.mu.Lock()
	cmd, done := h.cmd, h.done
	h.mu.Unlock()
	if cmd == nil {
		return 0, true
	}
	t0 := time.Now()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		h.reap()
		return time.Since(t0), true
	case <-time.After(within):
		h.kill9()
		return time.Since(t0), false
	}
}

func (h *hubProc) reap() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.log != nil {
		_ = h.log.Close()
	}
	h.cmd, h.done, h.log = nil, nil, nil
}

// stop kills the hub if it still runs (test cleanup).
func (h *hubProc) stop() {
	h.mu.Lock()
	cmd, done := h.cmd, h.done
	h.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
	h.reap()
}

// logTail returns the end of the hub's log.
func (h *hubProc) logTail() string {
	b, _ := os.ReadFile(h.logPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// rssKB reads the hub's resident set size from /proc.
func (h *hubProc) rssKB() int {
	pid := h.pid()
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.Atoi(f[0])
				return n
			}
		}
	}
	return 0
}

// TestHubProcess: the helper builds, starts, kills and restarts the hub on
// the same data directory and ports.
func TestHubProcess(t *testing.T) {
	h := newHub(t, "")
	h.start()
	pid1 := h.pid()
	h.kill9()
	if h.pid() != 0 {
		t.Fatal("pid after kill")
	}
	h.start()
	if h.pid() == pid1 || h.pid() == 0 {
		t.Fatalf("restart: pid %d, before %d", h.pid(), pid1)
	}
	d, ok := h.term(10 * time.Second)
	if !ok {
		t.Fatalf("graceful stop did not end within 10s; log:\n%s", h.logTail())
	}
	t.Logf("graceful stop took %v", d)
}

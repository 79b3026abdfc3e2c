package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hubsmith/hub/hubtest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// result is what one command line did.
type result struct {
	stdout, stderr string
	code           int
}

// timestamps are replaced in listings by a fixed time of the same width.
var timestamp = regexp.MustCompile(`\d{4}-\d\d-\d\d \d\d:\d\d:\d\d`)

// runCLI runs args as main would and returns what it printed, with dir
// written as $DIR and times as 2006-01-02 15:04:05.
func runCLI(t *testing.T, dir string, args ...string) result {
	t.Helper()
	var stdout, stderr strings.Builder
	code := runMain(t.Context(), args, &stdout, &stderr)
	clean := func(s string) string {
		if dir != "" {
			s = strings.ReplaceAll(s, dir, "$DIR")
		}
		return timestamp.ReplaceAllString(s, "2006-01-02 15:04:05")
	}
	return result{clean(stdout.String()), clean(stderr.String()), code}
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout\n%s--- stderr\n%s", r.code, r.stdout, r.stderr)
}

// TestHelp: every command's --help goes to stdout with exit status 0; the
// text is kept in testdata/help/ (go test -run TestHelp -update rewrites
// it).
func TestHelp(t *testing.T) {
	t.Setenv("HUB_DATA_DIR", "") // the defaults shown must not depend on the environment
	for _, args := range [][]string{
		{"--help"}, {"-h"}, {"help"},
		{"serve", "--help"}, {"serve", "-h"},
		{"user", "--help"}, {"user", "add", "--help"}, {"user", "list", "--help"},
		{"user", "delete", "--help"}, {"user", "passwd", "--help"},
		{"device", "--help"}, {"device", "add", "--help"}, {"device", "list", "--help"}, {"device", "delete", "--help"},
		{"config", "--help"}, {"config", "check", "--help"},
		{"version", "--help"},
		{"help", "user", "add"},
	} {
		name := strings.Join(args, "_")
		t.Run(name, func(t *testing.T) {
			r := runCLI(t, "", args...)
			if r.code != 0 || r.stderr != "" {
				t.Fatalf("hub %s:\n%s", strings.Join(args, " "), r)
			}
			golden := filepath.Join("testdata", "help", strings.TrimLeft(name, "-")+".txt")
			if *update {
				if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, []byte(r.stdout), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -run TestHelp -update)", err)
			}
			if r.stdout != string(want) {
				t.Errorf("hub %s prints:\n%s\nwant (%s):\n%s", strings.Join(args, " "), r.stdout, golden, want)
			}
		})
	}
	// Same text whichever way help is asked for.
	if a, b := runCLI(t, "", "user", "add", "--help"), runCLI(t, "", "help", "user", "add"); a != b {
		t.Errorf("hub user add --help and hub help user add differ:\n%s\n%s", a, b)
	}
}

// TestCommandLine runs command lines in order on one data dir and checks
// each one's output and exit status exactly.
func TestCommandLine(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d := "--data-dir=" + dir
	cases := []struct {
		args []string
		want result
	}{
		// Mistakes on the command line: exit 2, one line on stderr.
		{[]string{"frobnicate"}, result{"", "hub: unknown command \"frobnicate\" (see \"hub --help\")\n", 2}},
		{[]string{"--data-dir", "x"}, result{"", "hub: unknown flag --data-dir: flags go after the command, as in \"hub serve --data-dir\" (see \"hub --help\")\n", 2}},
		{[]string{"serve", "--nope"}, result{"", "hub: serve: unknown flag --nope (see \"hub serve --help\")\n", 2}},
		{[]string{"serve", "--mqtt-addr"}, result{"", "hub: serve: flag --mqtt-addr needs a value (see \"hub serve --help\")\n", 2}},
		{[]string{"serve", "--allow-anonymous=maybe"}, result{"", "hub: serve: invalid boolean value \"maybe\" for --allow-anonymous: parse error (see \"hub serve --help\")\n", 2}},
		{[]string{"serve", "extra"}, result{"", "hub: serve: unexpected argument \"extra\" (see \"hub serve --help\")\n", 2}},
		{[]string{"user"}, result{"", "hub: user: missing subcommand: add, list, delete or passwd (see \"hub user --help\")\n", 2}},
		{[]string{"user", "frob"}, result{"", "hub: user: unknown subcommand \"frob\" (want add, list, delete or passwd) (see \"hub user --help\")\n", 2}},
		{[]string{"user", "add", d}, result{"", "hub: user add: missing NAME (see \"hub user add --help\")\n", 2}},
		{[]string{"user", "add", "a", "b", d}, result{"", "hub: user add: want one NAME, got 2: a b (see \"hub user add --help\")\n", 2}},
		{[]string{"user", "add", "alice", d}, result{"", "hub: user add: --password is required (see \"hub user add --help\")\n", 2}},
		{[]string{"user", "add", "alice", "--password", "pw", "--role", "root", d}, result{"", "hub: user add: --role \"root\": want admin, user or device (see \"hub user add --help\")\n", 2}},
		{[]string{"device"}, result{"", "hub: device: missing subcommand: add, list or delete (see \"hub device --help\")\n", 2}},
		{[]string{"device", "add", "lamp1", "--protocol", "zigbee", "--password", "pw", d}, result{"", "hub: device add: --protocol \"zigbee\": want mqtt, coap or xmpp (see \"hub device add --help\")\n", 2}},
		{[]string{"device", "add", "lamp1", "--psk", "zz", d}, result{"", "hub: device add: --psk \"zz\": want the key as hex digits, e.g. 736563726574 for \"secret\" (see \"hub device add --help\")\n", 2}},
		{[]string{"config"}, result{"", "hub: config: missing subcommand: check (see \"hub config --help\")\n", 2}},
		{[]string{"config", "check"}, result{"", "hub: config check: want one FILE, got 0 arguments (see \"hub config check --help\")\n", 2}},
		{[]string{"version", "extra"}, result{"", "hub: version: unexpected argument \"extra\" (see \"hub version --help\")\n", 2}},

		// Names that cannot be a JID localpart or an MQTT client id.
		{[]string{"user", "add", "a b", "--password", "pw", d}, result{"", "hub: user add: invalid name \"a b\": spaces are not allowed (a name is also an XMPP address and an MQTT client id) (see \"hub user add --help\")\n", 2}},
		{[]string{"user", "add", "alice@home", "--password", "pw", d}, result{"", "hub: user add: invalid name \"alice@home\": '@' is not allowed (a name may not contain any of \"&'/:<>@+#) (see \"hub user add --help\")\n", 2}},
		{[]string{"user", "add", "", "--password", "pw", d}, result{"", "hub: user add: invalid name: a name may not be empty (see \"hub user add --help\")\n", 2}},
		{[]string{"user", "add", strings.Repeat("x", 65), "--password", "pw", d}, result{"", "hub: user add: invalid name \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"...: 65 bytes long, the limit is 64 (see \"hub user add --help\")\n", 2}},
		{[]string{"device", "add", "lamp 1", "--password", "pw", d}, result{"", "hub: device add: invalid name \"lamp 1\": spaces are not allowed (a name is also an XMPP address and an MQTT client id) (see \"hub device add --help\")\n", 2}},
		{[]string{"device", "add", "lämp", "--password", "pw", d}, result{"", "hub: device add: invalid id \"lämp\": use letters, digits, '.', '_' and '-', starting with a letter or digit (see \"hub device add --help\")\n", 2}},
		// A device needs a credential.
		{[]string{"device", "add", "lamp1", d}, result{"", "hub: device add: device \"lamp1\" needs a credential: --password P (MQTT, XMPP) or --psk HEX (CoAP over DTLS) (see \"hub device add --help\")\n", 2}},

		// The store: plain words, exit 1 on failure.
		{[]string{"user", "list", d}, result{"", "no users in $DIR (add one with \"hub user add NAME --password P\")\n", 0}},
		{[]string{"user", "add", "alice", "--password", "pw", d}, result{"user alice added with role user\n", "", 0}},
		{[]string{"user", "add", "--password", "pw", d, "--role", "admin", "root"}, result{"user root added with role admin\n", "", 0}},
		{[]string{"user", "add", "alice", "--password", "pw", d}, result{"", "hub: user \"alice\" already exists\n", 1}},
		{[]string{"user", "list", d}, result{"NAME   ROLE   ADDED\nalice  user   2006-01-02 15:04:05\nroot   admin  2006-01-02 15:04:05\n", "", 0}},
		{[]string{"user", "passwd", "alice", "--password", "new", d}, result{"password of user alice changed\n", "", 0}},
		{[]string{"user", "passwd", "bob", "--password", "new", d}, result{"", "hub: no user \"bob\" in $DIR\n", 1}},
		{[]string{"user", "delete", "root", d}, result{"user root deleted\n", "", 0}},
		{[]string{"user", "delete", "root", d}, result{"", "hub: no user \"root\" in $DIR\n", 1}},
		{[]string{"device", "list", d}, result{"", "no devices in $DIR (add one with \"hub device add ID --password P\")\n", 0}},
		{[]string{"device", "add", "lamp1", "--password", "pw", d}, result{"device lamp1 added (mqtt, password)\n", "", 0}},
		{[]string{"device", "add", d, "sensor1", "--protocol", "coap", "--psk", "736563726574"}, result{"device sensor1 added (coap, psk)\n", "", 0}},
		{[]string{"device", "add", "lamp1", "--password", "pw", d}, result{"", "hub: device \"lamp1\" already exists\n", 1}},
		{[]string{"device", "add", "alice", "--password", "pw", d}, result{"", "hub: a user \"alice\" already exists; a device that logs in with a password needs the user name to itself\n", 1}},
		{[]string{"device", "list", d}, result{"ID       PROTOCOL  CREDENTIALS  STATE    LAST SEEN  NAME\nlamp1    mqtt      password     offline  -          lamp1\nsensor1  coap      psk          offline  -          sensor1\n", "", 0}},
		{[]string{"user", "delete", "lamp1", d}, result{"", "hub: user \"lamp1\" is how device \"lamp1\" logs in; delete the device with \"hub device delete lamp1\"\n", 1}},
		{[]string{"device", "delete", "lamp1", d}, result{"device lamp1 deleted\n", "", 0}},
		{[]string{"device", "delete", "lamp1", d}, result{"", "hub: no device \"lamp1\" in $DIR\n", 1}},
		{[]string{"user", "list", d}, result{"NAME   ROLE  ADDED\nalice  user  2006-01-02 15:04:05\n", "", 0}},
		// "--" ends the flags.
		{[]string{"user", "add", "--password", "pw", d, "--", "--odd"}, result{"user --odd added with role user\n", "", 0}},
	}
	for _, c := range cases {
		got := runCLI(t, dir, c.args...)
		if got != c.want {
			t.Errorf("hub %q:\n%s\nwant:\n%s", c.args, got, c.want)
		}
	}
}

func TestNoCommand(t *testing.T) {
	t.Parallel()
	r := runCLI(t, "")
	if r.code != 2 || r.stdout != "" || !strings.HasPrefix(r.stderr, usage) ||
		!strings.HasSuffix(r.stderr, "\nhub: no command given (see \"hub --help\")\n") {
		t.Fatalf("hub with no arguments:\n%s", r)
	}
}

func TestConfigCheck(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := file("good.yaml", `
mqtt: {addr: "127.0.0.1:1883"}
xmpp:
  domain: hub.example
  jid_rules:
    - {topic: "sensors/{room}/temp", jid: "{room}-temp@sensors.{domain}"}
acl:
  bob: [{action: publish, filter: "bob/#", allow: true}]
bridges:
  - {name: cloud, url: "tcp://127.0.0.1:1", in: [{filter: "cmd/#"}], out: [{filter: "sensors/#"}]}
`)
	cases := []struct {
		name string
		path string
		want result
	}{
		{"good", good, result{"ok\n", "", 0}},
		{"empty", file("empty.yaml", ""), result{"ok\n", "", 0}},
		{"unknown key", file("key.yaml", "mqtt:\n  adr: x\n"), result{"", "hub: config $DIR/key.yaml: line 2: unknown key adr\n", 1}},
		{"syntax", file("syntax.yaml", "mqtt: [\n"), result{"", "hub: config $DIR/syntax.yaml: line 1: did not find expected node content\n", 1}},
		{"wrong kind", file("kind.yaml", "max_queued: lots\n"), result{"", "hub: config $DIR/kind.yaml: line 1: \"lots\" is a string, which does not fit here (expected int)\n", 1}},
		{"two errors", file("two.yaml", "mqtt:\n  adr: x\n  max_queued: many\n"), result{"", "hub: config $DIR/two.yaml: line 2: unknown key adr; line 3: \"many\" is a string, which does not fit here (expected int)\n", 1}},
		{"bad address", file("addr.yaml", "http:\n  addr: nonsense\n"), result{"", "hub: config $DIR/addr.yaml: http.addr \"nonsense\": want host:port or \"off\": address nonsense: missing port in address\n", 1}},
		{"bad policy", file("policy.yaml", "queue_policy: drop_random\n"), result{"", "hub: config $DIR/policy.yaml: queue_policy \"drop_random\": want drop_oldest or drop_newest\n", 1}},
		{"bad sync interval", file("sync.yaml", "sync_interval: 0\n"), result{"", "hub: config $DIR/sync.yaml: sync_interval \"0\": want always or a positive duration such as 1s or 250ms\n", 1}},
		{"missing tls file", file("tls.yaml", "tls: {cert_file: /nonexistent/c.pem, key_file: /nonexistent/k.pem}\nmqtt: {tls_addr: \"127.0.0.1:8883\"}\n"),
			result{"", "hub: config $DIR/tls.yaml: tls: open /nonexistent/c.pem: no such file or directory\n", 1}},
		{"missing file", filepath.Join(dir, "none.yaml"), result{"", "hub: config: open $DIR/none.yaml: no such file or directory\n", 1}},
	}
	for _, c := range cases {
		got := runCLI(t, dir, "config", "check", c.path)
		if got != c.want {
			t.Errorf("%s:\n%s\nwant:\n%s", c.name, got, c.want)
		}
	}
	// The check neither creates the configured data dir nor binds.
	data := filepath.Join(dir, "data")
	if got := runCLI(t, dir, "config", "check", file("data.yaml", "data_dir: "+data+"\n")); got.code != 0 {
		t.Fatalf("check with a data dir:\n%s", got)
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Fatalf("config check touched the data dir: %v", err)
	}
}

func TestVersionText(t *testing.T) {
	t.Parallel()
	settings := func(kv ...string) []debug.BuildSetting {
		var s []debug.BuildSetting
		for i := 0; i < len(kv); i += 2 {
			s = append(s, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return s
	}
	rev := "36b0b5b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7"
	cases := []struct {
		name   string
		linked string
		bi     *debug.BuildInfo
		ok     bool
		want   string
	}{
		{"release tag", "", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.4.0"},
			Settings: settings("GOOS", "linux", "GOARCH", "arm64", "vcs.revision", rev, "vcs.time", "2026-12-01T09:30:00Z", "vcs.modified", "false")}, true,
			"hub v1.4.0\nrevision " + rev + " (2026-12-01T09:30:00Z)\ngo1.26.8 linux/arm64\n"},
		{"dirty tree", "", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261201093000-36b0b5b1c2d3+dirty"},
			Settings: settings("GOOS", "linux", "GOARCH", "arm", "GOARM", "7", "vcs.revision", rev, "vcs.time", "2026-12-01T09:30:00Z", "vcs.modified", "true")}, true,
			"hub v0.0.0-20261201093000-36b0b5b1c2d3+dirty\nrevision " + rev + " (2026-12-01T09:30:00Z), modified: built with uncommitted changes\ngo1.26.8 linux/arm GOARM=7\n"},
		{"devel with a revision", "", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"},
			Settings: settings("GOOS", "linux", "GOARCH", "amd64", "vcs.revision", rev)}, true,
			"hub dev\nrevision " + rev + "\ngo1.26.8 linux/amd64\n"},
		{"go run", "", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"},
			Settings: settings("GOOS", "linux", "GOARCH", "amd64")}, true,
			"hub dev\nrevision unknown: built without version control information (go run, go test or -buildvcs=false)\ngo1.26.8 linux/amd64\n"},
		{"go install module@version", "", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.4.0"},
			Settings: settings("GOOS", "linux", "GOARCH", "amd64")}, true,
			"hub v1.4.0\nrevision unknown: built without version control information (go run, go test or -buildvcs=false)\ngo1.26.8 linux/amd64\n"},
		{"set at link time", "v1.5.0-rc1", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"},
			Settings: settings("GOOS", "linux", "GOARCH", "amd64", "vcs.revision", rev)}, true,
			"hub v1.5.0-rc1\nrevision " + rev + "\ngo1.26.8 linux/amd64\n"},
	}
	for _, c := range cases {
		if got := versionText(c.linked, c.bi, c.ok); got != c.want {
			t.Errorf("%s:\n%s\nwant:\n%s", c.name, got, c.want)
		}
	}
	if got := versionText("", nil, false); !strings.HasPrefix(got, "hub dev\nrevision unknown: the binary carries no build information\n") {
		t.Errorf("without build info: %q", got)
	}
	// What this test binary says of itself.
	r := runCLI(t, "", "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "hub ") || r.stderr != "" {
		t.Errorf("hub version:\n%s", r)
	}
}

func TestLockDataDir(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	first, err := lockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "LOCK")); string(b) != strconv.Itoa(os.Getpid())+"\n" {
		t.Fatalf("LOCK holds %q, want this pid", b)
	}
	_, err = lockDataDir(dir)
	want := fmt.Sprintf("data dir %s is in use by another hub (pid %d, holding %s): stop that one or give this one another --data-dir",
		dir, os.Getpid(), filepath.Join(dir, "LOCK"))
	if err == nil || err.Error() != want {
		t.Fatalf("second lock: %v, want %q", err, want)
	}
	first.release()
	again, err := lockDataDir(dir)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	again.release()
}

// TestServeTwiceOnOneDataDir: the second "hub serve" on a data dir that a
// running one holds exits with status 1, naming the dir and the pid.
func TestServeTwiceOnOneDataDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	off := []string{"--mqtt-addr", "off", "--coap-addr", "off", "--xmpp-addr", "off", "--http-addr", "off"}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan result, 1)
	var log hubtest.LogBuffer
	go func() {
		var stdout strings.Builder
		code := runMain(ctx, append([]string{"serve", "--data-dir", dir}, off...), &stdout, &log)
		done <- result{stdout.String(), log.String(), code}
	}()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(log.String(), "hub: serving"); {
		if time.Now().After(deadline) {
			t.Fatalf("the first hub is not serving: %s", log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	got := runCLI(t, dir, append([]string{"serve", "--data-dir", dir}, off...)...)
	want := result{"", fmt.Sprintf("hub: data dir $DIR is in use by another hub (pid %d, holding $DIR/LOCK): stop that one or give this one another --data-dir\n", os.Getpid()), 1}
	if got != want {
		t.Errorf("second serve:\n%s\nwant:\n%s", got, want)
	}
	cancel()
	if r := <-done; r.code != 0 {
		t.Fatalf("first serve:\n%s", r)
	}
	// Once the first has stopped the dir is free again.
	if l, err := lockDataDir(dir); err != nil {
		t.Fatalf("after the first stopped: %v", err)
	} else {
		l.release()
	}
}

// TestLockHeldByAnotherProcess: the pid named is the other process's.
func TestLockHeldByAnotherProcess(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperHoldLock$")
	cmd.Env = append(os.Environ(), "HUB_TEST_HOLD_LOCK="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stdin.Close(); _ = cmd.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "locked\n" {
		t.Fatalf("helper: %q %v", line, err)
	}
	_, err = lockDataDir(dir)
	if want := fmt.Sprintf("(pid %d, holding", cmd.Process.Pid); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("lock held by pid %d: %v", cmd.Process.Pid, err)
	}
}

// TestHelperHoldLock is the other process of TestLockHeldByAnotherProcess:
// it holds the lock until its stdin closes.
func TestHelperHoldLock(t *testing.T) {
	dir := os.Getenv("HUB_TEST_HOLD_LOCK")
	if dir == "" {
		t.Skip("helper process only")
	}
	l, err := lockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer l.release()
	fmt.Println("locked")
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// TestServeStoppedWhileStarting: SIGINT or SIGTERM during start-up is a
// stop, not a failure.
func TestServeStoppedWhileStarting(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	var stdout, stderr strings.Builder
	code := runMain(ctx, []string{"serve", "--data-dir", t.TempDir(), "--mqtt-addr", "off", "--coap-addr", "off",
		"--xmpp-addr", "off", "--http-addr", "off", "--log-level", "error"}, &stdout, &stderr)
	if code != 0 || stderr.String() != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hubsmith/hub/mqttwire"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// commands are the modes that are not a publish/subscribe run.
var commands = map[string]func(ctx context.Context, args []string, stdout, stderr io.Writer) int{
	"idle":  cmdIdle,
	"login": cmdLogin,
	"mochi": cmdMochi,
}

// Bounds of the idle and login commands.
const (
	maxIdleMQTT = 50_000
	maxIdleXMPP = 10_000
	maxLogins   = 1_000_000
	maxWorkers  = 1000
	maxHold     = 10 * time.Minute
)

// parseFlags parses a command's flags and reports usage errors as status 2
// (0 for -h).
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) (code int, ok bool) {
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		fmt.Fprintln(stderr, "hubload:", err)
		return 2, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "hubload: unexpected argument %q\n", fs.Arg(0))
		return 2, false
	}
	return 0, true
}

// usageError prints err and returns status 2.
func usageError(stderr io.Writer, err error) int {
	fmt.Fprintln(stderr, "hubload:", err)
	return 2
}

// mochiVersion is the mochi-mqtt module version this binary was built
// with, and whether it is the hub's patched copy (scripts/bench.sh builds
// hubload without it for its mochi target).
func mochiVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/mochi-mqtt/server/v2" {
				if d.Replace != nil { // the hub's patched copy
					return d.Version + " (patched, " + d.Replace.Path + ")"
				}
				return d.Version
			}
		}
	}
	return "(unknown version)"
}

// cmdMochi runs a bare mochi-mqtt broker with its default options (every
// client allowed in), the baseline the hub's MQTT figures are compared
// with, until ctx ends.
func cmdMochi(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("hubload mochi", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:1883", "TCP address to listen on")
	allowRemote := fs.Bool("allow-remote", false, "allow an address that is not loopback")
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	if !*allowRemote {
		if err := checkLoopback(ctx, "tcp://"+*addr); err != nil {
			return usageError(stderr, err)
		}
	}
	// Default options; only mochi's logging goes to stderr at warning level
	// (its default logs every connection at info on stdout).
	srv := mochi.New(&mochi.Options{Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		fmt.Fprintln(stderr, "hubload mochi: hook:", err)
		return 1
	}
	l := listeners.NewTCP(listeners.Config{ID: "tcp", Address: *addr})
	if err := srv.AddListener(l); err != nil {
		fmt.Fprintln(stderr, "hubload mochi: listen:", err)
		return 1
	}
	if err := srv.Serve(); err != nil {
		fmt.Fprintln(stderr, "hubload mochi: serve:", err)
		return 1
	}
	fmt.Fprintf(stdout, "mochi-mqtt %s listening on %s\n", mochiVersion(), l.Address())
	<-ctx.Done()
	if err := srv.Close(); err != nil {
		fmt.Fprintln(stderr, "hubload mochi: close:", err)
		return 1
	}
	return 0
}

// IdleResult is what the idle command measured. Memory is the server's
// VmRSS (/proc/PID/status) in KiB.
type IdleResult struct {
	MQTT        int     `json:"mqtt_sessions"`
	XMPP        int     `json:"xmpp_sessions"`
	RSSBefore   uint64  `json:"rss_before_kib"`
	RSSAfter    uint64  `json:"rss_after_kib"`
	RSSPeak     uint64  `json:"rss_peak_kib"`
	BytesPer    float64 `json:"bytes_per_session"`
	ConnectSecs float64 `json:"connect_seconds"`
	IdleSecs    float64 `json:"idle_seconds"` // --idle: how long they were idle before the RSS was read
}

// mqttConnectPacket is an MQTT 3.1.1 CONNECT with a clean session and
// the given keepalive, client id and optional username/password.
func mqttConnectPacket(clientID, username, password string, keepalive uint16) []byte {
	return mqttwire.AppendConnect(nil, mqttwire.ConnectSpec{ClientID: clientID, Username: username, Password: password, KeepAlive: keepalive, Clean: true})
}

// checkConnack reads a CONNACK from b: 0x20 0x02 flags code; it wants
// code 0.
func checkConnack(b []byte) error {
	if len(b) != 4 || b[0] != 0x20 || b[1] != 0x02 {
		return fmt.Errorf("mqtt: want CONNACK, got % x", b)
	}
	if b[3] != 0 {
		return fmt.Errorf("mqtt: CONNACK return code %d", b[3])
	}
	return nil
}

// idleKeepalive is the keepalive of idle MQTT connections, in seconds.
const idleKeepalive = 900

// dialIdleMQTT opens one MQTT connection and waits for its CONNACK. It
// is a bare socket: 10,000 of them cost hubload little.
func dialIdleMQTT(ctx context.Context, addr, clientID, username, password string) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("mqtt: dial %s: %w", addr, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// A keepalive of 15 minutes: the client need not ping while it is
	// measured (servers allow 1.5 times it), and servers do not warn about
	// it as they do about 0.
	if _, err := conn.Write(mqttConnectPacket(clientID, username, password, idleKeepalive)); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("mqtt: write CONNECT: %w", err)
	}
	ack := make([]byte, 4)
	if _, err := io.ReadFull(conn, ack); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("mqtt: read CONNACK: %w", err)
	}
	if err := checkConnack(ack); err != nil {
		_ = conn.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, nil
}

// mqttHostPort returns host:port of a tcp://host:port URL (1883 by default).
func mqttHostPort(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("url %q: %w", raw, err)
	}
	if (u.Scheme != "tcp" && u.Scheme != "mqtt") || u.Host == "" {
		return "", fmt.Errorf("url %q: want tcp://host:port", raw)
	}
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), "1883"), nil
	}
	return u.Host, nil
}

// settleRSS samples pid's RSS every 100 ms until two readings 300 ms apart
// differ by less than 1 %, or for at most max.
func settleRSS(ctx context.Context, pid int, max time.Duration) (memSample, error) {
	deadline := time.Now().Add(max)
	prev, err := readProcStatus(pid)
	if err != nil {
		return memSample{}, err
	}
	t := time.NewTicker(300 * time.Millisecond)
	defer t.Stop()
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return prev, nil
		case <-t.C:
		}
		cur, err := readProcStatus(pid)
		if err != nil {
			return memSample{}, err
		}
		diff := int64(cur.rss) - int64(prev.rss)
		if diff < 0 {
			diff = -diff
		}
		prev = cur
		if diff*100 < int64(cur.rss) {
			break
		}
	}
	return prev, nil
}

// cmdIdle opens --mqtt idle MQTT connections and --xmpp logged-in XMPP
// sessions (with presence), waits for the server's RSS to settle, prints
// how much it grew per session, holds them for --hold and closes them.
func cmdIdle(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("hubload idle", flag.ContinueOnError)
	c := &config{connectTimeout: time.Minute}
	mqttURL := fs.String("mqtt-url", "tcp://127.0.0.1:1883", "MQTT URL")
	nMQTT := fs.Int("mqtt", 0, fmt.Sprintf("idle MQTT connections (0..%d)", maxIdleMQTT))
	xmppURL := fs.String("xmpp-url", "xmpp://127.0.0.1:5222", "XMPP c2s URL")
	nXMPP := fs.Int("xmpp", 0, fmt.Sprintf("idle XMPP sessions (0..%d)", maxIdleXMPP))
	fs.StringVar(&c.domain, "domain", "localhost", "XMPP domain")
	fs.StringVar(&c.xmppUser, "xmpp-user", "load%d", "XMPP user names; %d becomes the session number modulo --xmpp-users")
	xmppUsers := fs.Int("xmpp-users", 0, "spread the XMPP sessions over this many users, each with several resources (0: a user per session)")
	fs.StringVar(&c.xmppPassword, "xmpp-password", "loadpw", "password of every XMPP user")
	fs.StringVar(&c.username, "username", "", "MQTT username")
	fs.StringVar(&c.password, "password", "", "MQTT password")
	fs.IntVar(&c.pid, "pid", 0, "process id of the server (required)")
	fs.StringVar(&c.clientPrefix, "client-prefix", fmt.Sprintf("hubidle-%08x", time.Now().UnixNano()&0xffffffff), "prefix of MQTT client ids")
	hold := fs.Duration("hold", 0, "keep the sessions open this long after measuring (at most 10m)")
	settle := fs.Duration("settle", 5*time.Second, "longest wait for the RSS to settle")
	idle := fs.Duration("idle", 0, "how long the sessions stay idle before the RSS is read (a server may free what an idle connection does not use: the hub parks a client idle for 2s)")
	fs.DurationVar(&c.connectTimeout, "connect-timeout", time.Minute, "bound on opening every session")
	allowRemote := fs.Bool("allow-remote", false, "allow a target that is not a loopback address")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	switch {
	case *nMQTT < 0 || *nMQTT > maxIdleMQTT:
		return usageError(stderr, fmt.Errorf("--mqtt %d: must be 0..%d", *nMQTT, maxIdleMQTT))
	case *nXMPP < 0 || *nXMPP > maxIdleXMPP:
		return usageError(stderr, fmt.Errorf("--xmpp %d: must be 0..%d", *nXMPP, maxIdleXMPP))
	case *nMQTT+*nXMPP == 0:
		return usageError(stderr, errors.New("want --mqtt or --xmpp sessions"))
	case c.pid <= 0:
		return usageError(stderr, errors.New("--pid: the server's process id is required"))
	case *hold < 0 || *hold > maxHold:
		return usageError(stderr, fmt.Errorf("--hold %s: must be 0..%s", *hold, maxHold))
	case *idle < 0 || *idle > maxHold:
		return usageError(stderr, fmt.Errorf("--idle %s: must be 0..%s", *idle, maxHold))
	case *settle <= 0 || *settle > maxDrain:
		return usageError(stderr, fmt.Errorf("--settle %s: must be more than 0 and at most %s", *settle, maxDrain))
	case c.connectTimeout <= 0 || c.connectTimeout > maxDuration:
		return usageError(stderr, fmt.Errorf("--connect-timeout %s: must be more than 0 and at most %s", c.connectTimeout, maxDuration))
	case *xmppUsers < 0:
		return usageError(stderr, fmt.Errorf("--xmpp-users %d: must not be negative", *xmppUsers))
	}
	mqttAddr, err := mqttHostPort(*mqttURL)
	if err != nil {
		return usageError(stderr, err)
	}
	xAddr, err := xmppAddr(*xmppURL)
	if err != nil {
		return usageError(stderr, err)
	}
	if !*allowRemote {
		for _, u := range []string{*mqttURL, *xmppURL} {
			if err := checkLoopback(ctx, u); err != nil {
				return usageError(stderr, err)
			}
		}
	}
	res, err := runIdle(ctx, c, mqttAddr, *nMQTT, xAddr, *nXMPP, *xmppUsers, idleTiming{idle: *idle, settle: *settle, hold: *hold})
	if err != nil {
		fmt.Fprintln(stderr, "hubload idle:", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			fmt.Fprintln(stderr, "hubload idle:", err)
			return 1
		}
		return 0
	}
	fmt.Fprintf(stdout, "hubload idle  mqtt=%d xmpp=%d  connected in %.2fs\n", res.MQTT, res.XMPP, res.ConnectSecs)
	fmt.Fprintf(stdout, "  server RSS  %s before, %s after (peak %s): %.1f KB per session\n",
		mib(res.RSSBefore), mib(res.RSSAfter), mib(res.RSSPeak), res.BytesPer/1000)
	return 0
}

// idleTiming is when runIdle measures: after the sessions were idle for
// idle, once the RSS settled (at most settle); it then holds them for hold.
type idleTiming struct{ idle, settle, hold time.Duration }

// runIdle opens the sessions, measures and closes them.
func runIdle(ctx context.Context, c *config, mqttAddr string, nMQTT int, xmppAddr string, nXMPP, xmppUsers int, tm idleTiming) (*IdleResult, error) {
	if xmppUsers <= 0 {
		xmppUsers = max(nXMPP, 1)
	}
	before, err := settleRSS(ctx, c.pid, tm.settle)
	if err != nil {
		return nil, err
	}
	sampler, err := startRSSSampler(c.pid, 100*time.Millisecond)
	if err != nil {
		return nil, err
	}
	defer sampler.stop()
	connectCtx, cancel := context.WithTimeout(ctx, c.connectTimeout)
	defer cancel()
	start := time.Now()
	conns := make([]net.Conn, nMQTT)
	sessions := make([]*xmppSession, nXMPP)
	defer func() {
		closeAll(nMQTT, func(i int) {
			if conns[i] != nil {
				_ = conns[i].Close()
			}
		})
		closeAll(nXMPP, func(i int) {
			if sessions[i] != nil {
				sessions[i].close()
			}
		})
	}()
	if err := connectAll(connectCtx, nMQTT, func(ctx context.Context, i int) error {
		conn, err := dialIdleMQTT(ctx, mqttAddr, fmt.Sprintf("%s-%d", c.clientPrefix, i), c.username, c.password)
		if err != nil {
			return fmt.Errorf("mqtt connection %d: %w", i, err)
		}
		conns[i] = conn
		return nil
	}); err != nil {
		return nil, err
	}
	var streamErrs errorLog
	if err := connectAll(connectCtx, nXMPP, func(ctx context.Context, i int) error {
		x, err := serveXMPP(ctx, c, xmppAddr, xmppUser(c.xmppUser, i%xmppUsers), func(xmppStanza) {}, streamErrs.add)
		if err != nil {
			return fmt.Errorf("xmpp session %d: %w", i, err)
		}
		sessions[i] = x
		if err := x.send(ctx, `<presence/>`); err != nil {
			return fmt.Errorf("xmpp session %d: %w", i, err)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	connected := time.Since(start)
	sleepCtx(ctx, tm.idle)
	after, err := settleRSS(ctx, c.pid, tm.settle)
	if err != nil {
		return nil, err
	}
	if n := streamErrs.total(); n > 0 {
		return nil, fmt.Errorf("%d xmpp sessions ended: %v", n, streamErrs.summary())
	}
	res := &IdleResult{MQTT: nMQTT, XMPP: nXMPP, RSSBefore: before.rss, RSSAfter: after.rss, ConnectSecs: connected.Seconds(), IdleSecs: tm.idle.Seconds()}
	res.RSSPeak = sampler.result(before).MaxRSSKiB
	res.BytesPer = (float64(after.rss) - float64(before.rss)) * 1024 / float64(nMQTT+nXMPP)
	sleepCtx(ctx, tm.hold)
	return res, nil
}

// sleepCtx waits for d, or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// LoginResult is what the login command measured.
type LoginResult struct {
	Workers     int            `json:"workers"`
	Logins      uint64         `json:"logins"`
	Failed      uint64         `json:"failed"`
	Errors      []string       `json:"errors,omitempty"`
	Seconds     float64        `json:"seconds"`
	LoginsPerS  float64        `json:"logins_per_s"`
	Latency     LatencySummary `json:"latency"`
	TimedOut    bool           `json:"timed_out"`
	Interrupted bool           `json:"interrupted"`
	Target      *TargetUsage   `json:"target,omitempty"`
}

// cmdLogin runs --workers clients, each logging in (TCP, STARTTLS, SASL,
// bind) and closing again, until --logins in all or --duration.
func cmdLogin(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("hubload login", flag.ContinueOnError)
	c := &config{}
	fs.StringVar(&c.url, "url", "xmpp://127.0.0.1:5222", "XMPP c2s URL")
	workers := fs.Int("workers", 4, "clients logging in side by side; worker i is user --xmpp-user with %d = i")
	logins := fs.Int("logins", 200, "logins in all")
	fs.DurationVar(&c.duration, "duration", 30*time.Second, "longest time to run (at most 10m)")
	fs.StringVar(&c.domain, "domain", "localhost", "XMPP domain")
	fs.StringVar(&c.xmppUser, "xmpp-user", "load%d", "XMPP user names")
	fs.StringVar(&c.xmppPassword, "xmpp-password", "loadpw", "password of every XMPP user")
	fs.IntVar(&c.pid, "pid", 0, "process id of the server, to report its CPU and memory")
	allowRemote := fs.Bool("allow-remote", false, "allow a target that is not a loopback address")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	switch {
	case *workers < 1 || *workers > maxWorkers:
		return usageError(stderr, fmt.Errorf("--workers %d: must be 1..%d", *workers, maxWorkers))
	case *logins < 1 || *logins > maxLogins:
		return usageError(stderr, fmt.Errorf("--logins %d: must be 1..%d", *logins, maxLogins))
	case c.duration <= 0 || c.duration > maxDuration:
		return usageError(stderr, fmt.Errorf("--duration %s: must be more than 0 and at most %s", c.duration, maxDuration))
	case c.pid < 0:
		return usageError(stderr, fmt.Errorf("--pid %d: must be a process id", c.pid))
	}
	addr, err := xmppAddr(c.url)
	if err != nil {
		return usageError(stderr, err)
	}
	if !*allowRemote {
		if err := checkLoopback(ctx, c.url); err != nil {
			return usageError(stderr, err)
		}
	}
	res, err := runLogins(ctx, c, addr, *workers, *logins)
	if err != nil {
		fmt.Fprintln(stderr, "hubload login:", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			fmt.Fprintln(stderr, "hubload login:", err)
			return 1
		}
		return 0
	}
	l := res.Latency
	fmt.Fprintf(stdout, "hubload login %s  workers=%d\n", c.url, res.Workers)
	fmt.Fprintf(stdout, "  logins     %d (%d failed) in %.3fs  %.0f/s\n", res.Logins, res.Failed, res.Seconds, res.LoginsPerS)
	fmt.Fprintf(stdout, "  latency    p50 %s  p90 %s  p99 %s  max %s\n", ms(l.P50Ms), ms(l.P90Ms), ms(l.P99Ms), ms(l.MaxMs))
	if t := res.Target; t != nil {
		fmt.Fprintf(stdout, "  target     pid %d  cpu %.2fs  VmRSS %s  max sampled %s\n", t.PID, t.CPUSeconds, mib(t.VmRSSKiB), mib(t.MaxRSSKiB))
	}
	if len(res.Errors) > 0 {
		fmt.Fprintf(stdout, "  errors     %v\n", res.Errors)
	}
	return 0
}

// runLogins logs in and out repeatedly and measures each login.
func runLogins(ctx context.Context, c *config, addr string, workers, logins int) (*LoginResult, error) {
	var sampler *rssSampler
	var cpu0 time.Duration
	if c.pid > 0 {
		var err error
		if sampler, err = startRSSSampler(c.pid, 50*time.Millisecond); err != nil {
			return nil, err
		}
		defer sampler.stop()
		cpu0, _ = readProcCPU(c.pid)
	}
	runCtx, cancel := context.WithTimeout(ctx, c.duration)
	defer cancel()
	var next atomic.Int64
	var failed atomic.Uint64
	var errs errorLog
	hists := make([]*histogram, workers)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		hists[w] = newHistogram()
		user := xmppUser(c.xmppUser, w)
		wg.Go(func() {
			for next.Add(1) <= int64(logins) && runCtx.Err() == nil {
				t0 := time.Now()
				lctx, lcancel := context.WithTimeout(runCtx, 10*time.Second)
				s, err := loginXMPP(lctx, addr, c.domain, user, c.xmppPassword)
				lcancel()
				if err != nil {
					if runCtx.Err() == nil {
						failed.Add(1)
						errs.add(err)
					}
					continue
				}
				hists[w].record(time.Since(t0).Nanoseconds())
				_ = s.Close()
				_ = s.Conn().Close()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	all := newHistogram()
	for _, h := range hists {
		all.merge(h)
	}
	res := &LoginResult{
		Workers: workers, Logins: all.n, Failed: failed.Load(), Errors: errs.summary(),
		Seconds: elapsed.Seconds(), Latency: all.summary(),
		TimedOut: errors.Is(runCtx.Err(), context.DeadlineExceeded) && ctx.Err() == nil, Interrupted: ctx.Err() != nil,
	}
	if res.Seconds > 0 {
		res.LoginsPerS = float64(res.Logins) / res.Seconds
	}
	if sampler != nil {
		res.Target = sampler.result(memSample{})
		if cpu, err := readProcCPU(c.pid); err == nil {
			res.Target.CPUSeconds = (cpu - cpu0).Seconds()
		}
	}
	return res, nil
}

package crashtest

import (
	"bufio"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/udp"
)

// The soak test's bounds. HUB_SOAK=5m runs the load longer.
const (
	defaultSoakLoad = 40 * time.Second
	soakWorkers     = 6
	soakMaxOps      = 20000 // per worker, whatever the duration
	// Margins of the end state over the state after warm-up, once every
	// client has gone: goroutines within soakGoroutineSlack (or 5 %),
	// descriptors within soakFDSlack and sockets within soakSocketSlack, RSS within soakRSSFactor (or
	// soakRSSSlackKB): Go keeps the heap it grew for a while, but a leak
	// of one state per client over thousands of clients shows.
	soakGoroutineSlack = 5
	soakFDSlack        = 8 // the store's connection pool may grow (3 files per SQLite connection)
	soakSocketSlack    = 2
	soakRSSFactor      = 2.0
	soakRSSSlackKB     = 60 << 10
)

// soakConfig makes a vanished CoAP observer's CON notification give up
// within seconds (ACK_TIMEOUT 250 ms, MAX_RETRANSMIT 3: 5.6 s), where
// the defaults take 93 s, and forgets a CoAP endpoint idle for 10 s (1 m
// by default), so that the test's settling stays short.
const soakConfig = `coap:
  ack_timeout: 250ms
  max_retransmit: 3
  endpoint_idle_timeout: 10s
`

// gauges are what the soak test watches of the hub process.
type gauges struct {
	goroutines int
	rssKB      int
	fds        int
	sockets    int // of fds
}

func (g gauges) String() string {
	return fmt.Sprintf("goroutines %d, RSS %.1f MiB, fds %d (sockets %d)", g.goroutines, float64(g.rssKB)/1024, g.fds, g.sockets)
}

// openSockets counts the process's open socket descriptors.
func openSockets(pid int) int {
	dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return -1
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}

// gauges reads go_goroutines from /metrics, VmRSS and the open
// descriptors from /proc.
func (h *hubProc) gauges() (gauges, error) {
	g := gauges{rssKB: h.rssKB(), fds: openFDs(h.pid()), sockets: openSockets(h.pid())}
	// No keep-alive: a pooled connection would count as the hub's own.
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + h.http + "/metrics")
	if err != nil {
		return g, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return g, fmt.Errorf("go_goroutines %q: %w", v, err)
			}
			g.goroutines = int(n)
			return g, nil
		}
	}
	return g, errors.New("no go_goroutines in /metrics")
}

// soakLoad is how long the load runs: HUB_SOAK, or defaultSoakLoad.
func soakLoad(t *testing.T) time.Duration {
	s := os.Getenv("HUB_SOAK")
	if s == "" {
		return defaultSoakLoad
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		t.Fatalf("HUB_SOAK=%q: want a duration such as 5m", s)
	}
	return d
}

// soakAction is one thing a soak client does, from connecting to being
// gone; it returns when its client is closed or abandoned.
type soakAction struct {
	name string
	run  func(ctx context.Context, h *hubProc, id string) error
}

var soakActions = []soakAction{
	{"mqtt subscribe and disconnect", func(ctx context.Context, h *hubProc, id string) error {
		got := make(chan struct{}, 1)
		opts := paho.NewClientOptions().AddBroker("tcp://" + h.mqtt).SetClientID(id).SetCleanSession(true).
			SetAutoReconnect(false).SetConnectTimeout(ackTimeout).
			SetDefaultPublishHandler(func(paho.Client, paho.Message) {
				select {
				case got <- struct{}{}:
				default:
				}
			})
		c := paho.NewClient(opts)
		if tok := c.Connect(); !tok.WaitTimeout(ackTimeout) || tok.Error() != nil {
			return fmt.Errorf("connect: %v", tok.Error())
		}
		defer c.Disconnect(0)
		if tok := c.Subscribe("soak/#", 1, nil); !tok.WaitTimeout(ackTimeout) || tok.Error() != nil {
			return fmt.Errorf("subscribe: %v", tok.Error())
		}
		return wait(ctx, got, time.Second)
	}},
	{"mqtt vanish", func(_ context.Context, h *hubProc, id string) error {
		c, err := dialRawMQTT(h.mqtt, id, true, "soak/#", 1)
		if err != nil {
			return err
		}
		c.close() // no DISCONNECT
		return nil
	}},
	{"mqtt stall", func(ctx context.Context, h *hubProc, id string) error {
		c, err := dialRawMQTT(h.mqtt, id, true, "soak/#", 1)
		if err != nil {
			return err
		}
		defer c.close()
		return sleepCtx(ctx, 2*time.Second) // never reads while publishes flow
	}},
	{"coap observe and cancel", func(ctx context.Context, h *hubProc, _ string) error {
		cc, err := udp.Dial(h.coap, options.WithErrors(func(error) {}))
		if err != nil {
			return err
		}
		defer cc.Close()
		got := make(chan struct{}, 4)
		obs, err := cc.Observe(ctx, "/ps/soak/+", func(*pool.Message) {
			select {
			case got <- struct{}{}:
			default:
			}
		})
		if err != nil {
			return fmt.Errorf("observe: %w", err)
		}
		<-got // the registration response
		err = wait(ctx, got, 2*time.Second)
		cctx, cancel := context.WithTimeout(ctx, ackTimeout)
		defer cancel()
		_ = obs.Cancel(cctx) // a 4.04 to the deregistering GET is an error for go-coap
		return err
	}},
	{"coap observe and vanish", func(ctx context.Context, h *hubProc, _ string) error {
		cc, err := udp.Dial(h.coap, options.WithErrors(func(error) {}))
		if err != nil {
			return err
		}
		got := make(chan struct{}, 1)
		if _, err := cc.Observe(ctx, "/ps/soak/feed", func(*pool.Message) {
			select {
			case got <- struct{}{}:
			default:
			}
		}); err != nil {
			_ = cc.Close()
			return fmt.Errorf("observe: %w", err)
		}
		_ = cc.Close() // no deregistration: the hub learns from a CON notification left unanswered
		return nil
	}},
	{"coap post", func(ctx context.Context, h *hubProc, _ string) error {
		p, err := dialCoAPPub(h, "soak/coap")
		if err != nil {
			return err
		}
		defer p.close()
		if err := p.send(ctx, "coap con"); err != nil {
			return err
		}
		code, err := p.post(ctx, "qos=0", "coap non")
		if err == nil && code != codes.Changed {
			err = coapCode{code}
		}
		return err
	}},
	{"xmpp chat", func(ctx context.Context, h *hubProc, _ string) error {
		p, err := dialXMPPPub(h, "admin", "adminpw", "soak/xmpp")
		if err != nil {
			return err
		}
		defer p.close()
		sctx, cancel := context.WithTimeout(ctx, ackTimeout)
		defer cancel()
		return p.send(sctx, "xmpp chat")
	}},
	{"xmpp topic subscriber reads and vanishes", func(ctx context.Context, h *hubProc, _ string) error {
		return xmppSoakSession(ctx, h, true)
	}},
	{"xmpp topic subscriber stalls", func(ctx context.Context, h *hubProc, _ string) error {
		return xmppSoakSession(ctx, h, false)
	}},
	{"rest publish", func(_ context.Context, h *hubProc, _ string) error {
		code, err := restPublish(h, "soak/rest", 1, "rest")
		if err == nil && code != http.StatusOK && code != http.StatusCreated {
			err = restStatus{code, ""}
		}
		return err
	}},
	{"sse read", func(ctx context.Context, h *hubProc, _ string) error {
		return sseSoak(ctx, h, true)
	}},
	{"sse stall", func(ctx context.Context, h *hubProc, _ string) error {
		return sseSoak(ctx, h, false)
	}},
}

// wait waits for one value on ch, at most d.
func wait(ctx context.Context, ch <-chan struct{}, d time.Duration) error {
	select {
	case <-ch:
		return nil
	case <-time.After(d):
		return fmt.Errorf("nothing within %v", d)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// sleepCtx is a client holding on for d (the soak's stalls).
func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return nil
	}
}

// xmppSoakSession logs alice in (she subscribed to soak/feed's topic JID
// in warm-up, so her presence brings its messages); reading, it waits for
// one message and closes the TCP connection without ending the stream;
// stalling, it reads nothing for two seconds first.
// Several of alice's sessions may run at once, as resources of one user.
func xmppSoakSession(ctx context.Context, h *hubProc, read bool) error {
	lctx, cancel := context.WithTimeout(ctx, ackTimeout)
	defer cancel()
	s, err := xmppLogin(lctx, h, "alice", "alicepw")
	if err != nil {
		return err
	}
	conn := s.Conn()
	defer conn.Close()
	_ = conn.SetWriteDeadline(time.Now().Add(ackTimeout))
	if _, err := io.WriteString(conn, `<presence/>`); err != nil {
		return fmt.Errorf("presence: %w", err)
	}
	if !read {
		return sleepCtx(ctx, 2*time.Second)
	}
	got := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		d := xml.NewDecoder(conn)
		for {
			tok, err := d.Token()
			if err != nil {
				return
			}
			if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "body" {
				select {
				case got <- struct{}{}:
				default:
				}
			}
		}
	}()
	err = wait(ctx, got, 3*time.Second)
	_ = conn.Close()
	<-done
	return err
}

// sseSoak opens an SSE stream on soak/#; reading, it waits for an event;
// stalling, it reads nothing for two seconds. Then it closes.
func sseSoak(ctx context.Context, h *hubProc, read bool) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+h.http+"/api/v1/subscribe?filter=soak/%23", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return restStatus{resp.StatusCode, ""}
	}
	if !read {
		return sleepCtx(ctx, 2*time.Second)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data:") {
			return nil
		}
	}
	return fmt.Errorf("sse ended without an event: %v", sc.Err())
}

// TestSoak runs mixed clients of every protocol against the real binary
// for a bounded time (HUB_SOAK, default 40 s): they connect, subscribe,
// read, stall and vanish while publishers keep soak/... busy. Once they
// are gone, the hub's goroutines, descriptors and RSS must be back near
// their values after warm-up, and a good client of every protocol must
// still be served.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for about a minute")
	}
	load := soakLoad(t)
	cfg := filepath.Join(t.TempDir(), "hub.yaml")
	if err := os.WriteFile(cfg, []byte(soakConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	pprofAddr := addr(freePorts(t, 1)[0])
	h := newHub(t, "", "--config", cfg, "--pprof-addr", pprofAddr)
	h.start()

	// Warm-up: alice's topic subscription, one of every client, the pools
	// and caches a first client fills.
	xs := dialXMPPSub(t, h, "alice", "alicepw")
	xs.subscribeTopic(t, "soak/feed")
	xs.close()
	pub, err := dialMQTTPub(h, "soak-publisher", "soak/feed", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.close()
	stopPub := make(chan struct{})
	var pubWG sync.WaitGroup
	var published atomic.Int64
	pubWG.Add(1)
	go func() {
		defer pubWG.Done()
		pad := strings.Repeat("p", 200)
		for i := 0; ; i++ {
			select {
			case <-stopPub:
				return
			case <-time.After(20 * time.Millisecond):
			}
			ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
			if pub.send(ctx, fmt.Sprintf("%d %s", i, pad)) == nil {
				published.Add(1)
			}
			cancel()
		}
	}()
	warmCtx, warmCancel := context.WithTimeout(context.Background(), time.Minute)
	for i, a := range soakActions {
		if err := a.run(warmCtx, h, fmt.Sprintf("soak-warm-%d", i)); err != nil {
			t.Logf("warm-up %s: %v", a.name, err)
		}
	}
	warmCancel()
	base, _ := settle(t, h, nil, 15*time.Second)
	t.Logf("after warm-up: %v", base)

	// The load.
	var peak gauges
	var peakMu sync.Mutex
	stopSample := make(chan struct{})
	var sampleWG sync.WaitGroup
	sampleWG.Add(1)
	go func() {
		defer sampleWG.Done()
		for {
			select {
			case <-stopSample:
				return
			case <-time.After(500 * time.Millisecond):
			}
			g, err := h.gauges()
			if err != nil {
				continue
			}
			peakMu.Lock()
			peak.goroutines, peak.rssKB, peak.fds, peak.sockets = max(peak.goroutines, g.goroutines), max(peak.rssKB, g.rssKB), max(peak.fds, g.fds), max(peak.sockets, g.sockets)
			peakMu.Unlock()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), load)
	ops := make([]atomic.Int64, len(soakActions))
	fails := make([]atomic.Int64, len(soakActions))
	lastErr := make([]atomic.Value, len(soakActions))
	var wg sync.WaitGroup
	for w := range soakWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < soakMaxOps && ctx.Err() == nil; i++ {
				k := (i*5 + w) % len(soakActions)
				actx, acancel := context.WithTimeout(ctx, 15*time.Second)
				err := soakActions[k].run(actx, h, fmt.Sprintf("soak-%d-%d", w, i))
				acancel()
				ops[k].Add(1)
				if err != nil && ctx.Err() == nil {
					fails[k].Add(1)
					lastErr[k].Store(err.Error())
				}
			}
		}()
	}
	wg.Wait()
	cancel()
	close(stopPub)
	pubWG.Wait()
	close(stopSample)
	sampleWG.Wait()

	var total, failed int64
	for k, a := range soakActions {
		n, f := ops[k].Load(), fails[k].Load()
		total, failed = total+n, failed+f
		last, _ := lastErr[k].Load().(string)
		t.Logf("%-42s %6d runs, %4d failed %s", a.name, n, f, last)
		if n == 0 {
			t.Errorf("%s never ran", a.name)
		}
		if f*10 > n {
			t.Errorf("%s: %d of %d runs failed (last: %s)", a.name, f, n, last)
		}
	}
	t.Logf("load %v: %d client runs, %d failed, %d messages published at QoS 1", load, total, failed, published.Load())
	t.Logf("peak: %v", peak)

	// The clients are gone: the hub gives back what they held.
	settleStart := time.Now()
	end, ok := settle(t, h, &base, time.Minute)
	if !ok {
		t.Fatalf("not back within a minute: %v, after warm-up %v; goroutines:\n%s", end, base, goroutineDump(pprofAddr))
	}
	t.Logf("end, %v after the last client: %v (after warm-up: %v)", time.Since(settleStart).Round(time.Second), end, base)
	if limit := max(int(float64(base.rssKB)*soakRSSFactor), base.rssKB+soakRSSSlackKB); end.rssKB > limit {
		t.Errorf("RSS %d KiB at the end, over %d KiB (warm-up %d KiB)", end.rssKB, limit, base.rssKB)
	}

	// A good client of every protocol is still served.
	soakGoodClients(t, h)
}

// settle waits until the hub's goroutines and descriptors are back within
// the margins of base (nil: until two readings a second apart agree) and
// returns the reading, and whether it settled within the time given.
func settle(t *testing.T, h *hubProc, base *gauges, within time.Duration) (gauges, bool) {
	t.Helper()
	var last gauges
	deadline := time.Now().Add(within)
	for {
		g, err := h.gauges()
		switch {
		case err != nil:
		case base == nil && last.goroutines != 0 && g.goroutines == last.goroutines && g.fds == last.fds:
			return g, true
		case base != nil && g.goroutines <= base.goroutines+max(soakGoroutineSlack, base.goroutines/20) &&
			g.fds <= base.fds+soakFDSlack && g.sockets <= base.sockets+soakSocketSlack:
			return g, true
		}
		last = g
		if time.Now().After(deadline) {
			return g, false
		}
		time.Sleep(time.Second)
	}
}

// goroutineDump is the hub's goroutine profile, grouped by stack.
func goroutineDump(pprofAddr string) string {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + pprofAddr + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return string(b)
}

// soakGoodClients checks that MQTT, CoAP, XMPP and REST/SSE still work
// end to end: a publish from each reaches an MQTT subscriber, an MQTT
// publish reaches an SSE stream, and CoAP reads a retained value.
func soakGoodClients(t *testing.T, h *hubProc) {
	t.Helper()
	sub := dialMQTTSub(t, h, "soak-final-sub", true)
	sub.subscribe(t, "soak/final/#", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	if err := newRESTPub(h, "soak/final/rest").send(ctx, "from rest"); err != nil {
		t.Errorf("rest publish: %v", err)
	}
	cp, err := dialCoAPPub(h, "soak/final/coap")
	if err != nil {
		t.Fatal(err)
	}
	defer cp.close()
	if code, err := cp.post(ctx, "retain=true", "from coap"); err != nil || code != codes.Changed {
		t.Errorf("coap publish: %v %v", code, err)
	}
	xp, err := dialXMPPPub(h, "admin", "adminpw", "soak/final/xmpp")
	if err != nil {
		t.Fatal(err)
	}
	defer xp.close()
	if err := xp.send(ctx, "from xmpp"); err != nil {
		t.Errorf("xmpp publish: %v", err)
	}
	want := map[string]bool{"from rest": true, "from coap": true, "from xmpp": true}
	for len(want) > 0 {
		select {
		case m := <-sub.msgs:
			delete(want, m)
		case <-ctx.Done():
			t.Fatalf("the MQTT subscriber did not get %v", want)
		}
	}

	resp, err := cp.cc.Get(ctx, "/ps/soak/final/coap")
	if err != nil || resp.Code() != codes.Content {
		t.Fatalf("coap GET: %v %v", resp, err)
	}
	if b, _ := resp.ReadBody(); string(b) != "from coap" {
		t.Errorf("coap GET read %q", b)
	}
	if cf, err := resp.ContentFormat(); err != nil || cf != message.TextPlain {
		t.Errorf("coap GET content-format %v %v", cf, err)
	}

	sseDone := make(chan error, 1)
	go func() { sseDone <- sseSoak(ctx, h, true) }()
	for {
		if err := newRESTPub(h, "soak/final/sse").send(ctx, "for sse"); err != nil {
			t.Fatalf("rest publish: %v", err)
		}
		select {
		case err := <-sseDone:
			if err != nil {
				t.Fatalf("sse: %v", err)
			}
			return
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("sse: no event")
		}
	}
}

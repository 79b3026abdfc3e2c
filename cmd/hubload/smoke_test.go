package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/mux"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/pkg/runner/periodic"
	"github.com/plgd-dev/go-coap/v3/udp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startMochi starts an in-process MQTT broker that lets everyone in and
// returns it with its tcp:// URL.
func startMochi(t *testing.T) (*mochi.Server, string) {
	t.Helper()
	s := mochi.New(&mochi.Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := s.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	l := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	if err := s.AddListener(l); err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, "tcp://" + l.Address()
}

// testConfig is a small, fast run.
func testConfig(mode, url string) *config {
	return &config{
		mode: mode, url: url, mqttURL: url,
		publishers: 1, subscribers: 1, messages: 100, size: 64, topic: "smoke/%d",
		duration: 20 * time.Second, drain: 2 * time.Second, connectTimeout: 5 * time.Second,
		inflight: 50, clientPrefix: "smoke",
	}
}

// checkClean fails unless every planned message was sent and every expected
// delivery arrived once.
func checkClean(t *testing.T, r *Result, wantExpected uint64) {
	t.Helper()
	if r.ErrorCount != 0 {
		t.Errorf("errors: %d %v", r.ErrorCount, r.Errors)
	}
	if r.Sent != r.MessagesPlanned || r.Attempted != r.Sent || r.TimedOut {
		t.Errorf("sent %d (attempted %d) of %d (timed out %v)", r.Sent, r.Attempted, r.MessagesPlanned, r.TimedOut)
	}
	if r.Expected != wantExpected || r.Received != wantExpected || r.Lost != 0 {
		t.Errorf("expected %d received %d lost %d, want %d each and no loss", r.Expected, r.Received, r.Lost, wantExpected)
	}
	if r.Duplicates != 0 || r.Invalid != 0 || r.Unexpected != 0 {
		t.Errorf("duplicates %d invalid %d unexpected %d", r.Duplicates, r.Invalid, r.Unexpected)
	}
	if r.Latency.Count != r.Received || r.Latency.P99Ms < r.Latency.P50Ms || r.Latency.MaxMs < r.Latency.P99Ms {
		t.Errorf("latency summary inconsistent: %+v", r.Latency)
	}
	if r.SendRate <= 0 || r.ReceiveRate <= 0 {
		t.Errorf("rates: send %g receive %g", r.SendRate, r.ReceiveRate)
	}
}

func TestSmokeMQTT(t *testing.T) {
	_, url := startMochi(t)
	tests := []struct {
		name         string
		pubs, subs   int
		messages     int
		qos          byte
		fanout       bool
		wantExpected uint64
	}{
		{"qos0 pairs", 3, 3, 300, 0, false, 300},
		{"qos1 pairs", 3, 3, 300, 1, false, 300},
		{"qos1 fan-out", 1, 5, 200, 1, true, 1000},
		{"qos2 fan-in", 4, 1, 200, 2, false, 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig("mqtt", url)
			c.publishers, c.subscribers, c.messages, c.qos, c.fanout = tc.pubs, tc.subs, tc.messages, tc.qos, tc.fanout
			c.topic = "smoke/" + strings.ReplaceAll(tc.name, " ", "-") + "/%d"
			// Client ids of their own: a broker may still be ending the
			// previous case's connections of the same ids.
			c.clientPrefix = "smoke-" + strings.ReplaceAll(tc.name, " ", "-")
			c.pid = os.Getpid()
			r, err := runLoad(context.Background(), c, mqttTransport(c))
			if err != nil {
				t.Fatal(err)
			}
			checkClean(t, r, tc.wantExpected)
			// CPU is counted in 10 ms ticks, so a short run may read 0.
			if r.Target == nil || r.Target.VmHWMKiB == 0 || r.Target.MaxRSSKiB == 0 || r.Target.CPUSeconds < 0 {
				t.Errorf("target memory not read: %+v", r.Target)
			}
		})
	}
}

// TestSmokeRateAndDeadline checks that --rate paces publishing and that
// --duration cuts a run short and says so.
func TestSmokeRateAndDeadline(t *testing.T) {
	_, url := startMochi(t)
	c := testConfig("mqtt", url)
	c.messages, c.rate, c.duration = 1000, 200, 500*time.Millisecond
	r, err := runLoad(context.Background(), c, mqttTransport(c))
	if err != nil {
		t.Fatal(err)
	}
	if !r.TimedOut || r.Sent == 0 || r.Sent > 150 {
		t.Errorf("at 200 msg/s for 0.5 s: sent %d, timed out %v; want about 100 and cut short", r.Sent, r.TimedOut)
	}
	if r.Received != r.Expected || r.Expected != r.Sent {
		t.Errorf("received %d expected %d sent %d", r.Received, r.Expected, r.Sent)
	}
}

func TestSmokeConnectFailure(t *testing.T) {
	c := testConfig("mqtt", "tcp://127.0.0.1:1") // nothing listens on port 1
	c.connectTimeout = 2 * time.Second
	if _, err := runLoad(context.Background(), c, mqttTransport(c)); err == nil || !strings.Contains(err.Error(), "subscriber 0") {
		t.Fatalf("runLoad against a closed port: %v, want a subscriber connect error", err)
	}
}

// TestSmokeHTTP runs the http mode against a small REST front that hands
// each POST to the MQTT broker, as the hub's REST adapter does.
func TestSmokeHTTP(t *testing.T) {
	broker, url := startMochi(t)
	var gotCT atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		topic, ok := strings.CutPrefix(r.URL.Path, "/api/v1/topics/")
		qos, err := strconv.Atoi(r.URL.Query().Get("qos"))
		if !ok || r.Method != http.MethodPost || err != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		if strings.HasSuffix(topic, "/refused") {
			http.Error(w, "no", http.StatusForbidden)
			return
		}
		gotCT.Store(r.Header.Get("Content-Type"))
		body, _ := io.ReadAll(r.Body)
		if err := broker.Publish(topic, body, false, byte(qos)); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()

	c := testConfig("http", srv.URL)
	c.mqttURL = url
	c.publishers, c.subscribers, c.messages, c.qos = 2, 2, 200, 1
	tr, err := httpTransport(c)
	if err != nil {
		t.Fatal(err)
	}
	r, err := runLoad(context.Background(), c, tr)
	if err != nil {
		t.Fatal(err)
	}
	checkClean(t, r, 200)
	if ct := gotCT.Load(); ct != "application/octet-stream" {
		t.Errorf("Content-Type %v", ct)
	}

	// A refusing server: every publisher stops at its first error.
	c.topic = "smoke/%d/refused"
	r, err = runLoad(context.Background(), c, tr)
	if err != nil {
		t.Fatal(err)
	}
	if r.Sent != 0 || r.Attempted != 2 || r.ErrorCount != 2 || !strings.Contains(r.Errors[0], "403") {
		t.Errorf("refused: sent %d attempted %d, errors %d %v", r.Sent, r.Attempted, r.ErrorCount, r.Errors)
	}
}

// TestSmokeCoAP runs the coap mode (NON at QoS 0, CON at QoS 1) against a
// small CoAP front that hands each POST /ps/{topic} to the MQTT broker.
func TestSmokeCoAP(t *testing.T) {
	broker, url := startMochi(t)
	router := mux.NewRouter()
	router.DefaultHandleFunc(func(w mux.ResponseWriter, r *mux.Message) {
		path, err := r.Path()
		topic, ok := strings.CutPrefix(path, "/ps/")
		if err != nil || !ok || r.Code() != codes.POST {
			_ = w.SetResponse(codes.BadRequest, message.TextPlain, nil)
			return
		}
		qos := byte(0)
		if qs, _ := r.Queries(); len(qs) == 1 && qs[0] == "qos=1" {
			qos = 1
		}
		if (qos == 1) != (r.Type() == message.Confirmable) {
			_ = w.SetResponse(codes.BadOption, message.TextPlain, bytes.NewReader([]byte("qos does not match the message type")))
			return
		}
		body, _ := r.ReadBody()
		if err := broker.Publish(topic, body, false, qos); err != nil {
			_ = w.SetResponse(codes.InternalServerError, message.TextPlain, nil)
			return
		}
		_ = w.SetResponse(codes.Changed, message.TextPlain, nil)
	})
	l, err := coapnet.NewListenUDP("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stopRunner := make(chan struct{})
	srv := udp.NewServer(options.WithMux(router), options.WithPeriodicRunner(periodic.New(stopRunner, 100*time.Millisecond)))
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(l) }()
	defer func() { srv.Stop(); <-done; _ = l.Close(); close(stopRunner) }()

	for _, qos := range []byte{0, 1} {
		t.Run("qos"+strconv.Itoa(int(qos)), func(t *testing.T) {
			c := testConfig("coap", "coap://"+l.LocalAddr().String())
			c.mqttURL = url
			c.publishers, c.subscribers, c.messages, c.qos = 2, 2, 200, qos
			c.topic = "coap" + strconv.Itoa(int(qos)) + "/%d"
			if qos == 0 {
				c.rate = 300 // NON is fire-and-forget: do not overrun the receive queues
			}
			tr, err := coapTransport(c)
			if err != nil {
				t.Fatal(err)
			}
			r, err := runLoad(context.Background(), c, tr)
			if err != nil {
				t.Fatal(err)
			}
			checkClean(t, r, 200)
		})
	}
}

// TestExecuteJSON runs the whole command line and reads its JSON.
func TestExecuteJSON(t *testing.T) {
	_, url := startMochi(t)
	var out, errOut bytes.Buffer
	code := execute(context.Background(), []string{"mqtt", "--url", url, "--messages", "100", "--qos", "1", "--subscribers", "2", "--fanout", "--json", "--fail-on-loss"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var r Result
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out.String())
	}
	if r.Sent != 100 || r.Received != 200 || r.QoS != 1 || !r.Fanout {
		t.Errorf("result %+v", r)
	}
	out.Reset()
	if code := execute(context.Background(), []string{"mqtt", "--url", url, "--messages", "10"}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "latency") {
		t.Errorf("text output (exit %d):\n%s", code, out.String())
	}
}

// TestExecuteFailOnLoss checks exit status 3 when a run is cut short.
func TestExecuteFailOnLoss(t *testing.T) {
	_, url := startMochi(t)
	var out, errOut bytes.Buffer
	args := []string{"mqtt", "--url", url, "--messages", "1000", "--rate", "100", "--duration", "200ms", "--fail-on-loss"}
	if code := execute(context.Background(), args, &out, &errOut); code != 3 || !strings.Contains(errOut.String(), "of 1000 messages sent") {
		t.Errorf("exit %d, stderr %q; want 3 and the count", code, errOut.String())
	}
	if !strings.Contains(out.String(), "cut short by --duration") {
		t.Errorf("text output does not say the run was cut short:\n%s", out.String())
	}
}

func TestExecuteRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no mode", nil, "missing mode"},
		{"unknown mode", []string{"amqp"}, "unknown mode"},
		{"unknown flag", []string{"mqtt", "--nope"}, "nope"},
		{"extra arg", []string{"mqtt", "x"}, "unexpected argument"},
		{"qos", []string{"mqtt", "--qos", "3"}, "--qos 3"},
		{"size", []string{"mqtt", "--size", "10"}, "--size 10"},
		{"publishers", []string{"mqtt", "--publishers", "0"}, "--publishers 0"},
		{"subscribers", []string{"mqtt", "--subscribers", "10001"}, "--subscribers 10001"},
		{"messages", []string{"mqtt", "--messages", "0"}, "--messages 0"},
		{"too many messages", []string{"mqtt", "--messages", "10000001"}, "--messages 10000001"},
		{"duration", []string{"mqtt", "--duration", "11m"}, "--duration 11m"},
		{"zero duration", []string{"mqtt", "--duration", "0s"}, "--duration 0s"},
		{"rate", []string{"mqtt", "--rate", "-1"}, "--rate -1"},
		{"inflight", []string{"mqtt", "--inflight", "0"}, "--inflight 0"},
		{"wildcard topic", []string{"mqtt", "--topic", "a/#"}, "wildcards"},
		{"two verbs", []string{"mqtt", "--topic", "a/%d/%d"}, "at most one"},
		{"other verb", []string{"mqtt", "--topic", "a/%s"}, "only verb"},
		{"deliveries", []string{"mqtt", "--messages", "10000000", "--subscribers", "1000", "--fanout"}, "deliveries"},
		{"remote mqtt", []string{"mqtt", "--url", "tcp://192.0.2.1:1883"}, "not a loopback"},
		{"remote subscribers", []string{"coap", "--mqtt-url", "tcp://192.0.2.1:1883"}, "not a loopback"},
		{"coap scheme", []string{"coap", "--url", "http://127.0.0.1:5683"}, "want coap://"},
		{"http scheme", []string{"http", "--url", "coap://127.0.0.1:1"}, "want http://"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out, errOut bytes.Buffer
			if code := execute(context.Background(), tc.args, &out, &errOut); code != 2 {
				t.Errorf("exit %d, want 2; stderr %s", code, errOut.String())
			}
			if !strings.Contains(errOut.String(), tc.want) {
				t.Errorf("stderr %q does not mention %q", errOut.String(), tc.want)
			}
		})
	}
}

func TestCheckLoopback(t *testing.T) {
	t.Parallel()
	tests := []struct {
		url string
		ok  bool
	}{
		{"tcp://127.0.0.1:1883", true},
		{"tcp://127.8.9.10:1883", true},
		{"tcp://[::1]:1883", true},
		{"tcp://localhost:1883", true},
		{"tcp://10.0.0.1:1883", false},
		{"tcp://[2001:db8::1]:1883", false},
		{"tcp://:1883", false},
		{"::not a url", false},
	}
	for _, tc := range tests {
		if err := checkLoopback(context.Background(), tc.url); (err == nil) != tc.ok {
			t.Errorf("checkLoopback(%q) = %v, want ok=%v", tc.url, err, tc.ok)
		}
	}
}

func TestParseProcStat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"normal", "42 (hub) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 1000 0 0", 3 * time.Second, false},
		{"name with spaces and parens", "42 (a) b (c)) R 1 42 42 0 -1 0 0 0 0 0 7 3 0 0", 100 * time.Millisecond, false},
		{"no name", "42 hub S 1", 0, true},
		{"short", "42 (hub) S 1 2 3", 0, true},
		{"bad number", "42 (hub) S 1 42 42 0 -1 0 0 0 0 0 x 3 0 0", 0, true},
	}
	for _, tc := range tests {
		got, err := parseProcStat([]byte(tc.in))
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("%s: got %v, %v; want %v (error %v)", tc.name, got, err, tc.want, tc.wantErr)
		}
	}
	if cpu, err := readProcCPU(os.Getpid()); err != nil || cpu <= 0 {
		t.Errorf("readProcCPU(self) = %v, %v", cpu, err)
	}
}

func TestParseProcStatus(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    memSample
		wantErr bool
	}{
		{"normal", "Name:\tx\nVmPeak:\t 100 kB\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\n", memSample{hwm: 2048, rss: 1024}, false},
		{"kernel thread", "Name:\tkthreadd\nState:\tS\n", memSample{}, true},
		{"garbage number", "VmHWM:\tlots kB\nVmRSS:\t1 kB\n", memSample{}, true},
		{"no value", "VmHWM:\nVmRSS:\t1 kB\n", memSample{}, true},
	}
	for _, tc := range tests {
		got, err := parseProcStatus([]byte(tc.in))
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("%s: got %+v, %v; want %+v (error %v)", tc.name, got, err, tc.want, tc.wantErr)
		}
	}
	if _, err := readProcStatus(1 << 30); err == nil {
		t.Error("readProcStatus of a process that cannot exist: no error")
	}
	if _, err := readProcCPU(1 << 30); err == nil {
		t.Error("readProcStatus of a process that cannot exist: no error")
	}
}

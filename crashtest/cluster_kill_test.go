package crashtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// newClusterHubs prepares three hub processes a, b, c whose embedded NATS
// nodes form one JetStream cluster (replicas 3); the device meter1
// (MQTT, password meter1pw) is added to a's store. It does not start
// them.
func newClusterHubs(t *testing.T) []*hubProc {
	t.Helper()
	routes := freePorts(t, 3)
	names := []string{"a", "b", "c"}
	hubs := make([]*hubProc, 3)
	for i, name := range names {
		var others []string
		for j := range names {
			if j != i {
				others = append(others, addr(routes[j]))
			}
		}
		cfg := fmt.Sprintf("node: %s\ncluster:\n  name: hubs\n  node_name: %s\n  listen: %s\n  routes: [%s]\n  replicas: 3\n",
			name, name, addr(routes[i]), strings.Join(others, ", "))
		path := filepath.Join(t.TempDir(), name+".yaml")
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		hubs[i] = newHub(t, "", "--config", path)
	}
	hubs[0].hubCmd("device", "add", "meter1", "--protocol", "mqtt", "--password", "meter1pw", "--data-dir", hubs[0].dataDir)
	return hubs
}

// startTogether starts hubs at once: each waits for a JetStream quorum.
func startTogether(t *testing.T, hubs ...*hubProc) {
	t.Helper()
	errs := make([]error, len(hubs))
	var wg sync.WaitGroup
	for i, h := range hubs {
		wg.Go(func() { errs[i] = h.tryStart(2 * time.Minute) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// api makes one admin REST call on h and returns the status and body.
func api(h *hubProc, method, path, body string) (int, []byte, error) {
	req, err := http.NewRequest(method, "http://"+h.http+path, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.SetBasicAuth("admin", "adminpw")
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, b, err
}

// deviceOnline reads the online field of a device on h.
func deviceOnline(h *hubProc, id string) (bool, string) {
	code, b, err := api(h, http.MethodGet, "/api/v1/devices/"+id, "")
	if err != nil || code != http.StatusOK {
		return false, fmt.Sprintf("%d %s %v", code, b, err)
	}
	var d struct {
		Online bool `json:"online"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return false, err.Error()
	}
	return d.Online, string(b)
}

// dialDevice connects the MQTT device meter1 to h; it answers every
// command with {"on": hub}.
func dialDevice(t *testing.T, h *hubProc, hub string) paho.Client {
	t.Helper()
	opts := paho.NewClientOptions().AddBroker("tcp://" + h.mqtt).SetClientID("meter1").
		SetUsername("meter1").SetPassword("meter1pw").SetCleanSession(true).
		SetAutoReconnect(false).SetConnectTimeout(ackTimeout)
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(ackTimeout) || tok.Error() != nil {
		t.Fatalf("device meter1 connect to %s: %v", hub, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	tok := c.Subscribe("devices/meter1/commands/+", 1, func(c paho.Client, m paho.Message) {
		var req struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(m.Payload(), &req) != nil || req.ID == "" {
			return
		}
		c.Publish("devices/meter1/responses/"+req.ID, 1, false, `{"on":"`+hub+`"}`)
	})
	if !tok.WaitTimeout(ackTimeout) || tok.Error() != nil {
		t.Fatalf("device meter1 subscribe on %s: %v", hub, tok.Error())
	}
	return c
}

// resumeSession connects the persistent MQTT session id (clean session
// 0) to h, its messages going to msgs; nil when the connect fails.
func resumeSession(h *hubProc, id string, msgs chan<- string) paho.Client {
	opts := paho.NewClientOptions().AddBroker("tcp://" + h.mqtt).SetClientID(id).
		SetCleanSession(false).SetAutoReconnect(false).SetConnectTimeout(ackTimeout).
		SetOrderMatters(true).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			select {
			case msgs <- string(m.Payload()):
			default:
			}
		})
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(ackTimeout) || tok.Error() != nil {
		return nil
	}
	return c
}

// command sends the command ping to meter1 over REST on h.
func command(h *hubProc) (int, string, time.Duration) {
	t0 := time.Now()
	code, b, err := api(h, http.MethodPost, "/api/v1/devices/meter1/commands/ping?timeout=5s", `{}`)
	if err != nil {
		return 0, err.Error(), time.Since(t0)
	}
	return code, strings.TrimSpace(string(b)), time.Since(t0)
}

// TestClusterHubKill: three hub processes whose embedded NATS nodes form
// one JetStream cluster (replicas 3). Hub C, with a persistent MQTT
// session (clean session 0, QoS 1) and the MQTT device meter1 on it, is
// killed with SIGKILL (its NATS node with it) while a client on A
// publishes a numbered QoS 1 sequence. Every publish A acknowledged
// reaches the session once its client reconnects to B with the same
// client ID (duplicates allowed: QoS 1); meter1 shows offline on A
// within HubTTL plus a heartbeat or two and a command to it there
// answers 503 at once; reconnected to B, commands on A reach it. C
// restarted on its data dir rejoins: meter1 stays online (its stale
// presence does not take it back) and C's new subscribers get A's
// publishes.
func TestClusterHubKill(t *testing.T) {
	if testing.Short() {
		t.Skip("three hub processes in a JetStream cluster; up to AckWait (30 s) for the redelivery")
	}
	hubs := newClusterHubs(t)
	a, b, c := hubs[0], hubs[1], hubs[2]
	startTogether(t, a, b, c)

	sub := dialMQTTSub(t, c, "keeper", false)
	sub.subscribe(t, "load/#", 1)
	probe, err := dialMQTTPub(a, "prober", "load/ready", 1)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	waitFor(t, "the session on C gets A's publishes", 30*time.Second, func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
		_ = probe.send(ctx, "ready")
		cancel()
		for {
			select {
			case m := <-sub.msgs:
				if m == "ready" {
					return true, ""
				}
				got[m]++
			case <-time.After(200 * time.Millisecond):
				return false, "nothing yet"
			}
		}
	})
	probe.close()
	dialDevice(t, c, "c")
	waitFor(t, "meter1 on C online on A", 15*time.Second, func() (bool, string) { return deviceOnline(a, "meter1") })

	pub, err := dialMQTTPub(a, "loader", "load/x", 1)
	if err != nil {
		t.Fatal(err)
	}
	const total, killAt = 400, 150
	acked := map[string]bool{}
	refused := 0
	offline := make(chan time.Duration, 1)
	for i := range total {
		if i == killAt {
			c.kill9()
			// The device of the dead hub goes offline on A meanwhile.
			go func(t0 time.Time) {
				for time.Since(t0) < 20*time.Second {
					if on, _ := deviceOnline(a, "meter1"); !on {
						offline <- time.Since(t0)
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
				close(offline)
			}(time.Now())
		}
		p := strconv.Itoa(i)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := pub.send(ctx, p)
		cancel()
		if err == nil {
			acked[p] = true
			continue
		}
		refused++
		if !pub.c.IsConnectionOpen() {
			if pub, err = dialMQTTPub(a, "loader", "load/x", 1); err != nil {
				t.Fatal(err)
			}
		}
	}
	pub.close()

	// The device of the dead hub: offline on A, commands 503 at once.
	tOffline, ok := <-offline
	if !ok {
		_, last := deviceOnline(a, "meter1")
		t.Fatalf("meter1 of the killed hub still online on A 20 s after the kill: %s", last)
	}
	if code, body, took := command(a); code != http.StatusServiceUnavailable || took > 3*time.Second {
		t.Fatalf("command on A to meter1 of the killed hub: %d %s in %v, want 503 at once", code, body, took)
	}

	// The session resumes on B: every acknowledged publish arrives.
	for {
		select {
		case m := <-sub.msgs:
			got[m]++
			continue
		default:
		}
		break
	}
	before := len(got)
	tResume := time.Now()
	resumed := make(chan string, 20000)
	var sub2 paho.Client
	var refusedSessions int
	defer func() {
		if sub2 != nil {
			sub2.Disconnect(0)
		}
	}()
	var first time.Duration
	missing := func() int {
		n := 0
		for p := range acked {
			if got[p] == 0 {
				n++
			}
		}
		return n
	}
	end := time.After(60 * time.Second) // AckWait (30 s) for what C had in flight
	for missing() > 0 {
		// While the consumer elects a new leader (its old one may have
		// been C's node) B refuses the session after the CONNACK, as a
		// quorum loss: the client connects again, as clients do.
		if sub2 == nil || !sub2.IsConnectionOpen() {
			if sub2 != nil {
				refusedSessions++
			}
			sub2 = resumeSession(b, "keeper", resumed)
		}
		select {
		case m := <-resumed:
			if first == 0 {
				first = time.Since(tResume)
			}
			got[m]++
		case <-time.After(200 * time.Millisecond):
		case <-end:
			t.Fatalf("%d of %d acknowledged publishes never reached the session resumed on B (%d delivered there, %d refused sessions); B's log:\n%s\nA's log:\n%s",
				missing(), len(acked), len(got)-before, refusedSessions, b.logTail(), a.logTail())
		}
	}
	tAll := time.Since(tResume)
	delivered, dups := 0, 0
	for p, n := range got {
		if p == "ready" {
			continue
		}
		delivered += n
		dups += n - 1
	}
	t.Logf("kill -9 of C after %d publishes: %d acknowledged, %d refused; %d delivered (%d on C before), %d duplicates; "+
		"meter1 offline on A %v after the kill; on B (%d sessions refused first) the first delivery %v after the reconnect, all acknowledged ones %v after it",
		killAt, len(acked), refused, delivered, before, dups, tOffline.Round(10*time.Millisecond),
		refusedSessions, first.Round(time.Millisecond), tAll.Round(10*time.Millisecond))

	// The device reconnects to B; commands on A reach it there.
	dialDevice(t, b, "b")
	waitFor(t, "meter1 on B online on A", 15*time.Second, func() (bool, string) { return deviceOnline(a, "meter1") })
	if code, body, _ := command(a); code != http.StatusOK || body != `{"on":"b"}` {
		t.Fatalf("command on A to meter1 on B: %d %s", code, body)
	}

	// C comes back on its data dir. Its store still shows meter1 online
	// as of its last run: it must neither take the device back nor mark
	// it offline. Watched for longer than HubTTL plus a heartbeat.
	if err := c.tryStart(2 * time.Minute); err != nil {
		t.Fatal(err)
	}
	stayed := time.Now().Add(5 * time.Second)
	for time.Now().Before(stayed) {
		for _, h := range []*hubProc{a, b, c} {
			if on, last := deviceOnline(h, "meter1"); !on {
				t.Fatalf("meter1, online on B, shown offline on %s after C restarted: %s", h.http, last)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, body, _ := command(c); code != http.StatusOK || body != `{"on":"b"}` {
		t.Fatalf("command on the restarted C to meter1 on B: %d %s", code, body)
	}
	fresh := dialMQTTSub(t, c, "fresh", true)
	fresh.subscribe(t, "live/#", 1)
	live, err := dialMQTTPub(a, "live", "live/x", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer live.close()
	waitFor(t, "a new subscriber on the restarted C gets A's publishes", 30*time.Second, func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
		err := live.send(ctx, "hello")
		cancel()
		select {
		case m := <-fresh.msgs:
			return m == "hello", m
		case <-time.After(200 * time.Millisecond):
			return false, fmt.Sprint("nothing yet; publish: ", err)
		}
	})
}

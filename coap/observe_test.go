package coap

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"

	"github.com/hubsmith/hub/broker"
)

// notification is what an observer callback saw.
type notification struct {
	code    codes.Code
	seq     uint32
	payload []byte
	cf      message.MediaType
	topic   string
}

func observeChan(t testing.TB) (chan notification, func(*pool.Message)) {
	ch := make(chan notification, 64)
	return ch, func(m *pool.Message) {
		n := notification{code: m.Code(), cf: 0xffff}
		n.seq, _ = m.Observe()
		if cf, err := m.ContentFormat(); err == nil {
			n.cf = cf
		}
		if m.Body() != nil {
			var buf bytes.Buffer
			_, _ = buf.ReadFrom(m.Body())
			n.payload = buf.Bytes()
		}
		var segs []string
		for _, o := range m.Options() {
			if o.ID == message.LocationPath {
				segs = append(segs, string(o.Value))
			}
		}
		if len(segs) > 0 {
			n.topic, _ = SegmentsToTopic(segs)
		}
		ch <- n
	}
}

func nextNote(t testing.TB, ch chan notification) notification {
	t.Helper()
	select {
	case n := <-ch:
		return n
	case <-time.After(5 * time.Second):
		t.Fatal("no notification within 5s")
		return notification{}
	}
}

func publish(t testing.TB, bus broker.Bus, topic, payload, ct string, qos byte, retain bool) {
	t.Helper()
	err := bus.Publish(context.Background(), &broker.Envelope{Topic: topic, Payload: []byte(payload), ContentType: ct, QoS: qos, Retain: retain,
		Origin: broker.Origin{Protocol: broker.ProtoMQTT, ClientID: "test"}})
	if err != nil {
		t.Fatal(err)
	}
}

// TestBusToObserver: a bus publish (what an MQTT publish becomes) reaches
// a CoAP observer as notifications with rising sequence numbers; the
// retained value comes in the registration response; cancelling ends the
// bus subscription.
func TestBusToObserver(t *testing.T) {
	t.Parallel()
	e := start(t, nil)
	publish(t, e.bus, "obs/temp", "20", "application/json", 1, true)
	cc := e.dial(t, "")
	ch, f := observeChan(t)
	obs, err := cc.Observe(ctx5(t), "/ps/obs/temp", f)
	if err != nil {
		t.Fatal(err)
	}
	first := nextNote(t, ch)
	if first.code != codes.Content || string(first.payload) != "20" || first.cf != message.AppJSON {
		t.Fatalf("registration response %+v", first)
	}
	last := first.seq
	for i := 0; i < 3; i++ {
		publish(t, e.bus, "obs/temp", fmt.Sprint(21+i), "application/json", 1, false)
		n := nextNote(t, ch)
		if string(n.payload) != fmt.Sprint(21+i) || n.cf != message.AppJSON {
			t.Fatalf("notification %d: %+v", i, n)
		}
		if n.seq <= last {
			t.Fatalf("sequence %d after %d", n.seq, last)
		}
		last = n.seq
	}
	if e.a.observations() != 1 {
		t.Fatalf("%d observations", e.a.observations())
	}
	subs := e.bus.Stats().Subscriptions
	if err := obs.Cancel(ctx5(t)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "observation to end", func() bool { return e.a.observations() == 0 })
	waitFor(t, "bus subscription to end", func() bool { return e.bus.Stats().Subscriptions == subs-1 })
}

// TestCoAPToCoAPObserver: a POST from one CoAP client reaches another's
// observation of a filter, with the topic in Location-Path.
func TestCoAPToCoAPObserver(t *testing.T) {
	t.Parallel()
	e := start(t, nil)
	observer := e.dial(t, "")
	poster := e.dial(t, "")
	ch, f := observeChan(t)
	obs, err := observer.Observe(ctx5(t), "/ps/house/+/temp", f)
	if err != nil {
		t.Fatal(err)
	}
	defer obs.Cancel(context.Background())
	if n := nextNote(t, ch); n.code != codes.Content || len(n.payload) != 0 {
		t.Fatalf("registration response %+v", n)
	}
	for _, room := range []string{"kitchen", "attic"} {
		resp, err := poster.Post(ctx5(t), "/ps/house/"+room+"/temp", message.TextPlain, strings.NewReader(room+"=19"))
		if err != nil || resp.Code() != codes.Changed {
			t.Fatalf("POST: %v %v", resp, err)
		}
		n := nextNote(t, ch)
		if string(n.payload) != room+"=19" || n.topic != "house/"+room+"/temp" || n.cf != message.TextPlain {
			t.Fatalf("notification %+v", n)
		}
	}
	if _, err := poster.Post(ctx5(t), "/ps/house/kitchen/hum", message.TextPlain, strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-ch:
		t.Fatalf("notification for a topic outside the filter: %+v", n)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestObserveFilterRetained: retained values under a filter follow the
// registration as notifications.
func TestObserveFilterRetained(t *testing.T) {
	t.Parallel()
	e := start(t, nil)
	publish(t, e.bus, "r/a", "A", "", 1, true)
	publish(t, e.bus, "r/b", "B", "", 1, true)
	cc := e.dial(t, "")
	ch, f := observeChan(t)
	obs, err := cc.Observe(ctx5(t), "/ps/r/#", f)
	if err != nil {
		t.Fatal(err)
	}
	defer obs.Cancel(context.Background())
	nextNote(t, ch)
	got := map[string]string{}
	for i := 0; i < 2; i++ {
		n := nextNote(t, ch)
		got[n.topic] = string(n.payload)
	}
	if got["r/a"] != "A" || got["r/b"] != "B" {
		t.Fatalf("retained notifications %v", got)
	}
}

// TestConObserverDroppedAfterRetransmissions: an observer registered with
// CON gets CON notifications for QoS 1; one that never acknowledges is
// retransmitted to and dropped once MAX_RETRANSMIT is spent.
func TestConObserverDroppedAfterRetransmissions(t *testing.T) {
	t.Parallel()
	e := start(t, func(c *Config) { c.AckTimeout = 40 * time.Millisecond; c.MaxRetransmit = 2 })
	r := e.raw(t)
	r.send(rawMsg{typ: message.Confirmable, code: codes.GET, mid: 100, token: []byte{9}, path: "/ps/con/t", observe: 0, cf: -1})
	if ack := r.mustRecv(); ack.Code() != codes.Content || ack.Type() != message.Acknowledgement {
		t.Fatalf("registration: %v", ack)
	}
	subs := e.bus.Stats().Subscriptions
	publish(t, e.bus, "con/t", "v", "", 1, false)
	var mids []int32
	for {
		m := r.recv(2 * time.Second)
		if m == nil {
			break
		}
		if m.Type() != message.Confirmable || m.Code() != codes.Content {
			t.Fatalf("notification %v, want CON 2.05", m)
		}
		mids = append(mids, m.MessageID())
	}
	if len(mids) != 3 || mids[0] != mids[1] || mids[1] != mids[2] {
		t.Fatalf("transmissions %v, want the first and 2 retransmissions of one message id", mids)
	}
	waitFor(t, "observation to be dropped", func() bool { return e.a.observations() == 0 })
	waitFor(t, "bus subscription to end", func() bool { return e.bus.Stats().Subscriptions == subs-1 })
}

// TestNonObserverGetsNON: an observer registered with NON gets NON
// notifications, and a Reset to one ends the observation.
func TestResetEndsObservation(t *testing.T) {
	t.Parallel()
	e := start(t, nil)
	r := e.raw(t)
	r.send(rawMsg{typ: message.NonConfirmable, code: codes.GET, mid: 200, token: []byte{7}, path: "/ps/rst/t", observe: 0, cf: -1})
	if m := r.mustRecv(); m.Code() != codes.Content {
		t.Fatalf("registration: %v", m)
	}
	publish(t, e.bus, "rst/t", "v", "", 1, false)
	m := r.mustRecv()
	if m.Type() != message.NonConfirmable || string(body(t, m)) != "v" {
		t.Fatalf("notification %v", m)
	}
	r.send(rawMsg{typ: message.Reset, code: codes.Empty, mid: m.MessageID(), observe: -1, cf: -1})
	waitFor(t, "observation to end", func() bool { return e.a.observations() == 0 })
	publish(t, e.bus, "rst/t", "w", "", 1, false)
	if m := r.recv(300 * time.Millisecond); m != nil {
		t.Fatalf("notification after reset: %v", m)
	}
}

// TestDeregisterWithObserve1: GET with Observe: 1 ends the observation and
// is answered as a plain GET.
func TestDeregisterWithObserve1(t *testing.T) {
	t.Parallel()
	e := start(t, nil)
	publish(t, e.bus, "dereg/t", "v", "", 0, true)
	r := e.raw(t)
	r.send(rawMsg{typ: message.Confirmable, code: codes.GET, mid: 300, token: []byte{5}, path: "/ps/dereg/t", observe: 0, cf: -1})
	r.mustRecv()
	if e.a.observations() != 1 {
		t.Fatal("no observation")
	}
	r.send(rawMsg{typ: message.Confirmable, code: codes.GET, mid: 301, token: []byte{5}, path: "/ps/dereg/t", observe: 1, cf: -1})
	m := r.mustRecv()
	if m.Code() != codes.Content || m.HasOption(message.Observe) || string(body(t, m)) != "v" {
		t.Fatalf("deregistration response %v", m)
	}
	waitFor(t, "observation to end", func() bool { return e.a.observations() == 0 })
}

// TestBlockwise: a 10 KiB POST arrives whole on the bus, and a 10 KiB
// value comes back whole by GET and by Observe (RFC 7959 both ways).
func TestBlockwise(t *testing.T) {
	t.Parallel()
	e := start(t, nil)
	big := bytes.Repeat([]byte("0123456789abcdef"), 640) // 10 KiB
	c := e.collect(t, "bw/#")
	cc := e.dial(t, "")
	resp, err := cc.Post(ctx5(t), "/ps/bw/up", message.AppOctets, bytes.NewReader(big), query("retain=true"))
	if err != nil || resp.Code() != codes.Changed {
		t.Fatalf("POST: %v %v", resp, err)
	}
	if got := c.next(t); !bytes.Equal(got.Payload, big) {
		t.Fatalf("bus got %d bytes, want %d", len(got.Payload), len(big))
	}
	resp, err = cc.Get(ctx5(t), "/ps/bw/up")
	if err != nil || resp.Code() != codes.Content {
		t.Fatalf("GET: %v %v", resp, err)
	}
	if got := body(t, resp); !bytes.Equal(got, big) {
		t.Fatalf("GET returned %d bytes, want %d", len(got), len(big))
	}
	ch, f := observeChan(t)
	obs, err := cc.Observe(ctx5(t), "/ps/bw/down", f)
	if err != nil {
		t.Fatal(err)
	}
	defer obs.Cancel(context.Background())
	nextNote(t, ch)
	publish(t, e.bus, "bw/down", string(big), "application/octet-stream", 0, false)
	if n := nextNote(t, ch); !bytes.Equal(n.payload, big) {
		t.Fatalf("notification of %d bytes, want %d", len(n.payload), len(big))
	}
}

// TestDeviceCommandSeam: a device observes its commands filter, the hub
// publishes a command on the bus, the device answers by POSTing to its
// responses topic, and a bus subscriber gets the answer.
func TestDeviceCommandSeam(t *testing.T) {
	t.Parallel()
	e := start(t, nil)
	responses := e.collect(t, "devices/sensor1/responses/+")
	dev := e.dial(t, "")
	ch, f := observeChan(t)
	obs, err := dev.Observe(ctx5(t), "/ps/devices/sensor1/commands/+", f)
	if err != nil {
		t.Fatal(err)
	}
	defer obs.Cancel(context.Background())
	nextNote(t, ch)
	publish(t, e.bus, "devices/sensor1/commands/reboot", `{"id":"req42","params":{"delay":1}}`, "application/json", 1, false)
	cmd := nextNote(t, ch)
	if cmd.topic != "devices/sensor1/commands/reboot" || !strings.Contains(string(cmd.payload), `"req42"`) {
		t.Fatalf("command notification %+v", cmd)
	}
	resp, err := dev.Post(ctx5(t), "/ps/devices/sensor1/responses/req42", message.AppJSON, strings.NewReader(`{"ok":true}`))
	if err != nil || resp.Code() != codes.Changed {
		t.Fatalf("response POST: %v %v", resp, err)
	}
	got := responses.next(t)
	if got.Topic != "devices/sensor1/responses/req42" || string(got.Payload) != `{"ok":true}` || got.ContentType != "application/json" {
		t.Fatalf("response envelope %q %q %q", got.Topic, got.Payload, got.ContentType)
	}
}

// TestObservationsEndWithConnection: stopping the adapter ends every
// observation and its bus subscription.
func TestObservationsEndOnStop(t *testing.T) {
	t.Parallel()
	e := start(t, nil)
	cc := e.dial(t, "")
	ch, f := observeChan(t)
	for i := 0; i < 3; i++ {
		if _, err := cc.Observe(ctx5(t), fmt.Sprintf("/ps/stop/%d", i), f); err != nil {
			t.Fatal(err)
		}
		nextNote(t, ch)
	}
	if n := e.a.observations(); n != 3 {
		t.Fatalf("%d observations", n)
	}
	before := e.bus.Stats().Subscriptions
	if err := e.a.Stop(ctx5(t)); err != nil {
		t.Fatal(err)
	}
	if after := e.bus.Stats().Subscriptions; after != before-3 {
		t.Fatalf("bus subscriptions %d -> %d", before, after)
	}
}

func TestObserveSequenceWraps(t *testing.T) {
	t.Parallel()
	o := &observation{}
	o.seq.Store(observeMask - 1)
	if got := o.next(); got != observeMask {
		t.Fatalf("next = %d, want %d", got, observeMask)
	}
	if got := o.next(); got != 0 {
		t.Fatalf("after 2^24-1 next = %d, want 0 (24-bit wrap)", got)
	}
}

// TestMaxObservations: beyond MaxObservations a GET with Observe is
// answered as a plain GET (RFC 7641 §4.1 allows it), without Observe.
func TestMaxObservations(t *testing.T) {
	t.Parallel()
	e := start(t, func(c *Config) { c.MaxObservations = 1 })
	publish(t, e.bus, "max/a", "A", "", 0, true)
	publish(t, e.bus, "max/b", "B", "", 0, true)
	r := e.raw(t)
	r.send(rawMsg{typ: message.Confirmable, code: codes.GET, mid: 1, token: []byte{1}, path: "/ps/max/a", observe: 0, cf: -1})
	if m := r.mustRecv(); !m.HasOption(message.Observe) || string(body(t, m)) != "A" {
		t.Fatalf("first observation: %v", m)
	}
	r.send(rawMsg{typ: message.Confirmable, code: codes.GET, mid: 2, token: []byte{2}, path: "/ps/max/b", observe: 0, cf: -1})
	if m := r.mustRecv(); m.HasOption(message.Observe) || string(body(t, m)) != "B" || m.Code() != codes.Content {
		t.Fatalf("observation over the limit: %v", m)
	}
	if n := e.a.observations(); n != 1 {
		t.Fatalf("%d observations", n)
	}
}

// TestSilentNONObserverGetsCON: a NON observer silent for IdleTimeout gets
// its next notification as CON (RFC 7641 §4.5); once it acknowledges, the
// notifications are NON again.
func TestSilentNONObserverGetsCON(t *testing.T) {
	t.Parallel()
	e := start(t, func(c *Config) { c.IdleTimeout = 150 * time.Millisecond })
	r := e.raw(t)
	r.send(rawMsg{typ: message.NonConfirmable, code: codes.GET, mid: 10, token: []byte{3}, path: "/ps/idle/t", observe: 0, cf: -1})
	r.mustRecv()
	time.Sleep(300 * time.Millisecond)
	publish(t, e.bus, "idle/t", "1", "", 0, false)
	m := r.mustRecv()
	if m.Type() != message.Confirmable {
		t.Fatalf("notification after silence is %v, want CON", m.Type())
	}
	r.send(rawMsg{typ: message.Acknowledgement, code: codes.Empty, mid: m.MessageID(), observe: -1, cf: -1})
	time.Sleep(50 * time.Millisecond)
	publish(t, e.bus, "idle/t", "2", "", 0, false)
	if m := r.mustRecv(); m.Type() != message.NonConfirmable || string(body(t, m)) != "2" {
		t.Fatalf("notification after the ACK: %v", m)
	}
	if e.a.observations() != 1 {
		t.Fatal("observation lost")
	}
}

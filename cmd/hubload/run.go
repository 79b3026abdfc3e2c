package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// publisher is one publishing client: a messagePublisher or a
// framePublisher; close disconnects it.
type publisher interface {
	close()
}

// messagePublisher sends payloads built by the publish loop. publish may
// return a wait function that completes once the message is acknowledged
// (MQTT QoS 1 PUBACK); a nil wait means publish already finished.
type messagePublisher interface {
	publisher
	publish(ctx context.Context, topic string, payload []byte) (wait func(context.Context) error, err error)
}

// framePublisher builds each payload itself, from the header, straight
// into its output (the lean MQTT client), and keeps its own window of
// unacknowledged messages.
type framePublisher interface {
	publisher
	// publishFrame sends one message carrying h (its send time is set as
	// it is encoded), waiting while the window is full; an error means it
	// was not sent.
	publishFrame(ctx context.Context, topic string, h header) error
	// flush has what publishFrame queued sent now: publishFrame may hold
	// messages back to send several at once until it has to wait.
	flush()
	// settle flushes, then waits until every message sent is acknowledged
	// (or, at QoS 0, written), or ctx ends, and returns how many were.
	settle(ctx context.Context) (uint64, error)
}

// subscriber is one subscribing client; close disconnects it.
type subscriber interface {
	close()
}

// transport connects the clients of one mode.
type transport struct {
	// newSubscriber connects subscriber idx, subscribes to topic and returns
	// once the subscription is acknowledged; deliver is called per message,
	// with a payload it must not keep after it returns.
	// onError reports trouble after connecting, such as a dropped connection.
	newSubscriber func(ctx context.Context, idx int, topic string, deliver func(payload []byte), onError func(error)) (subscriber, error)
	// newPublisher connects publisher idx; onError as for newSubscriber.
	newPublisher func(ctx context.Context, idx int, onError func(error)) (publisher, error)
}

// plan says which topic each client uses and how many messages each
// publisher sends.
type plan struct {
	topics   int
	pubTopic []string
	subTopic []string
	perPub   []uint64
}

// topicName expands the first "%d" of pattern to i.
func topicName(pattern string, i int) string {
	return strings.Replace(pattern, "%d", strconv.Itoa(i), 1)
}

// makePlan spreads clients over topics: with fanout everyone shares topic
// 0; otherwise there are min(publishers, subscribers) topics and client k
// uses topic k mod that, so 10×10 makes ten 1→1 pairs, 1×100 one 1→100
// topic, 100×1 one 100→1 topic. Messages are split evenly over publishers.
func makePlan(c *config) plan {
	p := plan{topics: min(c.publishers, c.subscribers)}
	if c.fanout || !strings.Contains(c.topic, "%d") {
		p.topics = 1
	}
	for i := range c.publishers {
		p.pubTopic = append(p.pubTopic, topicName(c.topic, i%p.topics))
		n := uint64(c.messages / c.publishers)
		if i < c.messages%c.publishers {
			n++
		}
		p.perPub = append(p.perPub, n)
	}
	for j := range c.subscribers {
		p.subTopic = append(p.subTopic, topicName(c.topic, j%p.topics))
	}
	return p
}

// errorLog counts errors and keeps the first few distinct messages with
// how often each occurred.
type errorLog struct {
	mu       sync.Mutex
	n        int
	distinct []string
	count    map[string]int
}

const maxDistinctErrors = 10

func (e *errorLog) add(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.n++
	if e.count == nil {
		e.count = make(map[string]int)
	}
	msg := err.Error()
	if _, seen := e.count[msg]; !seen && len(e.distinct) >= maxDistinctErrors {
		return
	} else if !seen {
		e.distinct = append(e.distinct, msg)
	}
	e.count[msg]++
}

// total returns how many errors were added.
func (e *errorLog) total() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n
}

// summary returns the distinct messages, each with "(×N)" when repeated.
func (e *errorLog) summary() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, m := range e.distinct {
		if n := e.count[m]; n > 1 {
			m = fmt.Sprintf("%s (×%d)", m, n)
		}
		out = append(out, m)
	}
	return out
}

// runLoad connects the subscribers, then the publishers, publishes the plan
// within c.duration, waits for the deliveries to drain and returns the
// figures. The error is for a run that could not take place at all (a client
// failed to connect); problems during the run are counted in the Result.
func runLoad(ctx context.Context, c *config, tr transport) (*Result, error) {
	p := makePlan(c)
	run := rand.Uint32()
	acct := newAccounting(run, p.perPub, p.pubTopic, p.subTopic)
	errs := &errorLog{}

	var sampler *rssSampler
	if c.pid > 0 {
		var err error
		if sampler, err = startRSSSampler(c.pid, 50*time.Millisecond); err != nil {
			return nil, err
		}
		defer sampler.stop()
	}

	connectCtx, cancelConnect := context.WithTimeout(ctx, c.connectTimeout)
	defer cancelConnect()

	subs := make([]subscriber, c.subscribers)
	defer func() {
		closeAll(len(subs), func(i int) {
			if subs[i] != nil {
				subs[i].close()
			}
		})
	}()
	if err := connectAll(connectCtx, c.subscribers, func(ctx context.Context, j int) error {
		s, err := tr.newSubscriber(ctx, j, p.subTopic[j], func(payload []byte) {
			acct.receive(j, payload, time.Now())
		}, func(err error) { errs.add(fmt.Errorf("subscriber %d: %w", j, err)) })
		if err != nil {
			return fmt.Errorf("subscriber %d (topic %q): %w", j, p.subTopic[j], err)
		}
		subs[j] = s
		return nil
	}); err != nil {
		return nil, err
	}

	pubs := make([]publisher, c.publishers)
	defer func() {
		closeAll(len(pubs), func(i int) {
			if pubs[i] != nil {
				pubs[i].close()
			}
		})
	}()
	if err := connectAll(connectCtx, c.publishers, func(ctx context.Context, i int) error {
		pb, err := tr.newPublisher(ctx, i, func(err error) { errs.add(fmt.Errorf("publisher %d: %w", i, err)) })
		if err != nil {
			return fmt.Errorf("publisher %d: %w", i, err)
		}
		pubs[i] = pb
		return nil
	}); err != nil {
		return nil, err
	}
	var rssBefore memSample
	var targetCPU0 time.Duration
	if sampler != nil {
		rssBefore = sampler.current()
		targetCPU0, _ = readProcCPU(c.pid)
	}

	clientCPU0 := selfCPU()
	start := time.Now()
	pubCtx, cancelPub := context.WithDeadline(ctx, start.Add(c.duration))
	defer cancelPub()
	// Acknowledgements still outstanding and deliveries still on their way
	// when publishing stops get the drain time: after the deadline, or after
	// an interrupt (ctx), which stops publishing at once.
	ackCtx, cancelAck := context.WithDeadline(context.WithoutCancel(ctx), start.Add(c.duration+c.drain))
	defer cancelAck()
	var graceTimer atomic.Pointer[time.Timer]
	stopGrace := context.AfterFunc(ctx, func() { graceTimer.Store(time.AfterFunc(c.drain, cancelAck)) })
	defer func() {
		stopGrace()
		if t := graceTimer.Load(); t != nil {
			t.Stop()
		}
	}()

	sent := make([]uint64, c.publishers)
	var timedOut atomic.Bool
	var attempted atomic.Uint64
	var wg sync.WaitGroup
	for i := range c.publishers {
		wg.Go(func() {
			o := publishLoop(pubCtx, ackCtx, c, pubs[i], i, run, p.pubTopic[i], p.perPub[i], start, errs)
			sent[i] = o.sent
			attempted.Add(o.attempted)
			if o.cut {
				timedOut.Store(true)
			}
		})
	}
	wg.Wait()
	pubEnd := time.Now()

	var totalSent uint64
	for _, n := range sent {
		totalSent += n
	}
	expected := acct.expected(sent)
	drainDeliveries(ackCtx, acct, expected, c.drain)
	end := time.Now()
	clientCPU := selfCPU() - clientCPU0

	tot := acct.totals()
	res := &Result{
		Mode:            c.mode,
		URL:             c.url,
		QoS:             int(c.qos),
		Size:            c.size,
		Publishers:      c.publishers,
		Subscribers:     c.subscribers,
		Topics:          p.topics,
		Fanout:          p.topics == 1 && c.subscribers > 1,
		MessagesPlanned: uint64(c.messages),
		Sent:            totalSent,
		Attempted:       attempted.Load(),
		ErrorCount:      errs.total(),
		Errors:          errs.summary(),
		TimedOut:        timedOut.Load(),
		Interrupted:     ctx.Err() != nil,
		Expected:        expected,
		Received:        tot.unique,
		Duplicates:      tot.dups,
		Invalid:         tot.invalid,
		Unexpected:      tot.foreign,
		PublishSeconds:  pubEnd.Sub(start).Seconds(),
		Latency:         tot.hist.summary(),

		WallSeconds:      end.Sub(start).Seconds(),
		ClientCPUSeconds: clientCPU.Seconds(),
	}
	if tot.unique > 0 {
		res.ClientCPUMicrosPerDelivery = res.ClientCPUSeconds * 1e6 / float64(tot.unique)
	}
	if c.mode != "xmpp" {
		res.MQTTClient = cmp.Or(c.mqttClient, mqttClientLean)
	}
	if expected > tot.unique {
		res.Lost = expected - tot.unique
		res.LossPct = 100 * float64(res.Lost) / float64(expected)
	}
	if res.PublishSeconds > 0 {
		res.SendRate = float64(totalSent) / res.PublishSeconds
	}
	if last := acct.lastRecvNs.Load(); last > 0 && tot.unique > 0 {
		res.ReceiveSeconds = time.Unix(0, last).Sub(start).Seconds()
		if res.ReceiveSeconds > 0 {
			res.ReceiveRate = float64(tot.unique) / res.ReceiveSeconds
		}
	}
	if sampler != nil {
		res.Target = sampler.result(rssBefore)
		if cpu, err := readProcCPU(c.pid); err == nil {
			res.Target.CPUSeconds = (cpu - targetCPU0).Seconds()
			if tot.unique > 0 {
				res.Target.CPUMicrosPerDelivery = res.Target.CPUSeconds * 1e6 / float64(tot.unique)
			}
		}
	}
	return res, nil
}

// pubOutcome is what one publisher did.
type pubOutcome struct {
	attempted uint64 // handed to the client
	sent      uint64 // of those, completed (acknowledged, for MQTT QoS >= 1)
	cut       bool   // the deadline stopped it
}

// paceInterval is the time between two messages of one publisher at
// c.rate (0: unpaced).
func paceInterval(c *config) time.Duration {
	if c.rate > 0 {
		return time.Duration(float64(time.Second) * float64(c.publishers) / c.rate)
	}
	return 0
}

// pace waits until message seq is due, interval after interval from start.
func pace(ctx context.Context, start time.Time, seq uint64, interval time.Duration) {
	if interval <= 0 {
		return
	}
	if d := time.Until(start.Add(time.Duration(seq) * interval)); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
}

// publishLoop sends n messages for publisher idx, paced by c.rate, with at
// most c.inflight unacknowledged at a time. It stops at the first error,
// which is logged: the connection is then usually gone.
func publishLoop(ctx, ackCtx context.Context, c *config, pb publisher, idx int, run uint32, topic string, n uint64, start time.Time, errs *errorLog) pubOutcome {
	switch p := pb.(type) {
	case framePublisher:
		return framePublishLoop(ctx, ackCtx, c, p, idx, run, topic, n, start, errs)
	case messagePublisher:
		return messagePublishLoop(ctx, ackCtx, c, p, idx, run, topic, n, start, errs)
	}
	errs.add(fmt.Errorf("publisher %d: %T cannot publish", idx, pb))
	return pubOutcome{}
}

// framePublishLoop is publishLoop for a framePublisher, which keeps the
// c.inflight window itself.
func framePublishLoop(ctx, ackCtx context.Context, c *config, pb framePublisher, idx int, run uint32, topic string, n uint64, start time.Time, errs *errorLog) pubOutcome {
	var o pubOutcome
	interval := paceInterval(c)
	for seq := uint64(0); seq < n; seq++ {
		pace(ctx, start, seq, interval)
		if ctx.Err() != nil {
			o.cut = errors.Is(ctx.Err(), context.DeadlineExceeded)
			break
		}
		if err := pb.publishFrame(ctx, topic, header{Run: run, Pub: uint32(idx), Seq: seq}); err != nil {
			if ctx.Err() != nil {
				o.cut = errors.Is(ctx.Err(), context.DeadlineExceeded)
				break
			}
			errs.add(fmt.Errorf("publisher %d: message %d: %w", idx, seq, err))
			break
		}
		o.attempted++
		if interval > 0 {
			pb.flush() // paced: each message goes out as it is due
		}
	}
	sent, err := pb.settle(ackCtx)
	if err != nil {
		errs.add(fmt.Errorf("publisher %d: acknowledgement: %w", idx, err))
	}
	o.sent = sent
	return o
}

// messagePublishLoop is publishLoop for a messagePublisher: it builds each
// payload and keeps the window of wait functions.
func messagePublishLoop(ctx, ackCtx context.Context, c *config, pb messagePublisher, idx int, run uint32, topic string, n uint64, start time.Time, errs *errorLog) pubOutcome {
	var sent, attempted uint64
	cut := false
	interval := paceInterval(c)
	var pending []func(context.Context) error
	settle := func(ctx context.Context, w func(context.Context) error) bool {
		if err := w(ctx); err != nil {
			errs.add(fmt.Errorf("publisher %d: acknowledgement: %w", idx, err))
			return false
		}
		sent++
		return true
	}
	failed := false
	encode := encodePayload
	if c.textPayload {
		encode = encodeTextPayload
	}
	for seq := uint64(0); seq < n && !failed; seq++ {
		pace(ctx, start, seq, interval)
		if ctx.Err() != nil {
			cut = errors.Is(ctx.Err(), context.DeadlineExceeded)
			break
		}
		for len(pending) >= c.inflight {
			w := pending[0]
			pending = pending[1:]
			if !settle(ackCtx, w) {
				failed = true
			}
		}
		if failed {
			break
		}
		payload := encode(header{Run: run, Pub: uint32(idx), Seq: seq, SentNs: time.Now().UnixNano()}, c.size)
		attempted++
		w, err := pb.publish(ctx, topic, payload)
		if err != nil {
			if ctx.Err() != nil {
				cut = errors.Is(ctx.Err(), context.DeadlineExceeded)
				break
			}
			errs.add(fmt.Errorf("publisher %d: message %d: %w", idx, seq, err))
			failed = true
			break
		}
		if w == nil {
			sent++
			continue
		}
		pending = append(pending, w)
	}
	for _, w := range pending {
		settle(ackCtx, w)
	}
	return pubOutcome{attempted: attempted, sent: sent, cut: cut}
}

// drainDeliveries waits until expected deliveries have arrived, or none has
// arrived for idle, or ctx ends.
func drainDeliveries(ctx context.Context, acct *accounting, expected uint64, idle time.Duration) {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	last := acct.unique.Load()
	lastChange := time.Now()
	for last < expected {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			cur := acct.unique.Load()
			if cur != last {
				last, lastChange = cur, now
			} else if now.Sub(lastChange) >= idle {
				return
			}
		}
	}
}

// connectAll runs connect for 0..n-1, at most 16 at a time, and returns the
// first error.
func connectAll(ctx context.Context, n int, connect func(context.Context, int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, 16)
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := connect(ctx, i); err != nil {
				once.Do(func() { first = err; cancel() })
			}
		})
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = fmt.Errorf("connecting: %w", ctx.Err())
	}
	return first
}

// closeAll calls close(i) for 0..n-1 concurrently and waits.
func closeAll(n int, close func(int)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			close(i)
		})
	}
	wg.Wait()
}

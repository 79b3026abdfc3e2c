package natsbus

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubsmith/hub/broker"
)

// fetchWait is how long one pull request waits for envelopes.
const fetchWait = 20 * time.Second

// ackTimeout bounds a synchronous acknowledgement (a nack, or an ack
// after a detach), which must reach JetStream before the next pull.
const ackTimeout = 2 * time.Second

// storedSpecs are a durable subscription's filters with their options,
// kept as its consumer's description (JSON) so that any hub can resume it.
type storedSpecs struct {
	QoS   byte            `json:"qos"`
	Specs []broker.Filter `json:"specs"`
	// Principal owns the subscription, for the queued-bytes quota.
	Principal string `json:"principal,omitempty"`
}

// durable is one attachment of a durable subscription: deliveries at QoS
// >= 1 come from its JetStream consumer, the others (QoS 0 envelopes,
// filters at QoS 0, replayed retained values) from the in-process part.
type durable struct {
	b     *Bus
	opts  broker.SubscribeOptions
	name  string // the consumer's
	cons  jetstream.Consumer
	inbox *nats.Subscription  // where the pulled envelopes come
	part  broker.Subscription // in b.mem, LiveQoS0Only
	h     broker.DeliveryHandler
	hmu   sync.Mutex // one handler call at a time, from either source

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	kick   chan struct{}

	mu       sync.Mutex
	specs    []broker.Filter
	window   int
	pending  map[*broker.Delivery]pendingMsg // out and not acknowledged
	seq      uint64                          // deliveries so far, for their order
	detached bool
	// attached is set once the attachment is whole (its consumer made
	// and its in-process part subscribed); its entry in b.durables is
	// made first, to keep the ID for it.
	attached atomic.Bool

	delivered, redelivered, dropped, denied, downgraded atomic.Uint64
}

// pendingMsg is a delivery out for acknowledgement: its reply subject and
// its place in the order of deliveries.
type pendingMsg struct {
	reply string
	n     uint64
}

// consumerName is the JetStream name of subscriber id: readable where id
// is, unique by its hash.
func consumerName(id string) string {
	var b strings.Builder
	for i := 0; i < len(id) && b.Len() < 32; i++ {
		c := id[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' {
			b.WriteByte(c)
		} else {
			b.WriteByte('_')
		}
	}
	sum := sha256.Sum256([]byte(id))
	return "sub_" + b.String() + "_" + hex.EncodeToString(sum[:8])
}

// specsOf returns the filters of opts with their options.
func specsOf(opts broker.SubscribeOptions) []broker.Filter {
	out := slices.Clone(opts.Specs)
	for _, f := range opts.Filters {
		out = append(out, broker.Filter{Topic: f, QoS: opts.QoS})
	}
	return out
}

// subjectsOf returns the consumer's filter subjects for specs: those of
// the filters that deliver at QoS >= 1, none covered by another (JetStream
// refuses a subset), or one that matches nothing.
func (b *Bus) subjectsOf(specs []broker.Filter, qos byte) ([]string, error) {
	var all []string
	for _, f := range specs {
		if f.Group != "" || min(f.QoS, qos) == 0 {
			continue
		}
		ss, err := broker.FilterToSubjects(b.durSubj, f.Topic)
		if err != nil {
			return nil, fmt.Errorf("natsbus: %w", err)
		}
		all = append(all, ss...)
	}
	var out []string
	for i, s := range all {
		covered := false
		for j, o := range all {
			if i != j && subjectSubset(s, o) && (s != o || j < i) {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		// "~~" is no topic level's token: nothing is published there.
		out = []string{b.durSubj + ".~~"}
	}
	slices.Sort(out)
	return out, nil
}

// subjectSubset reports whether every subject a matches is matched by b.
func subjectSubset(a, b string) bool {
	at, bt := strings.Split(a, "."), strings.Split(b, ".")
	for i, t := range bt {
		if t == ">" {
			return len(at) > i
		}
		if i >= len(at) || at[i] == ">" {
			return false
		}
		if t != "*" && t != at[i] {
			return false
		}
		if t == "*" && at[i] == ">" {
			return false
		}
	}
	return len(at) == len(bt)
}

// consumerConfig is the JetStream consumer of a durable subscription.
func (b *Bus) consumerConfig(name, principal string, specs []broker.Filter, qos byte, window int) (jetstream.ConsumerConfig, error) {
	subjects, err := b.subjectsOf(specs, qos)
	if err != nil {
		return jetstream.ConsumerConfig{}, err
	}
	meta, err := json.Marshal(storedSpecs{QoS: qos, Specs: specs, Principal: principal})
	if err != nil {
		return jetstream.ConsumerConfig{}, fmt.Errorf("natsbus: filters: %w", err)
	}
	cc := jetstream.ConsumerConfig{
		Durable:       name,
		Description:   string(meta),
		DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       b.cfg.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: window,
		Replicas:      b.cfg.Replicas,
	}
	switch {
	case !b.multiFilter:
		// A server before 2.10 takes one filter subject and cannot change
		// it: the consumer takes every envelope, and route drops (acks)
		// what no filter matches.
		cc.FilterSubject = b.durSubj + ".>"
	case len(subjects) == 1:
		cc.FilterSubject = subjects[0]
	default:
		cc.FilterSubjects = subjects
	}
	return cc, nil
}

// attachDurable attaches a durable subscription, making or updating its
// consumer.
func (b *Bus) attachDurable(ctx context.Context, opts broker.SubscribeOptions, h broker.DeliveryHandler) (broker.Subscription, error) {
	if opts.ID == "" {
		return nil, errors.New("natsbus: subscribe: a durable subscription needs an ID")
	}
	if opts.QoS > 2 {
		return nil, fmt.Errorf("natsbus: subscribe: qos %d out of range 0..2", opts.QoS)
	}
	specs := specsOf(opts)
	for _, f := range specs {
		if err := broker.ValidateFilter(f.Topic); err != nil {
			return nil, fmt.Errorf("natsbus: subscribe: %w", err)
		}
		if f.QoS > 2 || f.RetainHandling > 2 {
			return nil, fmt.Errorf("natsbus: subscribe: filter %q: qos %d, retain handling %d out of range 0..2", f.Topic, f.QoS, f.RetainHandling)
		}
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, broker.ErrClosed
	}
	if _, ok := b.durables[opts.ID]; ok {
		b.mu.Unlock()
		return nil, fmt.Errorf("natsbus: subscribe %q: %w", opts.ID, broker.ErrDuplicateSubscriber)
	}
	d := &durable{b: b, opts: opts, name: consumerName(opts.ID), h: h, window: opts.MaxAckPending,
		pending: map[*broker.Delivery]pendingMsg{}, kick: make(chan struct{}, 1), done: make(chan struct{})}
	b.durables[opts.ID] = d
	b.mu.Unlock()
	fail := func(err error) (broker.Subscription, error) {
		b.mu.Lock()
		delete(b.durables, opts.ID)
		b.mu.Unlock()
		return nil, err
	}

	cctx, cancel := context.WithTimeout(ctx, b.cfg.PublishTimeout)
	defer cancel()
	if opts.KeepFilters {
		if c, err := b.stream.Consumer(cctx, d.name); err == nil {
			var st storedSpecs
			if err := json.Unmarshal([]byte(c.CachedInfo().Config.Description), &st); err == nil {
				specs = st.Specs
			}
		}
	}
	d.specs = specs
	cfg, err := b.consumerConfig(d.name, opts.Principal, specs, opts.QoS, d.window)
	if err != nil {
		return fail(err)
	}
	d.cons, err = b.stream.CreateOrUpdateConsumer(cctx, cfg)
	if err != nil {
		return fail(fmt.Errorf("natsbus: subscribe %q: consumer: %w: %w", opts.ID, broker.ErrStorage, err))
	}
	b.queued.setSub(opts.Principal, d.name, specs, opts.QoS, true) // quota.go

	popts := opts
	popts.Durable, popts.KeepFilters, popts.LiveQoS0Only = false, false, true
	popts.Specs, popts.Filters = specs, nil
	d.ctx, d.cancel = context.WithCancel(b.ctx)
	part, err := b.mem.Consume(ctx, popts, d.handle)
	d.part, err = b.trackGroups(part, err, memberOf{opts: opts, h: d.handle, d: d}) // groups.go
	if err != nil {
		d.cancel()
		return fail(err)
	}
	d.inbox, err = b.nc.SubscribeSync(nats.NewInbox())
	if err != nil {
		_ = d.part.Unsubscribe()
		d.cancel()
		return fail(fmt.Errorf("natsbus: subscribe %q: inbox: %w", opts.ID, err))
	}
	_ = d.inbox.SetPendingLimits(-1, -1)
	d.attached.Store(true)
	b.wg.Add(1)
	go d.run()
	return d, nil
}

// handle hands one delivery to the subscriber's handler, one at a time.
func (d *durable) handle(dl *broker.Delivery) {
	d.hmu.Lock()
	defer d.hmu.Unlock()
	d.h(dl)
}

// run pulls from the consumer as the window allows, until the
// attachment ends. It keeps one pull request out at a time, for no more
// envelopes than the window has room for, on an inbox of its own that
// Detach drains, so that nothing pulled for this attachment is left out
// unseen.
func (d *durable) run() {
	defer d.b.wg.Done()
	defer close(d.done)
	api := "$JS.API.CONSUMER.MSG.NEXT." + d.b.streamName + "." + d.name
	backoff := 100 * time.Millisecond
	for d.ctx.Err() == nil {
		d.mu.Lock()
		free := d.window - len(d.pending)
		d.mu.Unlock()
		if free <= 0 {
			select {
			case <-d.kick:
			case <-d.ctx.Done():
			}
			continue
		}
		req := fmt.Sprintf(`{"batch":%d,"expires":%d}`, free, fetchWait.Nanoseconds())
		err := d.b.nc.PublishRequest(api, d.inbox.Subject, []byte(req))
		if err == nil {
			err = d.receive(free)
		}
		if err == nil || d.ctx.Err() != nil {
			backoff = 100 * time.Millisecond
			continue
		}
		d.b.log.Debug("natsbus: pull", "subscriber", d.opts.ID, "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-d.ctx.Done():
		}
		t.Stop()
		backoff = min(2*backoff, 5*time.Second)
	}
}

// receive delivers what one pull request of n brings.
func (d *durable) receive(n int) error { return pullReceive(d.ctx, d.inbox, n, d.deliver) }

// route says how an envelope from the consumer is delivered: at what QoS,
// with which subscription identifiers and retain flag; ok is false when
// no filter takes it any more (removed, NoLocal, a $ topic under '#').
func (d *durable) route(e *broker.Envelope) (qos byte, ids []int, rap, ok bool) {
	self := d.opts.Self.ClientID != "" && e.Origin.ClientID == d.opts.Self.ClientID && e.Origin.Protocol == d.opts.Self.Protocol
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, f := range d.specs {
		if f.Group != "" || !broker.Match(f.Topic, e.Topic) || f.NoLocal && self {
			continue
		}
		q := min(e.QoS, f.QoS, d.opts.QoS)
		if !ok || q > qos {
			qos = q
		}
		ok = true
		rap = rap || f.RetainAsPublished
		if f.ID != 0 {
			ids = append(ids, f.ID)
		}
	}
	slices.Sort(ids)
	return qos, ids, rap, ok && qos >= 1
}

// deliver hands one message of the consumer to the handler, or
// acknowledges it at once when it is not to be delivered.
func (d *durable) deliver(m *nats.Msg) {
	if d.ctx.Err() != nil {
		d.reply(m.Reply, "-NAK", true)
		return
	}
	e, err := broker.UnmarshalEnvelope(m.Data)
	if err != nil {
		d.b.log.Warn("natsbus: undecodable envelope in the stream", "subscriber", d.opts.ID, "err", err)
		d.reply(m.Reply, "+TERM", false)
		return
	}
	qos, ids, rap, ok := d.route(e)
	switch {
	case !ok:
		d.reply(m.Reply, "+ACK", false)
		return
	case e.Expired(time.Now()):
		d.dropped.Add(1)
		d.reply(m.Reply, "+ACK", false)
		return
	case d.opts.Allow != nil && !d.opts.Allow(e):
		d.denied.Add(1)
		d.reply(m.Reply, "+ACK", false)
		return
	}
	redo := false
	if md, err := m.Metadata(); err == nil {
		redo = md.NumDelivered > 1
	}
	if qos < e.QoS {
		d.downgraded.Add(1)
	}
	d.delivered.Add(1)
	if redo {
		d.redelivered.Add(1)
	}
	reply := m.Reply
	var dl *broker.Delivery
	dl = broker.NewDelivery(d.ctx, &broker.Delivery{Envelope: e, QoS: qos, RetainFlag: e.Retain && rap, Redelivered: redo, IDs: ids},
		broker.DeliveryFuncs{
			Ack: func() { d.settle(dl, reply, "+ACK", false) },
			Nack: func(delay time.Duration) {
				body := "-NAK"
				if delay > 0 {
					body = fmt.Sprintf(`-NAK {"delay": %d}`, delay.Nanoseconds())
				}
				d.settle(dl, reply, body, true)
			},
		})
	d.mu.Lock()
	d.seq++
	d.pending[dl] = pendingMsg{reply: reply, n: d.seq}
	d.mu.Unlock()
	d.handle(dl)
}

// settle sends a delivery's acknowledgement and frees its place in the
// window. After a detach it is synchronous, so that it reaches JetStream
// before the next attachment pulls.
func (d *durable) settle(dl *broker.Delivery, reply, body string, sync bool) {
	d.mu.Lock()
	_, live := d.pending[dl]
	delete(d.pending, dl)
	detached := d.detached
	d.mu.Unlock()
	if !live && !detached {
		return
	}
	if detached && !live {
		// Detach handed it back already; an ack still counts.
		sync = true
	}
	d.reply(reply, body, sync)
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// reply sends an acknowledgement body to a JetStream reply subject; sync
// waits for JetStream to confirm it.
func (d *durable) reply(subject, body string, sync bool) { d.b.ack(subject, body, sync) }

// ID implements broker.Subscription.
func (d *durable) ID() string { return d.opts.ID }

// Stats implements broker.Subscription: the in-process part's counters
// and the consumer's added up.
func (d *durable) Stats() broker.SubscriptionStats {
	st := d.part.Stats()
	d.mu.Lock()
	st.Pending += len(d.pending)
	d.mu.Unlock()
	st.Delivered += d.delivered.Load()
	st.Redelivered += d.redelivered.Load()
	st.Dropped += d.dropped.Load()
	st.Denied += d.denied.Load()
	st.Downgraded += d.downgraded.Load()
	// Every delivery from the consumer was in the durable queue.
	st.Spooled += d.delivered.Load() - d.redelivered.Load()
	return st
}

// Filters implements broker.Subscription.
func (d *durable) Filters() []broker.Filter { return d.part.Filters() }

// AddFilter implements broker.Subscription.
func (d *durable) AddFilter(ctx context.Context, f broker.Filter) (bool, error) {
	existed, err := d.part.AddFilter(ctx, f)
	if err != nil {
		return existed, err
	}
	return existed, d.saveFilters(ctx)
}

// RemoveFilter implements broker.Subscription.
func (d *durable) RemoveFilter(ctx context.Context, topic, group string) (bool, error) {
	existed, err := d.part.RemoveFilter(ctx, topic, group)
	if err != nil || !existed {
		return existed, err
	}
	return true, d.saveFilters(ctx)
}

// saveFilters gives the consumer the filters of the in-process part.
func (d *durable) saveFilters(ctx context.Context) error {
	specs := d.part.Filters()
	d.mu.Lock()
	d.specs = specs
	window := d.window
	d.mu.Unlock()
	cfg, err := d.b.consumerConfig(d.name, d.opts.Principal, specs, d.opts.QoS, window)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, d.b.cfg.PublishTimeout)
	defer cancel()
	if _, err := d.b.stream.UpdateConsumer(ctx, cfg); err != nil {
		return fmt.Errorf("natsbus: filters of %q: %w: %w", d.opts.ID, broker.ErrStorage, err)
	}
	d.b.queued.setSub(d.opts.Principal, d.name, specs, d.opts.QoS, true)
	return nil
}

// SendRetained implements broker.Subscription.
func (d *durable) SendRetained(ctx context.Context, f broker.Filter) error {
	return d.part.SendRetained(ctx, f)
}

// Detach implements broker.Subscription: delivery stops, and what was
// delivered and not acknowledged is handed back to the consumer, to come
// first, marked redelivered, on the next attachment (on any hub).
func (d *durable) Detach() error {
	d.mu.Lock()
	if d.detached {
		d.mu.Unlock()
		return nil
	}
	d.detached = true
	d.mu.Unlock()
	d.cancel()
	<-d.done
	_ = d.part.Unsubscribe()
	// What a pull request brought and nobody read is handed back, and
	// JetStream sends its pull requests nothing more (pull.go).
	d.b.releaseInbox(d.inbox)
	d.mu.Lock()
	out := d.pending
	d.pending = map[*broker.Delivery]pendingMsg{}
	d.mu.Unlock()
	ps := slices.SortedFunc(maps.Values(out), func(a, b pendingMsg) int { return cmp.Compare(a.n, b.n) })
	for _, p := range ps {
		d.reply(p.reply, "-NAK", true)
	}
	d.b.mu.Lock()
	if d.b.durables[d.opts.ID] == d {
		delete(d.b.durables, d.opts.ID)
	}
	d.b.mu.Unlock()
	d.b.queued.setPulled(d.name, false)
	return nil
}

// Unsubscribe implements broker.Subscription: the consumer, and with it
// the durable queue, is deleted.
func (d *durable) Unsubscribe() error {
	_ = d.Detach()
	ctx, cancel := context.WithTimeout(context.Background(), d.b.cfg.PublishTimeout)
	defer cancel()
	if err := d.b.stream.DeleteConsumer(ctx, d.name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("natsbus: unsubscribe %q: %w", d.opts.ID, err)
	}
	d.b.queued.setSub(d.opts.Principal, d.name, nil, 0, false)
	d.b.forgetMember(d.opts.ID) // groups_durable.go
	return nil
}

var _ broker.Subscription = (*durable)(nil)

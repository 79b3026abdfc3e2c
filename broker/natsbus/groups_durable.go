package natsbus

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubsmith/hub/broker"
)

// A group's QoS >= 1 deliveries come from one durable JetStream consumer
// per (group, filter), named after both, shared by every hub with
// members: each pulls as much as its attached members have room for and
// hands each envelope to one of them, acknowledging it to JetStream when
// the member does. An envelope out to a member on a hub that dies (its
// NATS connection gone) is delivered again, to a member on any hub,
// after AckWait; one a member detaches or leaves with goes back at once.
// While no member is attached anywhere (persistent sessions away) the
// consumer keeps what is published, within the stream's limits, for the
// first member back.
//
// Who is a member is kept in the KV bucket {prefix}_groups, one record
// m.<member>.<group> per member: a durable subscription's stays while it
// is away, a non-durable one's names its hub, which shows it is alive
// with a heartbeat n.<hub>. When the last member on a hub leaves for good
// and the bucket has no live member left, the consumer is deleted.

// Timing of the group records.
const (
	heartbeatEvery = 5 * time.Second
	heartbeatStale = 4 * heartbeatEvery
	// groupMaxPull bounds one pull request of a hub.
	groupMaxPull = 256
	// fullRecheck is how often a puller whose members have no room looks
	// again (acks of their own deliveries free it without telling it).
	fullRecheck = 100 * time.Millisecond
)

// memberRecord is a member's record in the groups bucket.
type memberRecord struct {
	Node    string `json:"node"`
	Durable bool   `json:"durable,omitempty"`
	Group   string `json:"group"`
	Topic   string `json:"topic"`
}

// memberHash names a subscriber in the groups bucket's keys.
func memberHash(id string) string {
	h := sha256.Sum256([]byte(id))
	return hex.EncodeToString(h[:10])
}

func memberKey(id string, k groupKey) string { return "m." + memberHash(id) + "." + k.queueName() }

// groupConsumerConfig is the consumer of group k, the same from every hub.
func (b *Bus) groupConsumerConfig(k groupKey) (jetstream.ConsumerConfig, error) {
	meta, err := json.Marshal(memberRecord{Group: k.group, Topic: k.topic})
	if err != nil {
		return jetstream.ConsumerConfig{}, fmt.Errorf("natsbus: group %q: %w", k.group, err)
	}
	cc := jetstream.ConsumerConfig{
		Durable:       k.consumerName(),
		Description:   string(meta),
		DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       b.cfg.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: broker.DefaultMaxAckPending,
		MaxWaiting:    512,
		Replicas:      b.cfg.Replicas,
	}
	subjects, err := b.subjectsOf([]broker.Filter{{Topic: k.topic, QoS: 1}}, 1)
	if err != nil {
		return cc, err
	}
	switch {
	case !b.multiFilter:
		cc.FilterSubject = b.durSubj + ".>" // deliver drops what F does not match
	case len(subjects) == 1:
		cc.FilterSubject = subjects[0]
	default:
		cc.FilterSubjects = subjects
	}
	return cc, nil
}

// ensureGroupConsumer makes k's consumer, or finds it made.
func (b *Bus) ensureGroupConsumer(ctx context.Context, k groupKey) error {
	cc, err := b.groupConsumerConfig(k)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.PublishTimeout)
	defer cancel()
	if _, err := b.stream.CreateOrUpdateConsumer(ctx, cc); err != nil {
		return fmt.Errorf("natsbus: group %q on %q: consumer: %w", k.group, k.topic, err)
	}
	return nil
}

// groupPuller pulls a group's consumer for the members on this hub.
type groupPuller struct {
	b      *Bus
	gs     *groupSub
	inbox  *nats.Subscription
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	kick   chan struct{}
}

// startPuller starts pulling for gs (groupSubs.mu held).
func (b *Bus) startPuller(gs *groupSub) *groupPuller {
	p := &groupPuller{b: b, gs: gs, done: make(chan struct{}), kick: make(chan struct{}, 1)}
	p.ctx, p.cancel = context.WithCancel(b.ctx)
	var err error
	if p.inbox, err = b.nc.SubscribeSync(nats.NewInbox()); err != nil {
		b.log.Warn("natsbus: group inbox", "group", gs.k.group, "err", err)
		close(p.done)
		return p
	}
	_ = p.inbox.SetPendingLimits(-1, -1)
	b.wg.Add(1)
	go p.run()
	return p
}

func (p *groupPuller) kickNow() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// stop ends the pulling; what a pull brought and nobody took goes back.
func (p *groupPuller) stop() {
	p.cancel()
	<-p.done
	p.b.releaseInbox(p.inbox)
}

func (p *groupPuller) run() {
	defer p.b.wg.Done()
	defer close(p.done)
	k := p.gs.k
	api := "$JS.API.CONSUMER.MSG.NEXT." + p.b.streamName + "." + k.consumerName()
	backoff := 100 * time.Millisecond
	for p.ctx.Err() == nil {
		free := p.b.groupFree(p.gs)
		if free <= 0 {
			t := time.NewTimer(fullRecheck)
			select {
			case <-p.kick:
			case <-t.C:
			case <-p.ctx.Done():
			}
			t.Stop()
			continue
		}
		req := fmt.Sprintf(`{"batch":%d,"expires":%d}`, free, fetchWait.Nanoseconds())
		err := p.b.nc.PublishRequest(api, p.inbox.Subject, []byte(req))
		if err == nil {
			err = pullReceive(p.ctx, p.inbox, free, p.deliver)
		}
		if err == nil || p.ctx.Err() != nil {
			backoff = 100 * time.Millisecond
			continue
		}
		// Most likely the consumer is gone (deleted by a hub that saw the
		// group empty as this one joined, or JetStream lost it): make it
		// again.
		p.b.log.Debug("natsbus: group pull", "group", k.group, "filter", k.topic, "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-p.ctx.Done():
		}
		t.Stop()
		if p.ctx.Err() == nil {
			if err := p.b.ensureGroupConsumer(p.ctx, k); err != nil {
				p.b.log.Debug("natsbus: group consumer", "group", k.group, "err", err)
			}
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// groupFree is how many deliveries gs's members have room for.
func (b *Bus) groupFree(gs *groupSub) int {
	b.groups.mu.Lock()
	defer b.groups.mu.Unlock()
	n := 0
	for _, m := range gs.members {
		n += m.free()
	}
	return min(n, groupMaxPull)
}

// free is the room in the member's window.
func (m *groupMember) free() int {
	if d := m.g.d; d != nil {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.detached {
			return 0
		}
		return max(d.window-len(d.pending), 0)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.left {
		return 0
	}
	return max(m.g.window-len(m.pending), 0)
}

// pick chooses the member with room next in turn (nil: none has room).
func (b *Bus) pick(gs *groupSub) *groupMember {
	b.groups.mu.Lock()
	defer b.groups.mu.Unlock()
	n := len(gs.members)
	for i := range n {
		m := gs.members[(gs.next+i)%n]
		if m.free() > 0 {
			gs.next = (gs.next + i + 1) % n
			return m
		}
	}
	return nil
}

// deliver hands one envelope of the consumer to a member here.
func (p *groupPuller) deliver(msg *nats.Msg) {
	b := p.b
	if p.ctx.Err() != nil {
		b.ack(msg.Reply, "-NAK", true)
		return
	}
	e, err := broker.UnmarshalEnvelope(msg.Data)
	if err != nil {
		b.log.Warn("natsbus: undecodable envelope in the stream", "group", p.gs.k.group, "err", err)
		b.ack(msg.Reply, "+TERM", false)
		return
	}
	if !broker.Match(p.gs.k.topic, e.Topic) || e.Expired(time.Now()) {
		b.ack(msg.Reply, "+ACK", false)
		return
	}
	m := b.pick(p.gs)
	if m == nil {
		b.ack(msg.Reply, fmt.Sprintf(`-NAK {"delay": %d}`, fullRecheck.Nanoseconds()), false)
		return
	}
	redo := false
	if md, err := msg.Metadata(); err == nil {
		redo = md.NumDelivered > 1
	}
	m.deliver(e, msg.Reply, redo, p.kickNow)
}

// deliver hands e to the member's subscription; its ack or nack goes to
// JetStream's reply subject.
func (m *groupMember) deliver(e *broker.Envelope, reply string, redo bool, kick func()) {
	g, b := m.g, m.g.b
	m.mu.Lock()
	f := m.f
	m.mu.Unlock()
	if g.opts.Allow != nil && !g.opts.Allow(e) {
		b.ack(reply, "+ACK", false)
		return
	}
	qos := min(e.QoS, f.QoS, g.opts.QoS)
	var ids []int
	if f.ID != 0 {
		ids = []int{f.ID}
	}
	proto := &broker.Delivery{Envelope: e, QoS: qos, RetainFlag: e.Retain && f.RetainAsPublished, Redelivered: redo, IDs: ids}
	if g.d == nil {
		g.delivered.Add(1)
		if redo {
			g.redelivered.Add(1)
		}
	}
	if qos == 0 {
		b.ack(reply, "+ACK", false)
		g.h(broker.NewDelivery(m.ctx, proto, broker.DeliveryFuncs{}))
		return
	}
	nackBody := func(delay time.Duration) string {
		if delay > 0 {
			return fmt.Sprintf(`-NAK {"delay": %d}`, delay.Nanoseconds())
		}
		return "-NAK"
	}
	var dl *broker.Delivery
	if d := g.d; d != nil {
		// In the durable's window and pending: its detach hands the
		// delivery back with its own.
		dl = broker.NewDelivery(d.ctx, proto, broker.DeliveryFuncs{
			Ack:  func() { d.settle(dl, reply, "+ACK", false); kick() },
			Nack: func(delay time.Duration) { d.settle(dl, reply, nackBody(delay), true); kick() },
		})
		d.mu.Lock()
		if d.detached {
			d.mu.Unlock()
			b.ack(reply, "-NAK", true)
			return
		}
		d.seq++
		d.pending[dl] = pendingMsg{reply: reply, n: d.seq}
		d.mu.Unlock()
		d.delivered.Add(1)
		if redo {
			d.redelivered.Add(1)
		}
		d.handle(dl)
		return
	}
	settle := func(body string) {
		m.mu.Lock()
		_, out := m.pending[dl]
		delete(m.pending, dl)
		m.mu.Unlock()
		if out {
			b.ack(reply, body, false)
			kick()
		}
	}
	dl = broker.NewDelivery(m.ctx, proto, broker.DeliveryFuncs{
		Ack:  func() { settle("+ACK") },
		Nack: func(delay time.Duration) { settle(nackBody(delay)) },
	})
	m.mu.Lock()
	if m.left {
		m.mu.Unlock()
		b.ack(reply, "-NAK", true)
		return
	}
	m.pending[dl] = reply
	m.mu.Unlock()
	g.h(dl)
}

// ack sends an acknowledgement body to a JetStream reply subject; sync
// waits for JetStream to confirm it.
func (b *Bus) ack(subject, body string, sync bool) {
	if subject == "" {
		return
	}
	if sync && !b.online() {
		sync = false // nobody would answer: a hub cut off does not wait for each
	}
	var err error
	if sync {
		_, err = b.nc.Request(subject, []byte(body), ackTimeout)
	} else {
		err = b.nc.Publish(subject, []byte(body))
	}
	if err != nil {
		b.log.Debug("natsbus: acknowledge", "ack", body, "err", err)
	}
}

// pullReceive hands fn what one pull request of n brings, until it is
// filled, ends (a status from JetStream) or expires.
func pullReceive(ctx context.Context, inbox *nats.Subscription, n int, fn func(*nats.Msg)) error {
	rctx, cancel := context.WithTimeout(ctx, fetchWait+time.Second)
	defer cancel()
	for n > 0 {
		m, err := inbox.NextMsgWithContext(rctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
				return nil
			}
			return err
		}
		if st := m.Header.Get("Status"); st != "" {
			switch st {
			case "100": // heartbeat
				continue
			case "404", "408":
				return nil
			}
			return fmt.Errorf("status %s %s", st, m.Header.Get("Description"))
		}
		n--
		fn(m)
	}
	return nil
}

// online reports whether the bus is connected to NATS: a hub cut off
// skips the groups bucket rather than wait on it (its records of
// non-durable members go stale with its heartbeat).
func (b *Bus) online() bool { return b.nc.Status() == nats.CONNECTED }

// kvCtx bounds one request to the groups bucket.
func (b *Bus) kvCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(b.ctx, b.cfg.PublishTimeout)
}

// putMember writes m's record in the groups bucket.
func (b *Bus) putMember(k groupKey, m *groupMember) {
	durable := m.g.d != nil
	if !durable {
		b.startHeartbeat()
	}
	if !b.online() {
		return
	}
	rec, _ := json.Marshal(memberRecord{Node: b.self, Durable: durable, Group: k.group, Topic: k.topic})
	ctx, cancel := b.kvCtx()
	defer cancel()
	if _, err := b.gkv.Put(ctx, memberKey(m.g.ID(), k), rec); err != nil {
		b.log.Warn("natsbus: record a group member", "group", k.group, "subscriber", m.g.ID(), "err", err)
	}
}

// dropMember deletes subscriber id's record in k.
func (b *Bus) dropMember(k groupKey, id string) {
	if !b.online() {
		return
	}
	ctx, cancel := b.kvCtx()
	defer cancel()
	if err := b.gkv.Delete(ctx, memberKey(id, k)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		b.log.Debug("natsbus: drop a group member", "group", k.group, "subscriber", id, "err", err)
	}
}

// records returns the member records under the key pattern keys.
func (b *Bus) records(ctx context.Context, keys string) (map[string]memberRecord, error) {
	w, err := b.gkv.Watch(ctx, keys, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	defer func() { _ = w.Stop() }()
	out := map[string]memberRecord{}
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case ent, ok := <-w.Updates():
			if !ok || ent == nil {
				return out, nil
			}
			var r memberRecord
			if err := json.Unmarshal(ent.Value(), &r); err == nil {
				out[ent.Key()] = r
			}
		}
	}
}

// groupGone deletes k's consumer when no member is left on any hub: no
// durable member's record (away or not), no record of a non-durable
// member on a live hub. Records of hubs whose heartbeat stopped go.
func (b *Bus) groupGone(k groupKey) {
	if !b.online() {
		return
	}
	ctx, cancel := b.kvCtx()
	defer cancel()
	recs, err := b.records(ctx, "m.*."+k.queueName())
	if err != nil {
		b.log.Debug("natsbus: group members", "group", k.group, "err", err)
		return
	}
	alive := map[string]bool{}
	for key, r := range recs {
		if r.Durable {
			return
		}
		live, seen := alive[r.Node]
		if !seen {
			live = r.Node == b.self && b.hasMembers(k) || r.Node != b.self && b.beating(ctx, r.Node)
			alive[r.Node] = live
		}
		if live {
			return
		}
		_ = b.gkv.Delete(ctx, key)
	}
	if b.hasMembers(k) {
		return // joined again meanwhile
	}
	if err := b.stream.DeleteConsumer(ctx, k.consumerName()); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		b.log.Debug("natsbus: delete a group consumer", "group", k.group, "err", err)
	}
}

// beating reports whether hub node's heartbeat is recent.
func (b *Bus) beating(ctx context.Context, node string) bool {
	ent, err := b.gkv.Get(ctx, "n."+node)
	return err == nil && time.Since(ent.Created()) < heartbeatStale
}

// forgetMember ends durable subscriber id's memberships for good (its
// Unsubscribe: the session ended, or expired).
func (b *Bus) forgetMember(id string) {
	if !b.online() {
		return
	}
	ctx, cancel := b.kvCtx()
	defer cancel()
	recs, err := b.records(ctx, "m."+memberHash(id)+".*")
	if err != nil {
		b.log.Debug("natsbus: memberships", "subscriber", id, "err", err)
		return
	}
	for _, r := range recs {
		k := groupKey{r.Group, r.Topic}
		b.dropMember(k, id)
		if !b.hasMembers(k) {
			b.groupGone(k)
		}
	}
}

// startHeartbeat keeps n.<hub> fresh while the bus runs, for the records
// of its non-durable members.
func (b *Bus) startHeartbeat() {
	b.hbOnce.Do(func() {
		beat := func() {
			if !b.online() {
				return
			}
			ctx, cancel := b.kvCtx()
			defer cancel()
			if _, err := b.gkv.Put(ctx, "n."+b.self, []byte(b.cfg.Node)); err != nil {
				b.log.Debug("natsbus: heartbeat", "err", err)
			}
		}
		beat()
		b.hbOn.Store(true)
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			t := time.NewTicker(heartbeatEvery)
			defer t.Stop()
			for {
				select {
				case <-b.ctx.Done():
					return
				case <-t.C:
					beat()
				}
			}
		}()
	})
}

// stopHeartbeat deletes n.<hub> (Close).
func (b *Bus) stopHeartbeat() {
	if !b.hbOn.Load() || !b.online() {
		return
	}
	ctx, cancel := b.kvCtx()
	defer cancel()
	_ = b.gkv.Delete(ctx, "n."+b.self)
}

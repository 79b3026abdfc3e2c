package coap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
)

// observation is one RFC 7641 registration: a bus subscription whose
// envelopes become notifications to the observer.
type observation struct {
	a      *Adapter
	cs     *connState
	token  message.Token
	key    string
	filter string
	// principal is the observer's, checked (adapters.Auth.CanRead) on
	// every notification.
	principal adapters.Principal
	user      string // what the observation counts against (obsKey)
	con       bool   // registered with CON: QoS 1, CON notifications
	// durableID names the durable subscription of a DTLS device's CON
	// observation: what it misses while away waits in the bus's durable
	// queue until it observes the same filter again ("" otherwise).
	durableID string

	ready     chan struct{} // closed once the registration response is out
	readyOnce sync.Once
	ctx       context.Context
	cancel    context.CancelFunc
	ended     atomic.Bool
	wasReset  atomic.Bool
	seq       atomic.Uint32
	// transfer is the last notification larger than one block. The
	// observer fetches its further blocks with GETs of its own (RFC 7959
	// §2.6, with a fresh token, which go-coap hands to the handler), and
	// a value that is not retained has no other representation to answer
	// them from; it is never the answer to a plain GET.
	transfer atomic.Pointer[broker.Envelope]

	sendMu sync.Mutex // one notification in flight at a time

	mu      sync.Mutex
	sub     broker.Subscription
	subDone chan struct{} // closed once the bus subscription has ended
	mids    [8]int32
	nmids   int
	lastAck time.Time
}

// observeMask keeps Observe sequence numbers to 24 bits (RFC 7641 §4.4).
const observeMask = 1<<24 - 1

func (o *observation) next() uint32 { return o.seq.Add(1) & observeMask }

func (o *observation) markReady() { o.readyOnce.Do(func() { close(o.ready) }) }

// observe serves GET with Observe: 0.
func (a *Adapter) observe(w *responsewriter.ResponseWriter[*udpClient.Conn], req *request) codes.Code {
	filter, err := topicFromSegments(req.path, true)
	if err != nil {
		return a.fail(w, err)
	}
	if err := a.authorize(req, adapters.ActionSubscribe, filter); err != nil {
		return a.fail(w, err)
	}
	cs := req.cs
	token := append(message.Token(nil), req.msg.Token()...)
	cs.mu.Lock()
	old := cs.obs[string(token)]
	full := len(cs.obs) >= a.cfg.MaxObservations && old == nil
	closed := cs.closed
	cs.mu.Unlock()
	if old != nil {
		<-old.end("re-registered", true)
	}
	if full || closed || !a.reserveObservation(obsKey(req)) {
		return a.read(w, req)
	}
	o := &observation{
		a: a, cs: cs, token: token, key: string(token), filter: filter, principal: req.principal, user: obsKey(req),
		con:   req.msg.Type() == message.Confirmable,
		ready: make(chan struct{}), lastAck: time.Now(), subDone: make(chan struct{}),
	}
	o.ctx, o.cancel = context.WithCancel(a.ctx)
	opts := broker.SubscribeOptions{Protocol: broker.ProtoCoAP, Filters: []string{filter}}
	if o.con {
		opts.QoS = 1
		if cs.device != "" {
			o.durableID = "coap/" + cs.device + "/" + filter
			opts.ID, opts.Durable = o.durableID, true
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), reqTimeout)
	defer cancel()
	sub, err := a.subscribe(ctx, opts, o)
	if err != nil {
		o.cancel()
		a.releaseObservation(o.user)
		return a.fail(w, fmt.Errorf("observe %q: %w", filter, err))
	}
	o.mu.Lock()
	o.sub = sub
	o.mu.Unlock()
	cs.mu.Lock()
	if cs.closed {
		cs.mu.Unlock()
		o.ended.Store(true)
		o.cancel()
		a.releaseObservation(o.user)
		a.forgetDurable(o)
		_ = sub.Detach()
		return a.fail(w, fmt.Errorf("observe %q: %w", filter, broker.ErrClosed))
	}
	cs.obs[o.key] = o
	cs.mu.Unlock()
	a.metrics.observers.Inc()
	if !responsewriter.AfterWrite(req.msg.Context(), o.markReady) {
		o.markReady()
	}
	obsOpt := message.Options{}
	buf := make([]byte, 4)
	obsOpt, _, _ = obsOpt.SetUint32(buf, message.Observe, o.next())
	if !broker.IsFilter(filter) {
		// The registration carries the retained value, or nothing yet (a
		// 4.04 would refuse the registration, RFC 7641 §3.2).
		e, err := a.retained(req.principal, filter)
		if err != nil {
			o.end("cannot read the retained value", false)
			return a.fail(w, err)
		}
		if e == nil {
			e = &broker.Envelope{Topic: filter}
		}
		if limit := a.unverifiedLimit(cs, req.msg); limit > 0 && a.registrationSize(req.msg, e, obsOpt) > limit {
			// Too large for an endpoint that has not proved its address:
			// the value follows as the first, confirmable, notification.
			first := e
			a.spawn(func() { _ = o.handle(o.ctx, first) })
			e = &broker.Envelope{Topic: filter}
		}
		return a.respond(w, codes.Content, e, obsOpt)
	}
	// A filter's retained values follow the registration as notifications.
	ret, err := a.cfg.Bus.Retained(ctx, filter)
	if err != nil {
		o.end("cannot read retained values", false)
		return a.fail(w, fmt.Errorf("retained %q: %w", filter, err))
	}
	if len(ret) > 0 {
		a.spawn(func() {
			for _, e := range ret {
				if o.handle(o.ctx, e) != nil || o.ended.Load() {
					return
				}
			}
		})
	}
	return a.respond(w, codes.Content, &broker.Envelope{Topic: filter}, obsOpt)
}

// continuation returns the notification whose further blocks req asks
// for: a GET with Block2 past the first block, from an endpoint observing
// that path, whose last notification was larger than a block. nil when req
// is anything else.
func (a *Adapter) continuation(req *request, path string) *broker.Envelope {
	v, err := req.msg.GetOptionUint32(message.Block2)
	if err != nil {
		return nil
	}
	if _, num, _, err := blockwise.DecodeBlockOption(v); err != nil || num == 0 {
		return nil
	}
	req.cs.mu.Lock()
	defer req.cs.mu.Unlock()
	for _, o := range req.cs.obs {
		if o.filter == path {
			if e := o.transfer.Load(); e != nil {
				return e
			}
		}
	}
	return nil
}

// deregister ends the observation of a token (GET with Observe: 1).
func (a *Adapter) deregister(cs *connState, token message.Token) {
	cs.mu.Lock()
	o := cs.obs[string(token)]
	cs.mu.Unlock()
	if o != nil {
		o.end("deregistered", false)
	}
}

// reset ends the observation that sent the notification with message id
// mid (RFC 7641 §3.6).
func (cs *connState) reset(mid int32) {
	cs.mu.Lock()
	var hit *observation
	for _, o := range cs.obs {
		o.mu.Lock()
		for i := 0; i < min(o.nmids, len(o.mids)); i++ {
			if o.mids[i] == mid {
				hit = o
			}
		}
		o.mu.Unlock()
		if hit != nil {
			break
		}
	}
	cs.mu.Unlock()
	if hit != nil {
		hit.wasReset.Store(true)
		hit.end("reset by observer", false)
	}
}

func (o *observation) remember(mid int32) {
	o.mu.Lock()
	o.mids[o.nmids%len(o.mids)] = mid
	o.nmids++
	o.mu.Unlock()
}

// subscribe attaches the observation's bus subscription. A device that
// observes again from a new DTLS session while its old session lingers
// takes the durable subscription over.
func (a *Adapter) subscribe(ctx context.Context, opts broker.SubscribeOptions, o *observation) (broker.Subscription, error) {
	sub, err := a.cfg.Bus.Subscribe(ctx, opts, o.handle)
	if errors.Is(err, broker.ErrDuplicateSubscriber) && opts.Durable {
		a.mu.Lock()
		old := a.durables[opts.ID]
		a.mu.Unlock()
		if old != nil {
			<-old.end("taken over by a new session", true)
		}
		sub, err = a.cfg.Bus.Subscribe(ctx, opts, o.handle)
	}
	if err != nil {
		return nil, err
	}
	if opts.Durable {
		a.mu.Lock()
		a.durables[opts.ID] = o
		a.mu.Unlock()
	}
	return sub, nil
}

func (a *Adapter) forgetDurable(o *observation) {
	if o.durableID == "" {
		return
	}
	a.mu.Lock()
	if a.durables[o.durableID] == o {
		delete(a.durables, o.durableID)
	}
	a.mu.Unlock()
}

// end deregisters the observation. keep detaches a durable subscription
// (the observer is away: what it misses is kept for it) instead of ending
// it. end never blocks, so it may run in the transport's read loop or in
// the subscription's own handler: the subscription is ended from a
// goroutine of its own, and the returned channel closes when it has.
func (o *observation) end(reason string, keep bool) <-chan struct{} {
	if !o.ended.CompareAndSwap(false, true) {
		return o.subDone
	}
	o.cancel()
	o.cs.mu.Lock()
	if o.cs.obs[o.key] == o {
		delete(o.cs.obs, o.key)
	}
	o.cs.mu.Unlock()
	o.a.forgetDurable(o)
	o.a.metrics.observers.Dec()
	o.a.releaseObservation(o.user)
	o.a.log.Debug("coap: observation ended", "remote", o.cs.remote, "filter", o.filter, "reason", reason)
	o.mu.Lock()
	sub := o.sub
	o.mu.Unlock()
	o.a.spawn(func() {
		defer close(o.subDone)
		if sub == nil {
			return
		}
		var err error
		if keep {
			err = sub.Detach()
		} else {
			err = sub.Unsubscribe()
		}
		if err != nil {
			o.a.log.Debug("coap: end subscription", "err", err)
		}
	})
	return o.subDone
}

// errGone tells the bus that a durable observation could not take an
// envelope, which then stays queued for the observer's return.
var errGone = errors.New("observer gone")

func (o *observation) gone() error {
	if o.durableID != "" {
		return errGone
	}
	return nil
}

// handle is the bus handler of an observation.
func (o *observation) handle(ctx context.Context, e *broker.Envelope) error {
	select {
	case <-o.ready:
	case <-o.ctx.Done():
		return o.gone()
	case <-ctx.Done():
		return ctx.Err()
	}
	if o.ended.Load() {
		return o.gone()
	}
	if e.Retain && len(e.Payload) == 0 {
		return nil // a cleared retained value is no representation
	}
	if err := o.a.canRead(o.principal, e.Topic); errors.Is(err, adapters.ErrForbidden) {
		o.a.metrics.denied.Inc()
		return nil // the observer may not read it (any more): skipped
	} else if err != nil {
		// Undecided (the store failed): a durable observation keeps it
		// queued and the bus tries again; others lose it.
		return fmt.Errorf("coap: read check of %q: %w", e.Topic, err)
	}
	var qos byte
	if o.con {
		qos = min(e.QoS, 1)
	}
	if !o.notify(ctx, e, qos) {
		return o.gone()
	}
	return nil
}

// notify sends one notification: CON when the observer registered with
// CON and the envelope is QoS >= 1, or when the observer has been silent
// for IdleTimeout (RFC 7641 §4.5); NON otherwise. An unacknowledged CON
// notification, or a Reset, ends the observation; notify then reports
// false.
func (o *observation) notify(ctx context.Context, e *broker.Envelope, qos byte) bool {
	o.sendMu.Lock()
	defer o.sendMu.Unlock()
	if o.ended.Load() {
		return false
	}
	a := o.a
	if !a.checkRoutability(ctx, o.cs) {
		// The address never answered: every observation made from it ends.
		o.cs.endAll("unverified endpoint did not answer a ping")
		return false
	}
	o.mu.Lock()
	con := qos >= 1 || time.Since(o.lastAck) > a.cfg.IdleTimeout
	o.mu.Unlock()
	mctx, cancel := context.WithTimeout(ctx, a.maxTransmitWait()+a.cfg.AckTimeout)
	defer cancel()
	stop := context.AfterFunc(o.ctx, cancel)
	defer stop()
	cc := o.cs.cc
	msg := cc.AcquireMessage(mctx)
	defer cc.ReleaseMessage(msg)
	msg.SetCode(codes.Content)
	msg.SetToken(o.token)
	msg.SetObserve(o.next())
	if cf, ok := ContentFormat(e.ContentType); ok {
		msg.SetContentFormat(message.MediaType(cf))
	}
	if broker.IsFilter(o.filter) {
		for _, s := range TopicToSegments(e.Topic) {
			msg.AddOptionString(message.LocationPath, s)
		}
	}
	msg.SetBody(bytes.NewReader(e.Payload))
	if len(e.Payload) > int(a.szx.Size()) {
		o.transfer.Store(e)
	} else {
		o.transfer.Store(nil)
	}
	typ := "non"
	if con {
		msg.SetType(message.Confirmable)
		typ = "con"
	} else {
		msg.SetType(message.NonConfirmable)
	}
	// go-coap's block-wise layer copies the message without its id and
	// takes the connection's next one; notifications of an endpoint are
	// sent one at a time, so that id is known here (a Reset names it).
	o.cs.sendMu.Lock()
	defer o.cs.sendMu.Unlock()
	o.remember(int32(uint16(cc.GetMessageID() + 1)))
	err := cc.WriteMessage(msg)
	a.metrics.notifications.WithLabelValues(typ).Inc()
	switch {
	case o.wasReset.Load():
		o.end("reset by observer", false)
		return false
	case err != nil && con:
		o.end(fmt.Sprintf("confirmable notification failed: %v", err), true)
		return false
	case err != nil:
		a.log.Debug("coap: notification", "remote", o.cs.remote, "err", err)
	case con:
		o.mu.Lock()
		o.lastAck = time.Now()
		o.mu.Unlock()
		a.verify(o.cs, "ack")
	}
	return true
}

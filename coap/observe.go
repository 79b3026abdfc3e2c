package coap

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
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
	con    bool // registered with CON: QoS 1, CON notifications

	ready     chan struct{} // closed once the registration response is out
	readyOnce sync.Once
	ctx       context.Context
	cancel    context.CancelFunc
	ended     atomic.Bool
	wasReset  atomic.Bool
	seq       atomic.Uint32

	sendMu sync.Mutex // one notification in flight at a time

	mu      sync.Mutex
	sub     broker.Subscription
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
		old.end("re-registered")
	}
	if full || closed {
		return a.read(w, req)
	}
	o := &observation{
		a: a, cs: cs, token: token, key: string(token), filter: filter,
		con:   req.msg.Type() == message.Confirmable,
		ready: make(chan struct{}), lastAck: time.Now(),
	}
	o.ctx, o.cancel = context.WithCancel(a.ctx)
	var qos byte
	if o.con {
		qos = 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), reqTimeout)
	defer cancel()
	sub, err := a.cfg.Bus.Subscribe(ctx, broker.SubscribeOptions{Filters: []string{filter}, QoS: qos}, o.handle)
	if err != nil {
		o.cancel()
		return a.fail(w, fmt.Errorf("observe %q: %w", filter, err))
	}
	o.mu.Lock()
	o.sub = sub
	o.mu.Unlock()
	cs.mu.Lock()
	if cs.closed {
		cs.mu.Unlock()
		o.cancel()
		_ = sub.Unsubscribe()
		return a.fail(w, fmt.Errorf("observe %q: %w", filter, broker.ErrClosed))
	}
	cs.obs[o.key] = o
	cs.mu.Unlock()
	a.metrics.observers.Inc()
	if !responsewriter.AfterWrite(req.msg.Context(), o.markReady) {
		o.markReady()
	}
	opts := message.Options{}
	buf := make([]byte, 4)
	opts, _, _ = opts.SetUint32(buf, message.Observe, o.next())
	if !broker.IsFilter(filter) {
		e, err := a.lastValue(filter)
		if err != nil {
			o.end("cannot read last value")
			return a.fail(w, err)
		}
		if e == nil {
			e = &broker.Envelope{Topic: filter}
		}
		return a.respond(w, codes.Content, e, opts)
	}
	// A filter's retained values follow the registration as notifications.
	ret, err := a.cfg.Bus.Retained(ctx, filter)
	if err != nil {
		o.end("cannot read retained values")
		return a.fail(w, fmt.Errorf("retained %q: %w", filter, err))
	}
	if len(ret) > 0 {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			for _, e := range ret {
				if o.handle(o.ctx, e) != nil || o.ended.Load() {
					return
				}
			}
		}()
	}
	return a.respond(w, codes.Content, &broker.Envelope{Topic: filter}, opts)
}

// deregister ends the observation of a token (GET with Observe: 1).
func (a *Adapter) deregister(cs *connState, token message.Token) {
	cs.mu.Lock()
	o := cs.obs[string(token)]
	cs.mu.Unlock()
	if o != nil {
		o.end("deregistered")
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
		hit.end("reset by observer")
	}
}

func (o *observation) remember(mid int32) {
	o.mu.Lock()
	o.mids[o.nmids%len(o.mids)] = mid
	o.nmids++
	o.mu.Unlock()
}

// end deregisters the observation. It never blocks, so it may run in the
// transport's read loop or in the subscription's own handler: the bus
// subscription is ended from a goroutine of its own.
func (o *observation) end(reason string) {
	if !o.ended.CompareAndSwap(false, true) {
		return
	}
	o.cancel()
	o.cs.mu.Lock()
	if o.cs.obs[o.key] == o {
		delete(o.cs.obs, o.key)
	}
	o.cs.mu.Unlock()
	o.a.metrics.observers.Dec()
	o.a.log.Debug("coap: observation ended", "remote", o.cs.remote, "filter", o.filter, "reason", reason)
	o.mu.Lock()
	sub := o.sub
	o.mu.Unlock()
	if sub == nil {
		return
	}
	o.a.wg.Add(1)
	go func() {
		defer o.a.wg.Done()
		if err := sub.Unsubscribe(); err != nil {
			o.a.log.Debug("coap: unsubscribe", "err", err)
		}
	}()
}

// handle is the bus handler of an observation.
func (o *observation) handle(ctx context.Context, e *broker.Envelope) error {
	select {
	case <-o.ready:
	case <-o.ctx.Done():
		return nil
	case <-ctx.Done():
		return nil
	}
	if o.ended.Load() || (e.Retain && len(e.Payload) == 0) {
		return nil // a cleared retained value is no representation
	}
	var qos byte
	if o.con {
		qos = min(e.QoS, 1)
	}
	o.notify(ctx, e, qos)
	return nil
}

// notify sends one notification: CON when the observer registered with
// CON and the envelope is QoS >= 1, or when the observer has been silent
// for IdleTimeout (RFC 7641 §4.5); NON otherwise. An unacknowledged CON
// notification, or a Reset, ends the observation.
func (o *observation) notify(ctx context.Context, e *broker.Envelope, qos byte) {
	o.sendMu.Lock()
	defer o.sendMu.Unlock()
	if o.ended.Load() {
		return
	}
	a := o.a
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
		o.end("reset by observer")
	case err != nil && con:
		o.end(fmt.Sprintf("confirmable notification failed: %v", err))
	case err != nil:
		a.log.Debug("coap: notification", "remote", o.cs.remote, "err", err)
	case con:
		o.mu.Lock()
		o.lastAck = time.Now()
		o.mu.Unlock()
	}
}

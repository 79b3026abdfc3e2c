package rest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/coder/websocket"
	"github.com/gin-gonic/gin"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
)

// subscription is what subscribe parsed from its query.
type subscription struct {
	filters  []string
	qos      byte
	retained bool
}

func (a *Adapter) parseSubscription(c *gin.Context) (subscription, error) {
	var s subscription
	for _, f := range c.QueryArray("filter") {
		if err := a.checkTopic(f, broker.ValidateFilter); err != nil {
			return s, err
		}
		s.filters = append(s.filters, f)
	}
	if len(s.filters) == 0 {
		return s, badRequest("filter: at least one topic filter is required (?filter=a/%%2B/c)")
	}
	var err error
	if s.qos, err = parseQoS(c.Query("qos"), 2); err != nil {
		return s, err
	}
	if s.retained, err = parseBool("retained", c.Query("retained"), true); err != nil {
		return s, err
	}
	return s, nil
}

// subscribe handles GET /api/v1/subscribe?filter=...: a WebSocket when the
// request asks to upgrade, Server-Sent Events otherwise. Retained values
// matching the filters come first (unless retained=false), then every
// envelope published on them, until the client leaves.
func (a *Adapter) subscribe(c *gin.Context) {
	s, err := a.parseSubscription(c)
	if err != nil {
		a.fail(c, err)
		return
	}
	ctx := c.Request.Context()
	p := principal(c)
	for _, f := range s.filters {
		if err := a.cfg.Auth.Authorize(ctx, p, adapters.ActionSubscribe, f); err != nil {
			a.fail(c, err)
			return
		}
	}
	if err := a.cfg.Auth.Limits().CheckSubscriptions(0, len(s.filters)); err != nil {
		a.fail(c, err)
		return
	}
	release, err := a.admitStream(c, p)
	if err != nil {
		a.failLimit(c, err)
		return
	}
	defer release()
	a.streams.Add(1)
	defer a.streams.Done()
	ctx, untrack := a.track(ctx, p)
	defer untrack()
	c.Request = c.Request.WithContext(ctx)
	if isUpgrade(c.Request) {
		a.serveWebSocket(c, s, p)
		return
	}
	a.serveSSE(c, s, p)
}

func isUpgrade(r *http.Request) bool {
	for _, v := range r.Header.Values("Connection") {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), "upgrade") {
				return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
			}
		}
	}
	return false
}

// stream is a bus subscription feeding a byte-bounded queue that one
// connection drains. Its handler never blocks, so Unsubscribe cannot wait
// on a departed client and the bus's queue for it stays empty.
type stream struct {
	sub  broker.Subscription
	pend *pending
	// retained are the filters whose retained values go first (none with
	// retained=false), read a page at a time as they are written.
	retained []string
}

// open subscribes to the bus and collects the retained values to send
// first.
func (a *Adapter) open(ctx context.Context, s subscription) (*stream, error) {
	st := &stream{pend: newPending(a.cfg.StreamMaxPending)}
	sub, err := a.cfg.Bus.Subscribe(ctx, broker.SubscribeOptions{Protocol: broker.ProtoREST,
		ID:      "rest-" + broker.NewID(),
		Filters: s.filters,
		QoS:     s.qos,
	}, func(_ context.Context, e *broker.Envelope) error {
		st.pend.push(e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("rest: subscribe: %w", err)
	}
	st.sub = sub
	if s.retained {
		st.retained = s.filters
	}
	return st, nil
}

func (st *stream) close(a *Adapter) {
	if err := st.sub.Unsubscribe(); err != nil {
		a.log.Warn("rest: unsubscribe stream", "id", st.sub.ID(), "err", err)
	}
}

// DefaultStreamWriteTimeout bounds each write of an SSE or WebSocket
// stream when Config.StreamWriteTimeout is 0: a client that reads nothing
// for that long is cut off (its subscription's in-memory queue is bounded
// meanwhile, and what it drops is counted).
const DefaultStreamWriteTimeout = 10 * time.Second

// serveSSE writes one event per envelope:
//
//	event: message
//	id: <envelope id>
//	data: <EnvelopeJSON>
//
// with a ": heartbeat" comment every Heartbeat.
func (a *Adapter) serveSSE(c *gin.Context, s subscription, p adapters.Principal) {
	ctx := c.Request.Context()
	st, err := a.open(ctx, s)
	if err != nil {
		a.fail(c, err)
		return
	}
	defer st.close(a)
	a.m.stream("sse", 1)
	defer a.m.stream("sse", -1)

	w := c.Writer
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if _, err := w.WriteString(": subscribed\n\n"); err != nil {
		return
	}
	w.Flush()
	// A client that stops reading must not hold the stream (and its
	// subscription) forever: each write has StreamWriteTimeout.
	rc := http.NewResponseController(w)
	deadline := func() { _ = rc.SetWriteDeadline(time.Now().Add(a.cfg.StreamWriteTimeout)) }
	// Past the pending bound a write blocked on the client returns at once.
	st.pend.setOnPass(func() { _ = rc.SetWriteDeadline(time.Now()) })
	var ev []byte // the event's bytes, reused (scratch)
	err = a.pump(ctx, st, s.qos, p, func(data []byte, e *broker.Envelope) error {
		deadline()
		ev = appendSSEEvent(ev[:0], e.ID, data)
		_, err := w.Write(ev)
		ev = scratch(ev)
		if err != nil {
			return err
		}
		return rc.Flush()
	}, func() error {
		deadline()
		if _, err := w.WriteString(": heartbeat\n\n"); err != nil {
			return err
		}
		return rc.Flush()
	})
	if errors.Is(err, errSlowConsumer) {
		a.cutSlow("sse")
		// The final event, if the client reads it within a second.
		_ = rc.SetWriteDeadline(time.Now().Add(time.Second))
		b, _ := json.Marshal(errorBody{Error: a.slowReason()})
		if _, err := fmt.Fprintf(w, "event: error\ndata: %s\n\n", b); err == nil {
			_ = rc.Flush()
		}
		// The connection goes too, rather than waiting for another request
		// the client is not reading the answer to.
		// (gin refuses a hijack once the body is written: go under it).
		var under http.ResponseWriter = w
		if u, ok := under.(interface{ Unwrap() http.ResponseWriter }); ok {
			under = u.Unwrap()
		}
		if conn, _, err := http.NewResponseController(under).Hijack(); err == nil {
			_ = conn.Close()
		}
	}
}

// serveWebSocket sends one JSON text message (EnvelopeJSON) per envelope
// and pings every Heartbeat; messages from the client are not expected and
// end the stream.
func (a *Adapter) serveWebSocket(c *gin.Context, s subscription, p adapters.Principal) {
	ctx := c.Request.Context()
	st, err := a.open(ctx, s)
	if err != nil {
		a.fail(c, err)
		return
	}
	defer st.close(a)
	conn, err := websocket.Accept(c.Writer, c.Request, nil)
	if err != nil {
		a.log.Debug("rest: websocket accept", "err", err)
		return
	}
	defer conn.CloseNow()
	a.m.stream("websocket", 1)
	defer a.m.stream("websocket", -1)
	// CloseRead answers pings and closes, and ends peer when the peer
	// goes. It gets a context of its own: websocket closes the connection
	// at once when a read's context ends, and a revocation or Stop (which
	// end ctx) should close it with a close frame.
	peer := conn.CloseRead(context.WithoutCancel(ctx))
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	unhook := context.AfterFunc(peer, func() { stop(context.Cause(peer)) })
	defer unhook()
	// Past the pending bound a write blocked on the client ends at once
	// (websocket then closes the connection: no close frame can follow).
	wctx, wstop := context.WithCancel(ctx)
	defer wstop()
	st.pend.setOnPass(wstop)
	err = a.pump(ctx, st, s.qos, p, func(data []byte, _ *broker.Envelope) error {
		wctx, cancel := context.WithTimeout(wctx, a.cfg.StreamWriteTimeout)
		defer cancel()
		return conn.Write(wctx, websocket.MessageText, data)
	}, func() error {
		pctx, cancel := context.WithTimeout(ctx, a.cfg.Heartbeat)
		defer cancel()
		return conn.Ping(pctx)
	})
	switch {
	case errors.Is(err, errSlowConsumer):
		a.cutSlow("websocket")
		_ = conn.Close(websocket.StatusTryAgainLater, truncReason(a.slowReason()))
	case errors.Is(context.Cause(ctx), errRevoked):
		_ = conn.Close(websocket.StatusPolicyViolation, "not authorized")
	case err == nil:
		_ = conn.Close(websocket.StatusGoingAway, "hub closing")
	}
}

// pump writes the retained envelopes, then each envelope as it arrives,
// as JSON (EnvelopeJSON) through send, with heartbeat every Heartbeat. Each
// envelope is checked against p (adapters.Auth.CanRead) right before it is
// written, so that a revoked right or a deleted user stops an open stream
// within adapters.ReadCacheTTL. It returns nil when ctx ends and the error
// of a failed write otherwise.
func (a *Adapter) pump(ctx context.Context, st *stream, qos byte, p adapters.Principal, send func([]byte, *broker.Envelope) error, heartbeat func() error) error {
	var buf []byte // the JSON of each envelope, reused (scratch)
	write := func(e *broker.Envelope) error {
		if e.Expired(time.Now()) || !a.readable(ctx, p, e) {
			return nil
		}
		data, err := appendEnvelopeJSON(buf[:0], e, qos, originShown(p, e))
		if err != nil {
			return err
		}
		err = send(data, e)
		buf = scratch(data)
		return err
	}
	seen := make(map[string]bool)
	err := a.eachRetained(ctx, st.retained, func(e *broker.Envelope) error {
		if seen[e.Topic] {
			return nil
		}
		seen[e.Topic] = true
		return write(e)
	})
	if err != nil {
		if isPassed(st.pend) {
			return errSlowConsumer
		}
		return err
	}
	tick := time.NewTicker(a.cfg.Heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			// The request can end as the bound is passed (seen under
			// load: net/http cancels it when its connection fails); the
			// bound decides, so the cut is counted and explained.
			if isPassed(st.pend) {
				return errSlowConsumer
			}
			return nil
		case <-st.pend.passed:
			return errSlowConsumer
		case <-st.pend.ready:
			for e := st.pend.pop(); e != nil; e = st.pend.pop() {
				if err := write(e); err != nil {
					if isPassed(st.pend) {
						return errSlowConsumer
					}
					return err
				}
			}
		case <-tick.C:
			if err := heartbeat(); err != nil {
				return err
			}
		}
	}
}

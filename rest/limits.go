package rest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/hubsmith/hub/adapters"
)

// This file applies the hub's limits (adapters.Limits) to HTTP: every
// connection, keep-alive ones included, counts against the global and
// per-address bounds from its accept (the descriptor budget); an SSE or
// WebSocket stream counts its connection against its user's bound as
// well, and holds at most max_subscriptions_per_client filters; topics
// and filters are at most max_topic_length bytes.

// limitRetryAfter is the Retry-After of a refusal for a limit: another
// connection may well have ended by then.
const limitRetryAfter = "1"

// limitRefusalTimeout bounds the answer to a connection refused at
// accept: reading its request head and writing the 503/429.
const limitRefusalTimeout = time.Second

// connLimitKey is the request context key of the connection's place
// among the limited connections (*adapters.Conn).
type connLimitKey struct{}

// limitListener counts accepted connections (see Adapter.limitListener).
type limitListener struct {
	net.Listener
	a   *Adapter
	tls bool
	wg  sync.WaitGroup // the refusals being answered
}

// limitListener wraps ln so that a connection over the global or
// per-address bound is answered without reaching net/http: its request
// head is read (for at most limitRefusalTimeout; a client that sends its
// response's request first would take an early answer for an unsolicited
// one) and answered 503 (the hub is full) or 429 (this address), with
// Retry-After, then closed. Over TLS, where nothing can be said before a
// handshake the hub will not do for it, it is just closed.
func (a *Adapter) limitListener(ln net.Listener, isTLS bool) net.Listener {
	return &limitListener{Listener: ln, a: a, tls: isTLS}
}

// Accept returns the next connection within the bounds.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		lc, err := l.a.cfg.Auth.Limits().AcquireAddress(c.RemoteAddr().String())
		if err == nil {
			return &limitedConn{Conn: c, lc: lc}, nil
		}
		l.a.log.Debug("rest: connection refused: limit", "remote", c.RemoteAddr().String(), "err", err)
		if l.tls {
			_ = c.Close()
			continue
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			refuseConn(c, err)
		}()
	}
}

// Close stops accepting and waits for the refusals being answered.
func (l *limitListener) Close() error {
	err := l.Listener.Close()
	l.wg.Wait()
	return err
}

// refuseConn answers a connection refused at accept and closes it.
func refuseConn(c net.Conn, err error) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(limitRefusalTimeout))
	// The request head, up to a bound, so that the answer follows it.
	r := bufio.NewReaderSize(io.LimitReader(c, 8<<10), 8<<10)
	for {
		line, rerr := r.ReadSlice('\n')
		if rerr != nil || len(bytes.TrimSpace(line)) == 0 {
			break
		}
	}
	status := http.StatusTooManyRequests
	if errors.Is(err, adapters.ErrServerBusy) {
		status = http.StatusServiceUnavailable
	}
	body, _ := json.Marshal(errorBody{Error: err.Error()})
	_, _ = fmt.Fprintf(c, "HTTP/1.1 %d %s\r\nContent-Type: application/json; charset=utf-8\r\nRetry-After: %s\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s",
		status, http.StatusText(status), limitRetryAfter, len(body), body)
}

// limitedConn gives its place back when closed.
type limitedConn struct {
	net.Conn
	lc   *adapters.Conn
	once sync.Once
}

// Close closes the connection and releases its place.
func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.lc.Release)
	return err
}

// connContext puts the connection's place in its requests' context.
func connContext(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if lc, ok := c.(*limitedConn); ok {
		return context.WithValue(ctx, connLimitKey{}, lc.lc)
	}
	return ctx
}

// admitStream counts a stream's connection against its user's bound (a
// connection has one user: the first stream's). A request that came
// without a counted connection (the handler used without Start) takes
// a place of its own for the stream's life.
func (a *Adapter) admitStream(c *gin.Context, p adapters.Principal) (release func(), err error) {
	name := p.Name
	if p.Anonymous {
		name = ""
	}
	if lc, ok := c.Request.Context().Value(connLimitKey{}).(*adapters.Conn); ok {
		return func() {}, lc.SetUser(name)
	}
	return a.cfg.Auth.Limits().Acquire(c.Request.RemoteAddr, name)
}

// failLimit answers a request refused by a limit: 503 or 429 (statusOf)
// with Retry-After.
func (a *Adapter) failLimit(c *gin.Context, err error) {
	c.Writer.Header().Set("Retry-After", limitRetryAfter)
	a.fail(c, err)
}

// checkTopic is valid (broker.ValidateTopic or ValidateFilter) and then
// the topic length bound.
func (a *Adapter) checkTopic(topic string, valid func(string) error) error {
	if err := valid(topic); err != nil {
		return err
	}
	return a.cfg.Auth.Limits().CheckTopic(topic)
}

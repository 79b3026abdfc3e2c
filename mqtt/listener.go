package mqtt

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/hubsmith/hub/adapters"
)

// boundListener is what the adapter needs of its listeners.
type boundListener interface {
	listeners.Listener
	isClosed() bool
	closeBound()
	health() error
	status() adapters.ListenerStatus
	acceptErrors() uint64
}

// listenerBase is what the TCP and WebSocket listeners share. Unlike
// mochi's own listeners, they report the address they really bound (port
// 0 in tests), bound the time a connection may take to send CONNECT, hand
// every connection's end (and error) to the adapter, never let a client
// that stops reading block a writer (see asyncConn), and Close returns
// only once every connection goroutine they started has ended.
type listenerBase struct {
	id, addr       string
	tls            *tls.Config
	connectTimeout time.Duration
	done           func(err error)  // called when a connection ends
	slow           func(err error)  // called when a client that does not read is cut off
	writeTimeout   time.Duration    // bound of one socket write (0: DefaultWriteTimeout)
	maxPacket      uint32           // Maximum Packet Size, for the DISCONNECT 0x95 (see reasonConn)
	limits         *adapters.Limits // the pending write budget (nil: maxPendingWrite per connection)
	parkAfter      time.Duration    // idle time before a plain TCP client is parked (0: never; see parker)
	log            *slog.Logger
	park           *parker // nil: no client is parked

	ln      net.Listener
	retry   *adapters.RetryListener // under ln (and TLS): retries temporary accept errors
	mu      sync.Mutex
	closed  bool
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup
	serving chan struct{} // closed when Serve returns
	started bool
}

func (l *listenerBase) init(id, addr string, tc *tls.Config, connectTimeout time.Duration, done func(error)) {
	l.id, l.addr, l.tls, l.connectTimeout, l.done = id, addr, tc, connectTimeout, done
	l.writeTimeout = DefaultWriteTimeout
	l.conns = make(map[net.Conn]struct{})
	l.serving = make(chan struct{})
}

// bind listens on the address, with TLS when configured. Temporary accept
// errors (out of descriptors) are retried under the TLS layer (see
// adapters.RetryListener), so neither the accept loop nor the WebSocket
// server ever stops for them.
func (l *listenerBase) bind(log *slog.Logger) error {
	raw, err := net.Listen("tcp", l.addr)
	if err != nil {
		return fmt.Errorf("mqtt: listen %s on %s: %w", l.id, l.addr, err)
	}
	if log == nil {
		log = slog.Default()
	}
	l.log = log
	l.retry = adapters.NewRetryListener(raw, log.With("listener", l.id), nil)
	var ln net.Listener = l.retry
	if l.tls != nil {
		ln = tls.NewListener(ln, l.tls)
	}
	l.ln = ln
	return nil
}

// ID names the listener.
func (l *listenerBase) ID() string { return l.id }

// Address is the bound address.
func (l *listenerBase) Address() string {
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.addr
}

// start marks the listener as serving; false when it is closed or serving
// already.
func (l *listenerBase) start() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || l.started {
		return false
	}
	l.started = true
	return true
}

// track wraps a new connection (see asyncConn) and records it, with
// goroutines more to wait for besides its flusher; false when the
// listener is closed (the connection is then closed too).
func (l *listenerBase) track(conn net.Conn, goroutines int) (net.Conn, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		_ = conn.Close()
		return nil, false
	}
	l.wg.Add(1 + goroutines)
	ac := newAsyncConn(newReasonConn(conn, l.maxPacket), l.writeTimeout, l.slowConn, l.wg.Done)
	if l.limits != nil {
		ac.pend = l.limits.NewPendingConn(ac.cutOff)
		// Refused in OnConnect, with a CONNACK that says why (limits.go).
		ac.limit, ac.limitErr = l.limits.AcquireAddress(conn.RemoteAddr().String())
	}
	if tcp, ok := conn.(*net.TCPConn); ok && l.park != nil {
		ac.park, ac.rc, ac.tcp = l.park, ac.Conn.(*reasonConn), tcp
	}
	conn = ac
	l.conns[conn] = struct{}{}
	return conn, true
}

// parker is the listener's parker (nil: none).
func (l *listenerBase) parker() *parker {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.park
}

// parkable appends the connections a parker may park to buf.
func (l *listenerBase) parkable(buf []*asyncConn) []*asyncConn {
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.conns {
		if ac, ok := c.(*asyncConn); ok && ac.park != nil {
			buf = append(buf, ac)
		}
	}
	return buf
}

// handle runs a tracked connection through mochi until it ends; counted
// says that track counted the goroutine that runs it.
func (l *listenerBase) handle(conn net.Conn, establish listeners.EstablishFn, counted bool) {
	// mochi sets the keepalive deadline once CONNECT is in; until then
	// this one stops a client that connects and says nothing.
	_ = conn.SetDeadline(time.Now().Add(l.connectTimeout))
	err := establish(l.id, conn)
	if err == mochi.ErrParked {
		return // the connection resumes the client, and ends it (parker)
	}
	l.end(conn, err)
	if counted {
		l.wg.Done() // not deferred: a defer record is a part of the frame
	}
}

// end finishes a connection that mochi has let go of with err.
func (l *listenerBase) end(conn net.Conn, err error) {
	l.mu.Lock()
	delete(l.conns, conn)
	l.mu.Unlock()
	_ = conn.Close()
	l.done(err)
}

// endResumed is end for a client that was parked, on the goroutine that
// resumed it, which counts as the one handle ran on.
func (l *listenerBase) endResumed(conn net.Conn, err error) {
	l.end(conn, err)
	l.wg.Done()
}

// slowConn reports a connection closed for not reading (see asyncConn).
func (l *listenerBase) slowConn(c net.Conn, err error) {
	if l.slow != nil {
		l.slow(fmt.Errorf("%s: %w", c.RemoteAddr(), err))
	}
}

// closeBound closes the bound socket.
func (l *listenerBase) closeBound() {
	if l.ln != nil {
		_ = l.ln.Close()
	}
}

// health is nil while the listener accepts connections.
func (l *listenerBase) health() error {
	if l.isClosed() {
		return fmt.Errorf("listener %s closed", l.id)
	}
	if l.retry == nil {
		return fmt.Errorf("listener %s not bound", l.id)
	}
	if err := l.retry.Healthy(); err != nil {
		return fmt.Errorf("%s: %w", l.id, err)
	}
	return nil
}

// status is the listener's state for /healthz.
func (l *listenerBase) status() adapters.ListenerStatus {
	var s adapters.ListenerStatus
	if l.retry != nil {
		s = adapters.StatusOf(l.retry)
	} else {
		s.State, s.Addr = adapters.ListenerClosed, l.addr
	}
	if l.isClosed() {
		s.State = adapters.ListenerClosed
	}
	s.Adapter, s.Name = "mqtt", l.id
	return s
}

// acceptErrors counts the temporary accept errors retried.
func (l *listenerBase) acceptErrors() uint64 {
	if l.retry == nil {
		return 0
	}
	return l.retry.AcceptErrors()
}

func (l *listenerBase) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// shutdown stops accepting (stop, then the bound socket), disconnects the
// listener's clients through closeClients, closes connections still in
// their handshake, and waits for every connection goroutine.
func (l *listenerBase) shutdown(stop func(), closeClients listeners.CloseFn) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	started := l.started
	l.mu.Unlock()
	if stop != nil {
		stop()
	}
	l.closeBound()
	if started {
		<-l.serving
	}
	if l.park != nil {
		l.park.close() // every parked client resumed, to be closed below
	}
	closeClients(l.id)
	l.mu.Lock()
	for c := range l.conns {
		_ = c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}

// listener is a mochi listener over TCP, optionally TLS (see
// listenerBase).
type listener struct {
	listenerBase
}

var _ boundListener = (*listener)(nil)

func newListener(id, addr string, tc *tls.Config, connectTimeout time.Duration, done func(error)) *listener {
	l := &listener{}
	l.init(id, addr, tc, connectTimeout, done)
	return l
}

// Init binds the address.
func (l *listener) Init(log *slog.Logger) error { return l.bind(log) }

// Protocol is "tcp" or "tls".
func (l *listener) Protocol() string {
	if l.tls != nil {
		return "tls"
	}
	return "tcp"
}

// Serve accepts connections until Close. Temporary accept errors never
// reach it (see bind): an error here ends the listener.
func (l *listener) Serve(establish listeners.EstablishFn) {
	if !l.start() {
		return
	}
	defer close(l.serving)
	if l.tls == nil && l.parkAfter > 0 {
		p, err := newParker(l.parkAfter, l.log, l.parkable, l.endResumed)
		if err != nil {
			l.log.Info("mqtt: idle clients are not parked", "listener", l.id, "err", err)
		}
		l.mu.Lock()
		l.park = p
		l.mu.Unlock()
	}
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			return
		}
		conn, ok := l.track(conn, 1) // and the connection's goroutine
		if !ok {
			return
		}
		// handle is the goroutine's function, not called from a closure:
		// a frame less under mochi's read of the next packet, which keeps
		// an idle connection's stack at 4 KiB (see mochi's PATCHES.md).
		go l.handle(conn, establish, true)
	}
}

// Close stops accepting, disconnects the listener's clients, closes
// connections still in their handshake, and waits for every connection
// goroutine.
func (l *listener) Close(closeClients listeners.CloseFn) { l.shutdown(nil, closeClients) }

package mqtt

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// listener is a mochi listener over TCP, optionally TLS. Unlike mochi's
// own, it reports the address it really bound (port 0 in tests), bounds
// the time a connection may take to send CONNECT, hands every connection's
// end (and error) to the adapter, never lets a client that stops reading
// block a writer (see asyncConn), and Close returns only once every
// connection goroutine it started has ended.
type listener struct {
	id, addr       string
	tls            *tls.Config
	connectTimeout time.Duration
	done           func(err error) // called when a connection ends
	slow           func(err error) // called when a client that does not read is cut off
	writeTimeout   time.Duration   // bound of one socket write (0: DefaultWriteTimeout)

	ln      net.Listener
	mu      sync.Mutex
	closed  bool
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup
	serving chan struct{} // closed when Serve returns
	started bool
}

// boundListener is what the adapter needs of its listeners.
type boundListener interface {
	listeners.Listener
	isClosed() bool
	closeBound()
}

var _ boundListener = (*listener)(nil)

func newListener(id, addr string, tc *tls.Config, connectTimeout time.Duration, done func(error)) *listener {
	return &listener{
		id: id, addr: addr, tls: tc, connectTimeout: connectTimeout, done: done, writeTimeout: DefaultWriteTimeout,
		conns:   make(map[net.Conn]struct{}),
		serving: make(chan struct{}),
	}
}

// Init binds the address.
func (l *listener) Init(*slog.Logger) error {
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		return fmt.Errorf("mqtt: listen %s on %s: %w", l.id, l.addr, err)
	}
	if l.tls != nil {
		ln = tls.NewListener(ln, l.tls)
	}
	l.ln = ln
	return nil
}

// ID names the listener.
func (l *listener) ID() string { return l.id }

// Address is the bound address.
func (l *listener) Address() string {
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.addr
}

// Protocol is "tcp" or "tls".
func (l *listener) Protocol() string {
	if l.tls != nil {
		return "tls"
	}
	return "tcp"
}

// Serve accepts connections until Close.
func (l *listener) Serve(establish listeners.EstablishFn) {
	l.mu.Lock()
	if l.closed || l.started {
		l.mu.Unlock()
		return
	}
	l.started = true
	l.mu.Unlock()
	defer close(l.serving)
	var backoff time.Duration
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !l.isClosed() {
				// Out of file descriptors and the like: wait, as net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return
		}
		backoff = 0
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			_ = conn.Close()
			return
		}
		l.wg.Add(2) // the connection's goroutine and its flusher
		conn = newAsyncConn(conn, l.writeTimeout, l.slowConn, l.wg.Done)
		l.conns[conn] = struct{}{}
		l.mu.Unlock()
		// mochi sets the keepalive deadline once CONNECT is in; until
		// then this one stops a client that connects and says nothing.
		_ = conn.SetDeadline(time.Now().Add(l.connectTimeout))
		go func() {
			defer l.wg.Done()
			err := establish(l.id, conn)
			l.mu.Lock()
			delete(l.conns, conn)
			l.mu.Unlock()
			_ = conn.Close()
			l.done(err)
		}()
	}
}

// slowConn reports a connection closed for not reading (see asyncConn).
func (l *listener) slowConn(c net.Conn, err error) {
	if l.slow != nil {
		l.slow(fmt.Errorf("%s: %w", c.RemoteAddr(), err))
	}
}

// closeBound closes the bound socket.
func (l *listener) closeBound() {
	if l.ln != nil {
		_ = l.ln.Close()
	}
}

func (l *listener) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// Close stops accepting, disconnects the listener's clients through
// closeClients, closes connections still in their handshake, and waits for
// every connection goroutine.
func (l *listener) Close(closeClients listeners.CloseFn) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	started := l.started
	l.mu.Unlock()
	if l.ln != nil {
		_ = l.ln.Close()
	}
	if started {
		<-l.serving
	}
	closeClients(l.id)
	l.mu.Lock()
	for c := range l.conns {
		_ = c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}

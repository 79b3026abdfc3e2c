package mqtt

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// wsListener serves MQTT over WebSocket (subprotocol "mqtt", binary
// messages, any path) on its own HTTP server. Like listener, it reports
// its bound address, bounds the wait for CONNECT, and Close waits for every
// connection it started.
type wsListener struct {
	id, addr       string
	tls            *tls.Config
	connectTimeout time.Duration
	done           func(error)
	slow           func(error)   // called when a client that does not read is cut off
	writeTimeout   time.Duration // bound of one write (see asyncConn)

	ln        net.Listener
	srv       *http.Server
	establish listeners.EstablishFn
	mu        sync.Mutex
	closed    bool
	conns     map[net.Conn]struct{}
	wg        sync.WaitGroup
	serving   chan struct{}
	started   bool
}

var _ boundListener = (*wsListener)(nil)

func newWSListener(id, addr string, tc *tls.Config, connectTimeout time.Duration, done func(error)) *wsListener {
	return &wsListener{id: id, addr: addr, tls: tc, connectTimeout: connectTimeout, done: done,
		writeTimeout: DefaultWriteTimeout,
		conns:        make(map[net.Conn]struct{}), serving: make(chan struct{})}
}

// Init binds the address.
func (l *wsListener) Init(*slog.Logger) error {
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		return fmt.Errorf("mqtt: listen %s on %s: %w", l.id, l.addr, err)
	}
	if l.tls != nil {
		ln = tls.NewListener(ln, l.tls)
	}
	l.ln = ln
	l.srv = &http.Server{Handler: l, ReadHeaderTimeout: l.connectTimeout}
	return nil
}

// ID names the listener.
func (l *wsListener) ID() string { return l.id }

// Address is the bound address.
func (l *wsListener) Address() string {
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.addr
}

// Protocol is "ws" or "wss".
func (l *wsListener) Protocol() string {
	if l.tls != nil {
		return "wss"
	}
	return "ws"
}

// Serve runs the HTTP server until Close.
func (l *wsListener) Serve(establish listeners.EstablishFn) {
	l.mu.Lock()
	if l.closed || l.started {
		l.mu.Unlock()
		return
	}
	l.started, l.establish = true, establish
	l.mu.Unlock()
	defer close(l.serving)
	if err := l.srv.Serve(l.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		l.done(fmt.Errorf("mqtt: %s: %w", l.id, err))
	}
}

// ServeHTTP upgrades a request and hands the connection to mochi.
func (l *wsListener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	l.wg.Add(1)
	establish := l.establish
	l.mu.Unlock()
	defer l.wg.Done()
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols: []string{"mqtt"},
		// Clients authenticate in CONNECT, never with cookies, so a page
		// of any origin may connect (as with Mosquitto).
		InsecureSkipVerify: true,
	})
	if err != nil {
		return // Accept has answered the request
	}
	var conn net.Conn = websocket.NetConn(r.Context(), c, websocket.MessageBinary)
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		_ = conn.Close()
		return
	}
	l.wg.Add(1) // the flusher
	conn = newAsyncConn(conn, l.writeTimeout, l.slowConn, l.wg.Done)
	l.conns[conn] = struct{}{}
	l.mu.Unlock()
	_ = conn.SetDeadline(time.Now().Add(l.connectTimeout))
	err = establish(l.id, conn)
	l.mu.Lock()
	delete(l.conns, conn)
	l.mu.Unlock()
	_ = conn.Close()
	l.done(err)
}

// slowConn reports a connection closed for not reading (see asyncConn).
func (l *wsListener) slowConn(c net.Conn, err error) {
	if l.slow != nil {
		l.slow(fmt.Errorf("%s: %w", c.RemoteAddr(), err))
	}
}

// closeBound closes the bound socket.
func (l *wsListener) closeBound() {
	if l.ln != nil {
		_ = l.ln.Close()
	}
}

func (l *wsListener) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// Close stops the HTTP server, disconnects the listener's clients, closes
// connections still in their handshake and waits for every one.
func (l *wsListener) Close(closeClients listeners.CloseFn) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	started := l.started
	l.mu.Unlock()
	if l.srv != nil {
		_ = l.srv.Close()
	}
	l.closeBound()
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

package mqtt

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/coder/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// wsListener serves MQTT over WebSocket (subprotocol "mqtt", binary
// messages, any path) on its own HTTP server (see listenerBase).
type wsListener struct {
	listenerBase
	srv       *http.Server
	establish listeners.EstablishFn
}

var _ boundListener = (*wsListener)(nil)

func newWSListener(id, addr string, tc *tls.Config, connectTimeout time.Duration, done func(error)) *wsListener {
	l := &wsListener{}
	l.init(id, addr, tc, connectTimeout, done)
	return l
}

// Init binds the address.
func (l *wsListener) Init(log *slog.Logger) error {
	if err := l.bind(log); err != nil {
		return err
	}
	l.srv = &http.Server{Handler: l, ReadHeaderTimeout: l.connectTimeout}
	return nil
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
	l.establish = establish
	l.mu.Unlock()
	if !l.start() {
		return
	}
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
	conn, ok := l.track(websocket.NetConn(r.Context(), c, websocket.MessageBinary), 0)
	if !ok {
		return
	}
	l.handle(conn, establish, false)
	// The WebSocket's writes end with this request's context: wait until
	// what mochi wrote last (a refusing CONNACK, a DISCONNECT) is out.
	if ac, ok := conn.(*asyncConn); ok {
		select {
		case <-ac.done:
		case <-time.After(closeFlushTimeout + time.Second):
		}
	}
}

// Close stops the HTTP server, disconnects the listener's clients, closes
// connections still in their handshake and waits for every one.
func (l *wsListener) Close(closeClients listeners.CloseFn) {
	l.shutdown(func() {
		if l.srv != nil {
			_ = l.srv.Close()
		}
	}, closeClients)
}

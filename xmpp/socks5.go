package xmpp

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hubsmith/hub/adapters"
)

// XEP-0065 SOCKS5 Bytestreams: the hub's own proxy (a "mediated" streamhost,
// as Openfire runs one) at proxy.{domain} on a TCP listener of its own. Both
// parties of a transfer connect to it with a SOCKS5 CONNECT whose
// destination is the domain name SHA1(SID + requester JID + target JID) in
// hex, port 0; the requester then asks proxy.{domain} over XMPP to activate
// the pair, and the proxy relays bytes between the two connections.
const nsBytestreams = "http://jabber.org/protocol/bytestreams"

// Bounds of the proxy.
const (
	// DefaultProxyAddr is where the proxy listens unless configured.
	DefaultProxyAddr = "127.0.0.1:7777"
	// proxyHandshakeTimeout bounds the SOCKS5 greeting and request.
	proxyHandshakeTimeout = 10 * time.Second
	// proxyActivateTimeout is how long a connection waits to be paired
	// and activated.
	proxyActivateTimeout = 60 * time.Second
	// proxyIdleTimeout ends an activated relay that moved no byte for so
	// long.
	proxyIdleTimeout = 60 * time.Second
	// proxyMaxPending bounds the connections waiting for activation.
	proxyMaxPending = 256
	// proxyMaxRelays bounds the activated relays at a time.
	proxyMaxRelays = 64
)

// errSOCKS5 is a SOCKS5 handshake the proxy refuses.
var errSOCKS5 = errors.New("xmpp: socks5")

// proxyConn is one connection to the proxy waiting for its pair.
type proxyConn struct {
	c     net.Conn
	timer *time.Timer // closes c unless activated in time
}

// proxy is the XEP-0065 streamhost. Its listener and every relay end with
// stop.
type proxy struct {
	log      *slog.Logger
	ln       *adapters.RetryListener
	host     string // advertised host
	port     int
	maxBytes int64 // per relay and direction; 0: no bound

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	pending map[string][]*proxyConn // destination hash → connections
	npend   int
	relays  int
	conns   map[net.Conn]struct{}
}

// socks5Addr is the destination address both parties of a bytestream ask
// the proxy for: hex SHA1(SID + requester JID + target JID) (XEP-0065 §5.3.2).
func socks5Addr(sid, requester, target string) string {
	h := sha1.Sum([]byte(sid + requester + target))
	return hex.EncodeToString(h[:])
}

// newProxy listens on addr; host is the address advertised in streamhost
// answers ("" for the listener's own, or fallback when that is
// unspecified).
func newProxy(ctx context.Context, addr, host, fallback string, maxBytes int64, log *slog.Logger) (*proxy, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("xmpp: proxy listen %s: %w", addr, err)
	}
	lhost, lport, _ := net.SplitHostPort(ln.Addr().String())
	port, _ := strconv.Atoi(lport)
	if host == "" {
		host = lhost
		if ip := net.ParseIP(lhost); ip != nil && ip.IsUnspecified() {
			host = fallback
		}
	}
	// Temporary accept errors (out of descriptors) are retried, never the
	// end of the proxy.
	p := &proxy{log: log, ln: adapters.NewRetryListener(ln, log, nil), host: host, port: port, maxBytes: maxBytes,
		pending: map[string][]*proxyConn{}, conns: map[net.Conn]struct{}{}}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// addr is the bound listener address.
func (p *proxy) addr() string { return p.ln.Addr().String() }

// stop closes the listener and every connection and waits for the relays.
func (p *proxy) stop() {
	p.cancel()
	_ = p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *proxy) track(c net.Conn, on bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		if p.ctx.Err() != nil {
			return false
		}
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
	return true
}

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if p.ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				p.log.Error("xmpp: proxy accept", "err", err)
			}
			return
		}
		if !p.track(c, true) {
			_ = c.Close()
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			if err := p.serve(c); err != nil {
				p.log.Debug("xmpp: proxy connection", "remote", c.RemoteAddr().String(), "err", err)
				_ = c.Close()
				p.track(c, false)
			}
		}()
	}
}

// serve runs the SOCKS5 handshake of c and parks it until activation; a
// nil return means the connection now belongs to the pending table.
func (p *proxy) serve(c net.Conn) error {
	_ = c.SetDeadline(time.Now().Add(proxyHandshakeTimeout))
	_, err := socks5Handshake(c, func(dst string) error {
		_ = c.SetReadDeadline(time.Time{}) // the relay sets its own
		return p.park(dst, c)
	})
	return err
}

// park adds c to the connections waiting under hash; it is closed if not
// activated in time. A third connection for the same hash is refused.
func (p *proxy) park(hash string, c net.Conn) error {
	pc := &proxyConn{c: c}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.npend >= proxyMaxPending {
		return fmt.Errorf("xmpp: proxy: %d connections already wait for activation", p.npend)
	}
	if len(p.pending[hash]) >= 2 {
		return fmt.Errorf("xmpp: proxy: destination %s already has both parties", hash)
	}
	p.pending[hash] = append(p.pending[hash], pc)
	p.npend++
	pc.timer = time.AfterFunc(proxyActivateTimeout, func() {
		if p.unpark(hash, pc) {
			_ = c.Close()
			p.track(c, false)
		}
	})
	return nil
}

// unpark removes pc from the pending table; false if it was no longer there.
func (p *proxy) unpark(hash string, pc *proxyConn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.pending[hash]
	for i, x := range list {
		if x == pc {
			p.pending[hash] = append(list[:i:i], list[i+1:]...)
			if len(p.pending[hash]) == 0 {
				delete(p.pending, hash)
			}
			p.npend--
			return true
		}
	}
	return false
}

// localTarget registers the hub itself as the target of the bytestream
// under hash, as if it had connected to the proxy: the returned connection
// carries what the requester sends once activated.
func (p *proxy) localTarget(hash string) (net.Conn, error) {
	mine, theirs := net.Pipe()
	if !p.track(theirs, true) {
		return nil, errors.New("xmpp: proxy stopped")
	}
	if err := p.park(hash, theirs); err != nil {
		_ = theirs.Close()
		_ = mine.Close()
		p.track(theirs, false)
		return nil, err
	}
	return mine, nil
}

// Errors of activate, mapped to stanza errors by the proxy's iq handler.
var (
	errNoPair       = errors.New("xmpp: proxy: the two parties are not both connected")
	errProxyTooBusy = errors.New("xmpp: proxy: too many relays")
)

// activate starts relaying between the two connections waiting under hash.
func (p *proxy) activate(hash string) error {
	p.mu.Lock()
	list := p.pending[hash]
	if len(list) != 2 {
		p.mu.Unlock()
		return errNoPair
	}
	if p.relays >= proxyMaxRelays {
		p.mu.Unlock()
		return errProxyTooBusy
	}
	delete(p.pending, hash)
	p.npend -= 2
	p.relays++
	p.wg.Add(1)
	p.mu.Unlock()
	for _, pc := range list {
		pc.timer.Stop()
	}
	go func() {
		defer p.wg.Done()
		defer func() {
			p.mu.Lock()
			p.relays--
			p.mu.Unlock()
		}()
		p.relay(list[0].c, list[1].c)
	}()
	return nil
}

// relay copies between a and b in both directions until either side ends,
// a side is idle for proxyIdleTimeout, or maxBytes went one way.
func (p *proxy) relay(a, b net.Conn) {
	var wg sync.WaitGroup
	done := make(chan struct{})
	var once sync.Once
	end := func() { once.Do(func() { close(done) }) }
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		defer end()
		buf := make([]byte, 32<<10)
		var n int64
		for {
			_ = src.SetReadDeadline(time.Now().Add(proxyIdleTimeout))
			k, err := src.Read(buf)
			if k > 0 {
				n += int64(k)
				if p.maxBytes > 0 && n > p.maxBytes {
					p.log.Info("xmpp: proxy relay over its byte bound", "bytes", n)
					return
				}
				_ = dst.SetWriteDeadline(time.Now().Add(proxyIdleTimeout))
				if _, werr := dst.Write(buf[:k]); werr != nil {
					return
				}
			}
			if err != nil {
				// A half close passes on: the other side sees the end
				// of the file.
				if cw, ok := dst.(interface{ CloseWrite() error }); ok && errors.Is(err, io.EOF) {
					_ = cw.CloseWrite()
					return
				}
				_ = dst.Close()
				return
			}
		}
	}
	wg.Add(2)
	go cp(a, b)
	go cp(b, a)
	select {
	case <-done:
	case <-p.ctx.Done():
	}
	// One direction ended: the other gets a moment to drain what it has
	// in flight (the sender half-closed after its last byte), then both
	// close.
	t := time.NewTimer(proxyIdleTimeout)
	defer t.Stop()
	wait := make(chan struct{})
	go func() { wg.Wait(); close(wait) }()
	select {
	case <-wait:
	case <-t.C:
	case <-p.ctx.Done():
	}
	_ = a.Close()
	_ = b.Close()
	<-wait
	p.track(a, false)
	p.track(b, false)
}

// socks5Handshake runs the server side of a SOCKS5 (RFC 1928) greeting and
// CONNECT request as XEP-0065 uses them: no authentication, a domain-name
// destination that is a 40-digit hex SHA1, and answers success with the
// same address once admit took the destination (an admit error answers
// "connection not allowed"). It returns the destination.
func socks5Handshake(rw io.ReadWriter, admit func(dst string) error) (string, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(rw, hdr[:]); err != nil {
		return "", fmt.Errorf("%w: greeting: %w", errSOCKS5, err)
	}
	if hdr[0] != 5 {
		return "", fmt.Errorf("%w: version %d, want 5", errSOCKS5, hdr[0])
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(rw, methods); err != nil {
		return "", fmt.Errorf("%w: greeting methods: %w", errSOCKS5, err)
	}
	noAuth := false
	for _, m := range methods {
		noAuth = noAuth || m == 0
	}
	if !noAuth {
		_, _ = rw.Write([]byte{5, 0xff})
		return "", fmt.Errorf("%w: the client offers no 'no authentication' method", errSOCKS5)
	}
	if _, err := rw.Write([]byte{5, 0}); err != nil {
		return "", fmt.Errorf("%w: %w", errSOCKS5, err)
	}
	var req [5]byte // VER CMD RSV ATYP LEN
	if _, err := io.ReadFull(rw, req[:]); err != nil {
		return "", fmt.Errorf("%w: request: %w", errSOCKS5, err)
	}
	fail := func(code byte, msg string) (string, error) {
		_, _ = rw.Write([]byte{5, code, 0, 1, 0, 0, 0, 0, 0, 0})
		return "", fmt.Errorf("%w: %s", errSOCKS5, msg)
	}
	switch {
	case req[0] != 5:
		return fail(1, fmt.Sprintf("request version %d, want 5", req[0]))
	case req[1] != 1:
		return fail(7, fmt.Sprintf("command %d, want CONNECT (1)", req[1]))
	case req[3] != 3:
		return fail(8, fmt.Sprintf("address type %d, want a domain name (3)", req[3]))
	case req[4] != 40:
		return fail(4, fmt.Sprintf("destination of %d bytes, want a 40-digit SHA1", req[4]))
	}
	rest := make([]byte, int(req[4])+2)
	if _, err := io.ReadFull(rw, rest); err != nil {
		return "", fmt.Errorf("%w: request address: %w", errSOCKS5, err)
	}
	dst := string(rest[:40])
	for i := 0; i < len(dst); i++ {
		if c := dst[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return fail(4, "destination is not a lower-case hex SHA1")
		}
	}
	if err := admit(dst); err != nil {
		_, _ = fail(2, "not admitted")
		return "", err
	}
	reply := append([]byte{5, 0, 0, 3, 40}, rest...)
	if _, err := rw.Write(reply); err != nil {
		return "", fmt.Errorf("%w: %w", errSOCKS5, err)
	}
	return dst, nil
}

// socks5Connect is the client side of the XEP-0065 handshake: it asks the
// streamhost on c for destination dst.
func socks5Connect(c io.ReadWriter, dst string) error {
	if _, err := c.Write([]byte{5, 1, 0}); err != nil {
		return fmt.Errorf("%w: %w", errSOCKS5, err)
	}
	var m [2]byte
	if _, err := io.ReadFull(c, m[:]); err != nil {
		return fmt.Errorf("%w: method: %w", errSOCKS5, err)
	}
	if m[0] != 5 || m[1] != 0 {
		return fmt.Errorf("%w: the streamhost chose method %d", errSOCKS5, m[1])
	}
	req := append([]byte{5, 1, 0, 3, byte(len(dst))}, dst...)
	req = append(req, 0, 0)
	if _, err := c.Write(req); err != nil {
		return fmt.Errorf("%w: %w", errSOCKS5, err)
	}
	var rep [5]byte
	if _, err := io.ReadFull(c, rep[:]); err != nil {
		return fmt.Errorf("%w: reply: %w", errSOCKS5, err)
	}
	if rep[1] != 0 {
		return fmt.Errorf("%w: the streamhost answered %d", errSOCKS5, rep[1])
	}
	n := 0
	switch rep[3] {
	case 1:
		n = 4 - 1 + 2
	case 4:
		n = 16 - 1 + 2
	case 3:
		n = int(rep[4]) + 2
	default:
		return fmt.Errorf("%w: reply address type %d", errSOCKS5, rep[3])
	}
	if _, err := io.ReadFull(c, make([]byte, n)); err != nil {
		return fmt.Errorf("%w: reply address: %w", errSOCKS5, err)
	}
	return nil
}

func (a *Adapter) proxyDomain() string { return "proxy." + a.cfg.Domain }

// handleProxy answers iqs to proxy.{domain}: disco, the streamhost query
// (XEP-0065 §6.3.3: its jid, host and port) and activation (§6.3.5) of a
// bytestream the sender requested.
func (a *Adapter) handleProxy(p peer, iq *element) {
	typ := iq.AttrValue("type")
	if iq.Name.Local != "iq" || typ == "result" || typ == "error" {
		return
	}
	q := iq.Child(nsBytestreams, "query")
	if q == nil {
		a.handleServiceIQ(p, iq, "proxy")
		return
	}
	px := a.proxy
	switch {
	case typ == "get":
		_ = p.send(resultOf(iq).Add(newElement(nsBytestreams, "query").Add(
			newElement(nsBytestreams, "streamhost", "jid", a.proxyDomain(), "host", px.host, "port", strconv.Itoa(px.port)))))
	case typ == "set" && q.Child(nsBytestreams, "activate") != nil:
		sid, target := q.AttrValue("sid"), q.childText(nsBytestreams, "activate")
		if sid == "" || target == "" {
			_ = p.send(errorReply(iq, "modify", "bad-request"))
			return
		}
		switch err := px.activate(socks5Addr(sid, p.fullJID(), target)); {
		case err == nil:
			_ = p.send(resultOf(iq))
		case errors.Is(err, errNoPair):
			_ = p.send(errorReply(iq, "cancel", "item-not-found"))
		default:
			_ = p.send(errorReply(iq, "wait", "resource-constraint"))
		}
	default:
		_ = p.send(errorReply(iq, "modify", "bad-request"))
	}
}

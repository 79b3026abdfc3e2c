package xmpp

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
)

// Timeouts of a connection.
const (
	negotiationTimeout = 30 * time.Second
	idleTimeout        = 10 * time.Minute
	writeTimeout       = 10 * time.Second
	maxAuthAttempts    = 3
)

// streamConn is one connection during stream negotiation.
type streamConn struct {
	a      *Adapter
	raw    net.Conn
	conn   net.Conn // raw, or TLS over it
	secure bool
	r      *stanzaReader
	id     string
	// after SASL
	user string
	role string
	anon bool
	// limit is the connection's place among the limited connections, or
	// limitErr why it has none (limits.go).
	limit    *adapters.Conn
	limitErr error
}

func randomID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (a *Adapter) serveConn(raw net.Conn) {
	c := &streamConn{a: a, raw: raw, conn: raw}
	c.limit, c.limitErr = a.cfg.Auth.Limits().AcquireAddress(raw.RemoteAddr().String())
	defer c.limit.Release()
	s, r, err := c.negotiate()
	if err != nil {
		c.fail(err)
		return
	}
	if s == nil { // the client closed the stream during negotiation
		return
	}
	s.serve(r)
}

// fail ends a stream with a stream error (or just closes it).
func (c *streamConn) fail(err error) {
	var se *streamError
	if errors.As(err, &se) {
		c.a.metrics.streamErrors.WithLabelValues(se.Condition).Inc()
		_ = c.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
		_, _ = c.conn.Write(append(se.bytes(), "</stream:stream>"...))
		c.a.log.Debug("xmpp: stream error", "remote", c.raw.RemoteAddr().String(), "err", err)
	} else if !errors.Is(err, io.EOF) && !errors.Is(err, errStreamEnd) && !errors.Is(err, net.ErrClosed) {
		c.a.log.Debug("xmpp: connection failed", "remote", c.raw.RemoteAddr().String(), "err", err)
	}
	_ = c.conn.Close()
}

func (c *streamConn) write(s string) error {
	_ = c.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err := io.WriteString(c.conn, s)
	return err
}

func (c *streamConn) writeEl(el *element) error { return c.write(string(el.Bytes(nsClient))) }

// openStream reads the client's stream header and answers with ours. A
// stream error found in the header is sent after our header, as RFC 6120
// 4.9.1.1 asks.
func (c *streamConn) openStream() error {
	c.r = newStanzaReader(c.conn, c.a.cfg.MaxStanza, c.a.cfg.MaxDepth,
		newRateLimiter(positive(c.a.cfg.RateStanzas), positive(c.a.cfg.RateBytes)))
	_ = c.conn.SetReadDeadline(time.Now().Add(negotiationTimeout))
	hdr, err := c.r.header()
	c.id = randomID()
	head := "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0' xml:lang='en' id='" + c.id + "' from='" + xmlAttrEscape(c.a.cfg.Domain) + "'>"
	if werr := c.write(head); werr != nil {
		return werr
	}
	if err != nil {
		return err
	}
	var to, ns, version string
	for _, at := range hdr.Attr {
		switch {
		case at.Name.Space == "" && at.Name.Local == "to":
			to = at.Value
		case at.Name.Space == "" && at.Name.Local == "xmlns":
			ns = at.Value
		case at.Name.Space == "" && at.Name.Local == "version":
			version = at.Value
		}
	}
	switch {
	case ns != nsClient:
		return &streamError{Condition: "invalid-namespace", Text: "the stream's namespace must be jabber:client"}
	case !strings.EqualFold(to, c.a.cfg.Domain):
		return &streamError{Condition: "host-unknown", Text: "this server serves " + c.a.cfg.Domain}
	case !strings.HasPrefix(version, "1."):
		return &streamError{Condition: "unsupported-version", Text: "version 1.0 is required"}
	}
	return nil
}

func positive(f float64) float64 { return max(f, 0) }

func xmlAttrEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '\'':
			b.WriteString("&apos;")
		case '&':
			b.WriteString("&amp;")
		case '<':
			b.WriteString("&lt;")
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// mechanisms returns the SASL mechanisms offered on this stream.
func (c *streamConn) mechanisms() []string {
	m := []string{"SCRAM-SHA-256", "SCRAM-SHA-1"}
	if c.secure {
		m = append(m, "PLAIN")
	}
	if c.a.anonymous.Allowed() {
		m = append(m, "ANONYMOUS")
	}
	return m
}

// negotiate runs TLS, SASL and resource binding (or XEP-0198 resumption)
// and returns the bound session with the reader of its stream.
func (c *streamConn) negotiate() (*session, *stanzaReader, error) {
	tlsRequired := !adapters.IsLoopback(c.a.cfg.Addr)
	for {
		if err := c.openStream(); err != nil {
			return nil, nil, err
		}
		if err := c.checkLimits(); err != nil {
			return nil, nil, err
		}
		feats := newElement(nsStream, "features")
		switch {
		case c.user == "" && !c.anon:
			if !c.secure {
				st := newElement(nsTLS, "starttls")
				if tlsRequired {
					st.Add(newElement(nsTLS, "required"))
				}
				feats.Add(st)
			}
			if c.secure || !tlsRequired {
				mechs := newElement(nsSASL, "mechanisms")
				for _, m := range c.mechanisms() {
					mechs.Add(newElement(nsSASL, "mechanism").AddText(m))
				}
				feats.Add(mechs)
			}
		default:
			feats.Add(newElement(nsBind, "bind"),
				newElement(nsSession, "session").Add(newElement(nsSession, "optional")),
				newElement(nsSM, "sm"))
		}
		if err := c.write(featuresString(feats)); err != nil {
			return nil, nil, err
		}
		restart, s, err := c.step()
		if err != nil || s != nil {
			return s, c.r, err
		}
		if !restart {
			return nil, nil, nil
		}
	}
}

// featuresString writes <stream:features> with the stream prefix.
func featuresString(f *element) string {
	var b strings.Builder
	b.WriteString("<stream:features>")
	for _, e := range f.Elements() {
		b.WriteString(e.String())
	}
	b.WriteString("</stream:features>")
	return b.String()
}

// step handles the client's answer to the stream features: it returns
// restart=true when a new stream must follow (after TLS or SASL), or the
// session once bound.
func (c *streamConn) step() (restart bool, s *session, err error) {
	attempts := 0
	for {
		el, err := c.r.next()
		if errors.Is(err, errStreamEnd) {
			_ = c.write("</stream:stream>")
			_ = c.conn.Close()
			return false, nil, nil
		}
		if err != nil {
			return false, nil, err
		}
		authed := c.user != "" || c.anon
		switch {
		case !authed && el.Name.Space == nsTLS && el.Name.Local == "starttls" && !c.secure && c.a.tls != nil:
			if err := c.write("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"); err != nil {
				return false, nil, err
			}
			tc := tls.Server(c.raw, c.a.tls)
			ctx, cancel := context.WithTimeout(c.a.ctx, negotiationTimeout)
			err := tc.HandshakeContext(ctx)
			cancel()
			if err != nil {
				return false, nil, fmt.Errorf("xmpp: TLS handshake: %w", err)
			}
			c.conn, c.secure = tc, true
			return true, nil, nil
		case !authed && el.Name.Space == nsSASL && el.Name.Local == "auth":
			if !c.secure && !adapters.IsLoopback(c.a.cfg.Addr) {
				return false, nil, &streamError{Condition: "policy-violation", Text: "STARTTLS is required first"}
			}
			ok, err := c.sasl(el)
			if err != nil {
				return false, nil, err
			}
			if ok {
				return true, nil, nil
			}
			attempts++
			if attempts >= maxAuthAttempts {
				return false, nil, &streamError{Condition: "policy-violation", Text: "too many failed authentication attempts"}
			}
		case authed && el.Name.Local == "iq" && el.Name.Space == nsClient && el.Child(nsBind, "bind") != nil:
			s, err := c.bind(el)
			if errors.Is(err, errBindRefused) {
				continue // the client may try again
			}
			return false, s, err
		case authed && el.Name.Space == nsSM && el.Name.Local == "resume":
			s, err := c.a.resumeSession(c, el)
			if err != nil || s != nil {
				return false, s, err
			}
		case authed && el.Name.Space == nsSM && el.Name.Local == "enable":
			// XEP-0198 3: enabling comes after binding.
			if err := c.write("<failed xmlns='urn:xmpp:sm:3'><unexpected-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"); err != nil {
				return false, nil, err
			}
		case authed && el.Name.Space == nsClient && el.Name.Local == "iq":
			// RFC 6120 7.2: no stanzas before binding other than the bind iq.
			if err := c.writeEl(errorReply(el, "cancel", "not-allowed")); err != nil {
				return false, nil, err
			}
		default:
			return false, nil, &streamError{Condition: "not-authorized", Text: "negotiate the stream first"}
		}
	}
}

// sasl runs one SASL exchange starting with the <auth/> element. It
// returns true on success; a failure has already been answered.
func (c *streamConn) sasl(auth *element) (bool, error) {
	ctx, cancel := context.WithTimeout(c.a.ctx, negotiationTimeout)
	defer cancel()
	mech := auth.AttrValue("mechanism")
	offered := false
	for _, m := range c.mechanisms() {
		offered = offered || m == mech
	}
	failure := func(cond string) (bool, error) {
		return false, c.write("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><" + cond + "/></failure>")
	}
	if !offered {
		if mech == "PLAIN" {
			return failure("encryption-required")
		}
		return failure("invalid-mechanism")
	}
	initial, err := decodeSASL(auth.Text())
	if err != nil {
		return failure("incorrect-encoding")
	}
	switch mech {
	case "ANONYMOUS":
		c.anon, c.user = true, ""
		return true, c.write("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
	case "PLAIN":
		authz, user, pass, err := parsePlain(initial)
		if err != nil {
			return failure("malformed-request")
		}
		lctx := adapters.WithLoginSource(ctx, adapters.LoginSource{Protocol: broker.ProtoXMPP, Remote: c.raw.RemoteAddr().String()})
		p, err := c.a.cfg.Auth.Authenticate(lctx, user, pass, adapters.AnonymousRefused)
		if err != nil || (authz != "" && authz != user && authz != user+"@"+c.a.cfg.Domain) {
			c.a.log.Info("xmpp: authentication failed", "user", user, "mechanism", mech, "remote", c.raw.RemoteAddr().String(), "err", err)
			return failure("not-authorized")
		}
		c.user, c.role = p.Name, p.Role
		c.a.log.Debug("xmpp: authenticated", "user", c.user, "mechanism", mech, "remote", c.raw.RemoteAddr().String())
		return true, c.write("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
	}
	srv := &scramServer{mech: mech, h: scramHash(mech), lookup: c.a.cfg.Store.SCRAM, fakeKey: c.a.fakeKey,
		fakeIter: c.a.cfg.Store.SCRAMIterationCount(), domain: c.a.cfg.Domain}
	// SCRAM never shows the password to Auth: the guard is asked here.
	guard, remote := c.a.cfg.Auth.Guard(), c.raw.RemoteAddr().String()
	if err := guard.Allow(broker.ProtoXMPP, remote, ""); err != nil {
		return c.saslFailure(failure, mech, "", err)
	}
	first, err := srv.start(ctx, initial)
	if err == nil {
		err = guard.Allow(broker.ProtoXMPP, remote, srv.user)
	}
	if err != nil {
		return c.saslFailure(failure, mech, srv.user, err)
	}
	if err := c.write("<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" + base64.StdEncoding.EncodeToString(first) + "</challenge>"); err != nil {
		return false, err
	}
	resp, err := c.r.next()
	if err != nil {
		return false, err
	}
	if resp.Name.Space != nsSASL || resp.Name.Local != "response" {
		if resp.Name.Local == "abort" {
			return failure("aborted")
		}
		return failure("malformed-request")
	}
	msg, err := decodeSASL(resp.Text())
	if err != nil {
		return failure("incorrect-encoding")
	}
	final, err := srv.finish(msg)
	if err != nil {
		if errors.Is(err, errSASL) {
			guard.Fail(broker.ProtoXMPP, remote, srv.user)
		}
		return c.saslFailure(failure, mech, srv.user, err)
	}
	guard.Succeed(remote, srv.user)
	u, err := c.a.cfg.Store.GetUser(ctx, srv.user)
	if err != nil {
		c.a.log.Warn("xmpp: role of authenticated user", "user", srv.user, "err", err)
		return failure("temporary-auth-failure")
	}
	c.user, c.role = u.Name, u.Role
	c.a.log.Debug("xmpp: authenticated", "user", c.user, "mechanism", mech, "remote", c.raw.RemoteAddr().String())
	return true, c.write("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" + base64.StdEncoding.EncodeToString(final) + "</success>")
}

func (c *streamConn) saslFailure(failure func(string) (bool, error), mech, user string, err error) (bool, error) {
	c.a.log.Info("xmpp: authentication failed", "user", user, "mechanism", mech, "remote", c.raw.RemoteAddr().String(), "err", err)
	switch {
	case errors.Is(err, adapters.ErrBadCredentials):
		// Backing off (ErrTooManyAttempts) or a bad PLAIN password.
		return failure("not-authorized")
	case errors.Is(err, errSASLMalformed):
		return failure("malformed-request")
	case errors.Is(err, errSASL):
		return failure("not-authorized")
	}
	return failure("temporary-auth-failure")
}

// decodeSASL decodes a SASL payload ("=" is an empty one).
func decodeSASL(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "=" || s == "" {
		return nil, nil
	}
	return base64.StdEncoding.DecodeString(s)
}

// bind binds a resource and registers the session.
func (c *streamConn) bind(iq *element) (*session, error) {
	if iq.AttrValue("type") != "set" {
		return nil, c.writeEl(errorReply(iq, "modify", "bad-request"))
	}
	user := c.user
	if c.anon {
		user = "anon-" + randomID()[:12]
	}
	res := strings.TrimSpace(iq.Child(nsBind, "bind").childText(nsBind, "resource"))
	if res == "" || len(res) > 1023 || strings.ContainsAny(res, "\x00") {
		res = "hub-" + randomID()[:8]
	}
	s := &session{
		a: c.a, conn: c.conn, raw: c.raw, remote: c.raw.RemoteAddr().String(),
		user: user, role: c.role, anon: c.anon,
		bare: user + "@" + c.a.cfg.Domain, closed: make(chan struct{}),
	}
	res = c.a.register(s, res)
	if err := c.a.cfg.Auth.Limits().ClaimResource(s.bare, res); err != nil {
		c.a.unregisterOnly(s, res)
		return nil, c.refuseBind(iq, err)
	}
	s.resource = res
	s.jid = s.bare + "/" + res
	c.a.cl.joined(s)
	result := newElement(nsClient, "iq", "type", "result", "id", iq.AttrValue("id")).Add(
		newElement(nsBind, "bind").Add(newElement(nsBind, "jid").AddText(s.jid)))
	if err := c.writeEl(result); err != nil {
		s.terminate()
		return nil, err
	}
	c.a.log.Debug("xmpp: session bound", "jid", s.jid, "remote", s.remote)
	return s, nil
}

// childText returns the text of the first child with the name.
func (e *element) childText(space, local string) string {
	if c := e.Child(space, local); c != nil {
		return c.Text()
	}
	return ""
}

// errorReply returns the error answer to stanza el (RFC 6120 8.3).
func errorReply(el *element, typ, condition string) *element {
	r := el.Copy()
	r.SetAttr("type", "error")
	to, from := el.AttrValue("from"), el.AttrValue("to")
	r.SetAttr("to", to)
	r.SetAttr("from", from)
	r.Add(newElement(nsClient, "error", "type", typ).Add(newElement(nsStanzas, condition)))
	return r
}

package xmpp

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/hubsmith/hub/adapters"
)

// component is the XEP-0114 connection of the hub to an existing server,
// which routes the stanzas for ComponentDomain (the topic JIDs) to it.
type component struct {
	mu    sync.Mutex
	conn  net.Conn
	bares map[string]bool // users with attached subscriptions
}

func (a *Adapter) componentConnected() bool {
	a.compState.mu.Lock()
	defer a.compState.mu.Unlock()
	return a.compState.conn != nil
}

func (a *Adapter) startComponent() {
	a.wg.Add(1)
	go a.runComponent()
}

// runComponent keeps the component connected, reconnecting with
// exponential back-off (0.5 s up to 30 s) while the server is away.
func (a *Adapter) runComponent() {
	defer a.wg.Done()
	backoff := 500 * time.Millisecond
	for a.ctx.Err() == nil {
		began := time.Now()
		err := a.componentSession()
		if a.ctx.Err() != nil {
			return
		}
		if time.Since(began) > 30*time.Second {
			backoff = 500 * time.Millisecond
		}
		a.log.Warn("xmpp: component connection lost; reconnecting", "addr", a.cfg.ComponentAddr, "err", err, "in", backoff)
		select {
		case <-time.After(backoff):
		case <-a.ctx.Done():
			return
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

// componentSession connects, authenticates with the shared secret and
// serves the stanzas for the component domain until the connection ends.
func (a *Adapter) componentSession() error {
	d := net.Dialer{Timeout: 10 * time.Second}
	conn, err := d.DialContext(a.ctx, "tcp", a.cfg.ComponentAddr)
	if err != nil {
		return fmt.Errorf("xmpp: component dial %s: %w", a.cfg.ComponentAddr, err)
	}
	a.mu.Lock()
	if !a.started {
		a.mu.Unlock()
		_ = conn.Close()
		return errors.New("xmpp: stopped")
	}
	a.conns[conn] = struct{}{}
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.conns, conn)
		a.mu.Unlock()
		_ = conn.Close()
	}()
	_ = conn.SetDeadline(time.Now().Add(negotiationTimeout))
	if _, err := io.WriteString(conn, "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='"+xmlAttrEscape(a.cfg.ComponentDomain)+"'>"); err != nil {
		return fmt.Errorf("xmpp: component stream: %w", err)
	}
	r := newStanzaReader(conn, a.cfg.MaxStanza, a.cfg.MaxDepth, nil)
	hdr, err := r.header()
	if err != nil {
		return fmt.Errorf("xmpp: component stream header: %w", err)
	}
	id := ""
	for _, at := range hdr.Attr {
		if at.Name.Space == "" && at.Name.Local == "id" {
			id = at.Value
		}
	}
	sum := sha1.Sum([]byte(id + a.cfg.ComponentSecret))
	if _, err := io.WriteString(conn, "<handshake>"+hex.EncodeToString(sum[:])+"</handshake>"); err != nil {
		return fmt.Errorf("xmpp: component handshake: %w", err)
	}
	el, err := r.next()
	if err != nil {
		return fmt.Errorf("xmpp: component handshake: %w", err)
	}
	if el.Name.Local != "handshake" {
		return fmt.Errorf("xmpp: component handshake refused: <%s>%s", el.Name.Local, el.String())
	}
	_ = conn.SetDeadline(time.Time{})
	a.compState.mu.Lock()
	a.compState.conn = conn
	a.compState.mu.Unlock()
	a.log.Info("xmpp: component connected", "addr", a.cfg.ComponentAddr, "domain", a.cfg.ComponentDomain)
	defer a.componentDown()
	a.componentAttachAll()
	for {
		el, err := r.next()
		if err != nil {
			var se *streamError
			if errors.As(err, &se) {
				a.compWrite(append(se.bytes(), "</stream:stream>"...))
			}
			return err
		}
		a.componentRoute(el)
	}
}

// componentDown detaches the remote users' subscriptions.
func (a *Adapter) componentDown() {
	a.compState.mu.Lock()
	a.compState.conn = nil
	bares := a.compState.bares
	a.compState.bares = nil
	a.compState.mu.Unlock()
	for b := range bares {
		a.topics.userOffline(b)
	}
}

// componentAttachAll attaches the subscriptions of the remote users: the
// server keeps their messages while they are offline, so they stay
// attached while the component is connected.
func (a *Adapter) componentAttachAll() {
	ctx := context.WithoutCancel(a.ctx)
	kvs, err := a.cfg.Store.KVList(ctx, topicBucket)
	if err != nil {
		a.log.Warn("xmpp: component subscriptions", "err", err)
		return
	}
	pkvs, _ := a.cfg.Store.KVList(ctx, pubsubBucket)
	jkvs, _ := a.cfg.Store.KVList(ctx, jidBucket)
	seen := map[string]bool{}
	for _, kv := range append(append(kvs, pkvs...), jkvs...) {
		bare, _, _ := strings.Cut(kv.Key, " ")
		if _, domain, _ := splitJID(bare); domain == a.cfg.Domain || seen[bare] {
			continue
		}
		seen[bare] = true
		a.topics.userOnline(componentPeer{a: a, jid: bare})
	}
}

func (a *Adapter) compWrite(b []byte) error {
	a.compState.mu.Lock()
	defer a.compState.mu.Unlock()
	if a.compState.conn == nil {
		return errors.New("xmpp: component not connected")
	}
	_ = a.compState.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err := a.compState.conn.Write(b)
	if err != nil {
		_ = a.compState.conn.Close()
	}
	return err
}

// componentRoute handles a stanza the server routed to the component.
func (a *Adapter) componentRoute(el *element) {
	if el.Name.Space != nsComponent && el.Name.Space != nsClient {
		return
	}
	from := el.AttrValue("from")
	if from == "" {
		return
	}
	p := componentPeer{a: a, jid: from}
	a.compState.mu.Lock()
	if a.compState.bares == nil {
		a.compState.bares = map[string]bool{}
	}
	a.compState.bares[p.bareJID()] = true
	a.compState.mu.Unlock()
	local, domain, _ := splitJID(el.AttrValue("to"))
	if local == "" && domain == a.cfg.ComponentDomain && el.Name.Local == "iq" && el.Child(nsPubSub, "pubsub") != nil {
		a.handlePubSubFor(p, el)
		return
	}
	a.topics.handle(p, el, local, domain)
}

// componentPeer is a user of the server the hub is a component of.
type componentPeer struct {
	a   *Adapter
	jid string
}

func (c componentPeer) bareJID() string {
	b, _, _ := strings.Cut(c.jid, "/")
	return b
}
func (c componentPeer) fullJID() string { return c.jid }
func (c componentPeer) subID() string   { return c.bareJID() }
func (c componentPeer) remote() string  { return c.a.cfg.ComponentAddr }
func (c componentPeer) qos() byte       { return 0 }
func (c componentPeer) online() bool    { return c.a.componentConnected() }
func (c componentPeer) principal() adapters.Principal {
	return adapters.Principal{Name: c.bareJID(), Role: adapters.RoleUser, External: true}
}
func (c componentPeer) rosterSet(string, string) {}
func (c componentPeer) send(el *element) error {
	if el.AttrValue("from") == "" {
		el.SetAttr("from", c.a.cfg.ComponentDomain)
	}
	return c.a.compWrite(el.Bytes(nsComponent))
}

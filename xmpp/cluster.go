package xmpp

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hubsmith/hub/adapters"
)

// Cluster links the c2s server to the other hubs of a cluster over NATS,
// so that users of one domain connected to different hubs chat and see
// each other's presence, and a device's commands reach the hub it is on.
//
// There is no registry of who is where: NATS interest is the registry. A
// hub subscribes, while it holds a bound session of a bare JID, to
// {Prefix}.x.u.{bare} (stanzas for the bare JID: messages, presence,
// probes, roster pushes) and {Prefix}.x.c.{bare} (device commands, in a
// queue group so that one hub runs each), and per full JID to
// {Prefix}.x.r.{bare}.{resource}; tokens are base64url. A hub that stops
// or loses NATS loses its subscriptions with its connection, so nothing
// stale remains. A stanza for a JID with no session here is sent as a
// NATS request: "no responders" (or no answer within clusterWait) means
// the user has no available resource anywhere, and the sending hub alone
// keeps it offline.
//
// Rosters, offline messages and topic subscription records must be kept
// where every hub reads them (Config.Store over the cluster's KV).
type Cluster struct {
	// Conn is the hub's NATS connection (nil: no cluster).
	Conn *nats.Conn
	// Prefix starts the subjects ("" : "hub").
	Prefix string
	// Node is this hub's name: a hub ignores the frames it sent itself.
	Node string
	// Liveness is how often the hub asks after the users of other hubs
	// its users see available (0: DefaultLiveness; see
	// cluster_liveness.go).
	Liveness time.Duration
}

// clusterWait bounds the wait for another hub to take a stanza.
const clusterWait = time.Second

// frame kinds.
const (
	frameDeliver  = "deliver"  // a stanza for the available resources of a bare JID
	framePresence = "presence" // a presence broadcast: to is set to each resource
	frameProbe    = "probe"    // send your resources' presence to From
	framePush     = "push"     // a roster push for the user's interested resources
	frameFull     = "full"     // a stanza for one full JID
	frameCommand  = "command"  // a device command
)

// frame is what hubs send each other, as JSON.
type frame struct {
	Kind    string          `json:"kind"`
	Node    string          `json:"node"`
	From    string          `json:"from,omitempty"`
	Stanza  string          `json:"stanza,omitempty"`
	Item    *rosterItem     `json:"item,omitempty"`
	Command *remoteCommand  `json:"command,omitempty"`
	Reply   json.RawMessage `json:"reply,omitempty"`
	Error   string          `json:"error,omitempty"`
	Offline bool            `json:"offline,omitempty"`
}

// remoteCommand is a device command sent to the hub the device is on.
type remoteCommand struct {
	ID     string          `json:"id"`
	Device string          `json:"device"`
	Name   string          `json:"name"`
	Params json.RawMessage `json:"params"`
}

// decodeFrame parses a frame of another hub.
func decodeFrame(b []byte) (frame, error) {
	var f frame
	if err := json.Unmarshal(b, &f); err != nil {
		return frame{}, fmt.Errorf("xmpp: cluster frame: %w", err)
	}
	switch f.Kind {
	case frameDeliver, framePresence, frameProbe, framePush, frameFull, frameCommand, framePing, frameTopic, frameCarbon, frameSubs:
	default:
		return frame{}, fmt.Errorf("xmpp: cluster frame: unknown kind %q", f.Kind)
	}
	if f.Kind == framePush && f.Item == nil || f.Kind == frameCommand && f.Command == nil {
		return frame{}, fmt.Errorf("xmpp: cluster frame %s: missing payload", f.Kind)
	}
	return f, nil
}

// stanza parses the frame's stanza.
func (f frame) stanza() (*element, error) {
	if f.Stanza == "" {
		return nil, errors.New("xmpp: cluster frame: no stanza")
	}
	el, err := parseElement([]byte(f.Stanza))
	if err != nil {
		return nil, fmt.Errorf("xmpp: cluster frame: stanza: %w", err)
	}
	if el.Name.Space != nsClient {
		return nil, fmt.Errorf("xmpp: cluster frame: stanza in namespace %q", el.Name.Space)
	}
	return el, nil
}

// subjectToken encodes a JID part as one subject token.
func subjectToken(s string) string { return "j" + base64.RawURLEncoding.EncodeToString([]byte(s)) }

// link is the adapter's side of the cluster: its subscriptions per bare
// and full JID of the local sessions.
type link struct {
	a        *Adapter
	nc       *nats.Conn
	prefix   string
	node     string
	liveness time.Duration
	stop     chan struct{} // closed by close

	wg sync.WaitGroup // commands run for other hubs

	mu       sync.Mutex
	closed   bool
	sweeping bool                            // the liveness sweep runs
	remote   map[string]*remotePeer          // full JIDs of other hubs seen available
	own      map[string]map[string]struct{}  // bare JID here → its full JIDs on other hubs (cluster_fanout.go)
	resumes  map[*session]*nats.Subscription // resumable sessions' subscriptions (cluster_resume.go)
	bares    map[string]*bareSubs            // bare JID → its subscriptions
	fulls    map[string]*nats.Subscription   // full JID → its subscription
}

type bareSubs struct {
	n         int // local sessions
	user, cmd *nats.Subscription
}

func newLink(a *Adapter, c Cluster) *link {
	if c.Conn == nil {
		return nil
	}
	if c.Prefix == "" {
		c.Prefix = "hub"
	}
	if c.Liveness <= 0 {
		c.Liveness = DefaultLiveness
	}
	return &link{a: a, nc: c.Conn, prefix: c.Prefix, node: c.Node, liveness: c.Liveness, stop: make(chan struct{}),
		bares: map[string]*bareSubs{}, fulls: map[string]*nats.Subscription{}, remote: map[string]*remotePeer{},
		own: map[string]map[string]struct{}{}, resumes: map[*session]*nats.Subscription{}}
}

func (l *link) userSubject(bare string) string { return l.prefix + ".x.u." + subjectToken(bare) }
func (l *link) cmdSubject(bare string) string  { return l.prefix + ".x.c." + subjectToken(bare) }
func (l *link) fullSubject(bare, res string) string {
	return l.prefix + ".x.r." + subjectToken(bare) + "." + subjectToken(res)
}

// joined subscribes for a session bound here.
func (l *link) joined(s *session) {
	if l == nil {
		return
	}
	l.subscribe(s)
	// The interest reaches this hub's NATS server before the client is
	// told it is bound (and from there the cluster's other servers); a
	// hub cut off from NATS does not wait.
	if l.nc.IsConnected() {
		_ = l.nc.FlushTimeout(clusterWait)
	}
}

func (l *link) subscribe(s *session) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	b := l.bares[s.bare]
	if b == nil {
		b = &bareSubs{}
		var err error
		bare := s.bare
		if b.user, err = l.nc.Subscribe(l.userSubject(bare), func(m *nats.Msg) { l.onUser(bare, m) }); err != nil {
			l.a.log.Warn("xmpp: cluster: subscribe", "jid", s.bare, "err", err)
		}
		if b.cmd, err = l.nc.QueueSubscribe(l.cmdSubject(s.bare), "cmd", l.onCommand); err != nil {
			l.a.log.Warn("xmpp: cluster: subscribe commands", "jid", s.bare, "err", err)
		}
		l.bares[s.bare] = b
	}
	b.n++
	sub, err := l.nc.Subscribe(l.fullSubject(s.bare, s.resource), l.onFull)
	if err != nil {
		l.a.log.Warn("xmpp: cluster: subscribe", "jid", s.jid, "err", err)
	}
	l.fulls[s.jid] = sub
}

// left unsubscribes for a session that ended.
func (l *link) left(s *session) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if sub := l.fulls[s.jid]; sub != nil {
		_ = sub.Unsubscribe()
	}
	delete(l.fulls, s.jid)
	l.dropResumableLocked(s)
	b := l.bares[s.bare]
	if b == nil {
		return
	}
	if b.n--; b.n <= 0 {
		for _, sub := range []*nats.Subscription{b.user, b.cmd} {
			if sub != nil {
				_ = sub.Unsubscribe()
			}
		}
		delete(l.bares, s.bare)
		delete(l.own, s.bare) // learnt again from the next login's probe
	}
}

// close drops every subscription left.
func (l *link) close() {
	if l == nil {
		return
	}
	l.mu.Lock()
	if !l.closed {
		close(l.stop)
	}
	l.closed = true
	for _, b := range l.bares {
		for _, sub := range []*nats.Subscription{b.user, b.cmd} {
			if sub != nil {
				_ = sub.Unsubscribe()
			}
		}
	}
	for _, sub := range l.fulls {
		if sub != nil {
			_ = sub.Unsubscribe()
		}
	}
	for s := range l.resumes {
		l.dropResumableLocked(s)
	}
	l.bares, l.fulls = map[string]*bareSubs{}, map[string]*nats.Subscription{}
	l.own = map[string]map[string]struct{}{}
	l.mu.Unlock()
	l.wg.Wait()
}

func (l *link) encode(f frame) []byte {
	f.Node = l.node
	b, _ := json.Marshal(f) // a frame always encodes
	return b
}

// publish sends a frame to the other hubs holding bare, taking no answer.
func (l *link) publish(bare string, f frame) {
	if l == nil {
		return
	}
	if err := l.nc.Publish(l.userSubject(bare), l.encode(f)); err != nil {
		l.a.log.Debug("xmpp: cluster: publish", "jid", bare, "kind", f.Kind, "err", err)
	}
}

// request sends a frame to the hubs holding bare and reports whether one
// of them took it (delivered to an available resource).
func (l *link) request(subject string, f frame) bool {
	if l == nil || !l.nc.IsConnected() {
		return false // cut off: nobody else can take it
	}
	msg, err := l.nc.Request(subject, l.encode(f), clusterWait)
	if err != nil {
		if !errors.Is(err, nats.ErrNoResponders) {
			l.a.log.Debug("xmpp: cluster: request", "subject", subject, "kind", f.Kind, "err", err)
		}
		return false
	}
	return string(msg.Data) == "1"
}

// deliverBare asks the other hubs to deliver el to the available resources
// of bare and reports whether one did.
func (l *link) deliverBare(bare string, el *element) bool {
	return l != nil && l.request(l.userSubject(bare), frame{Kind: frameDeliver, Stanza: el.String()})
}

// deliverFull asks the hub holding the full JID bare/res to deliver el and
// reports whether it did.
func (l *link) deliverFull(bare, res string, el *element) bool {
	return l != nil && l.request(l.fullSubject(bare, res), frame{Kind: frameFull, Stanza: el.String()})
}

// sendFull sends el to the full JID bare/res on another hub, without
// waiting.
func (l *link) sendFull(bare, res string, el *element) {
	if l == nil {
		return
	}
	if err := l.nc.Publish(l.fullSubject(bare, res), l.encode(frame{Kind: frameFull, Stanza: el.String()})); err != nil {
		l.a.log.Debug("xmpp: cluster: publish", "jid", bare+"/"+res, "err", err)
	}
}

// answer replies to a request (nothing for a plain publish).
func answer(m *nats.Msg, ok bool) {
	if m.Reply == "" {
		return
	}
	if ok {
		_ = m.Respond([]byte("1"))
	} else {
		_ = m.Respond([]byte("0"))
	}
}

// onUser handles a frame for bare, a bare JID with sessions here.
func (l *link) onUser(bare string, m *nats.Msg) {
	a := l.a
	if a.ctx == nil || a.ctx.Err() != nil {
		return
	}
	f, err := decodeFrame(m.Data)
	if err != nil {
		a.log.Debug("xmpp: cluster: frame dropped", "subject", m.Subject, "err", err)
		return
	}
	if f.Node == l.node && m.Reply == "" {
		return // this hub served its own sessions already
	}
	switch f.Kind {
	case framePush:
		for _, s := range a.sessionsOf(bare) {
			s.pushRoster(*f.Item)
		}
		return
	case frameProbe:
		plocal, pdomain, pres := splitJID(f.From)
		if plocal == "" || pres == "" || pdomain != a.cfg.Domain {
			return
		}
		for _, s := range a.availableOf(bare) {
			s.mu.Lock()
			p := s.presence
			s.mu.Unlock()
			if p == nil {
				continue
			}
			p = p.Copy()
			p.SetAttr("to", f.From)
			l.sendFull(plocal+"@"+pdomain, pres, p)
		}
		return
	case frameTopic, frameCarbon:
		l.onFanOut(bare, f) // cluster_fanout.go
		return
	case frameSubs:
		l.onSubs(bare) // cluster_topics.go
		return
	case frameDeliver, framePresence:
	default:
		return
	}
	el, err := f.stanza()
	if err != nil {
		a.log.Debug("xmpp: cluster: frame dropped", "subject", m.Subject, "err", err)
		return
	}
	delivered := false
	for _, s := range a.availableOf(bare) {
		c := el
		if f.Kind == framePresence {
			c = el.Copy()
			c.SetAttr("to", s.jid)
		}
		if _, err := s.send(c); err == nil {
			delivered = true
			l.notePresence(el, bare)
		}
	}
	// Nothing available here: no answer, so that a hub where the user is
	// available answers first; the sender gives up after clusterWait.
	if delivered {
		answer(m, true)
	}
}

// onFull handles a stanza for a full JID bound here.
func (l *link) onFull(m *nats.Msg) {
	a := l.a
	if a.ctx == nil || a.ctx.Err() != nil {
		return
	}
	f, err := decodeFrame(m.Data)
	if err == nil && f.Kind == framePing {
		answer(m, true) // the subscription exists: the session is bound here
		return
	}
	if err == nil && f.Kind != frameFull {
		err = fmt.Errorf("xmpp: cluster frame: %s on a full JID", f.Kind)
	}
	var el *element
	if err == nil {
		el, err = f.stanza()
	}
	if err != nil {
		a.log.Debug("xmpp: cluster: frame dropped", "subject", m.Subject, "err", err)
		answer(m, false)
		return
	}
	local, domain, res := splitJID(el.AttrValue("to"))
	if local == "" || res == "" {
		answer(m, false)
		return
	}
	s := a.sessionOf(local+"@"+domain, res)
	if s == nil {
		answer(m, false)
		return
	}
	_, err = s.send(el)
	if err == nil {
		l.notePresence(el, s.bare)
		if el.Name.Local == "message" {
			a.carbonReceived(s, el) // as for a message from this hub (router.go)
		}
	}
	answer(m, err == nil)
}

// command runs cmd on the hub the device is on.
func (l *link) command(ctx context.Context, cmd adapters.Command, bare string) (json.RawMessage, error) {
	if l == nil {
		return nil, adapters.ErrDeviceOffline
	}
	msg, err := l.nc.RequestWithContext(ctx, l.cmdSubject(bare), l.encode(frame{Kind: frameCommand,
		Command: &remoteCommand{ID: cmd.ID, Device: cmd.DeviceID, Name: cmd.Name, Params: cmd.Params}}))
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return nil, adapters.ErrDeviceOffline
	case err != nil && ctx.Err() != nil:
		return nil, ctx.Err()
	case err != nil:
		return nil, fmt.Errorf("xmpp: command to %s on another hub: %w", bare, err)
	}
	var f frame
	if err := json.Unmarshal(msg.Data, &f); err != nil {
		return nil, fmt.Errorf("xmpp: command to %s: answer of the other hub: %w", bare, err)
	}
	switch {
	case f.Offline:
		return nil, adapters.ErrDeviceOffline
	case f.Error != "":
		return nil, fmt.Errorf("xmpp: command to %s on hub %s: %s", bare, f.Node, f.Error)
	}
	if len(f.Reply) == 0 {
		return json.RawMessage("null"), nil
	}
	return f.Reply, nil
}

// onCommand runs a device command another hub sent for a device here.
func (l *link) onCommand(m *nats.Msg) {
	a := l.a
	if a.ctx == nil || a.ctx.Err() != nil || m.Reply == "" {
		return
	}
	f, err := decodeFrame(m.Data)
	if err == nil && f.Kind != frameCommand {
		err = fmt.Errorf("xmpp: cluster frame: %s on a command subject", f.Kind)
	}
	if err != nil {
		a.log.Debug("xmpp: cluster: frame dropped", "subject", m.Subject, "err", err)
		_ = m.Respond(l.encode(frame{Kind: frameCommand, Error: err.Error()}))
		return
	}
	c := f.Command
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.wg.Add(1)
	l.mu.Unlock()
	go func() {
		defer l.wg.Done()
		ctx, cancel := context.WithTimeout(a.ctx, deviceCommandTimeout)
		defer cancel()
		reply, err := a.sendCommandLocal(ctx, adapters.Command{ID: c.ID, DeviceID: c.Device, Name: c.Name, Params: c.Params})
		out := frame{Kind: frameCommand, Reply: reply}
		switch {
		case errors.Is(err, adapters.ErrDeviceOffline):
			out.Offline = true
		case err != nil:
			out.Error = err.Error()
		}
		_ = m.Respond(l.encode(out))
	}()
}

// toBare sends el, for the bare JID bare, to the other hubs: when bare has
// an available resource here, as a plain publish (this hub delivers too,
// and reports false); else as a request, reporting whether another hub
// delivered it (false: nobody has an available resource, the caller
// keeps it offline).
func (l *link) toBare(bare string, el *element) bool {
	if l == nil {
		return false
	}
	if len(l.a.availableOf(bare)) > 0 {
		l.publish(bare, frame{Kind: frameDeliver, Stanza: el.String()})
		return false
	}
	return l.deliverBare(bare, el)
}

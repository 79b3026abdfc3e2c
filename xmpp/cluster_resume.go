package xmpp

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// XEP-0198 resumption on another hub (a client behind a load balancer
// whose new connection lands elsewhere). While a hub holds a resumable
// session it subscribes to {Prefix}.x.s.{id} (the token of the session's
// id). A hub asked to resume an id it does not hold sends a frameResume
// request there: the hub holding it closes the old stream (if it has not
// noticed its end yet), applies the client's h, ends the session there
// without an unavailable presence (the user did not go away) and answers
// with its state: full JID, the count of stanzas handled from the client,
// the stanzas the client has not acknowledged, its last presence, roster
// interest and carbons. The asking hub binds the same full JID, resends
// the stanzas after <resumed/> and takes the session on; its topic
// subscriptions attach there, and the user's other resources get its
// presence again (so that their hubs know where it is now). No responders (the hub is dead or never had
// it) or no answer within resumeWait: <failed/> with <item-not-found/>,
// and the client binds anew (its offline messages wait in the cluster's
// KV).

// frameResume asks for, and answers with, a resumable session.
const frameResume = "resume"

// resumeWait bounds the wait for the hub that holds a session; the
// holder waits up to resumeLoopWait for its old stream to end.
const (
	resumeWait     = 5 * time.Second
	resumeLoopWait = 3 * time.Second
)

// handover is a session's state sent to the hub that resumes it.
type handover struct {
	Resource   string   `json:"resource"`
	In         uint32   `json:"in"`                 // stanzas handled from the client
	Unacked    []string `json:"unacked,omitempty"`  // not acknowledged after the client's h, in order
	Presence   string   `json:"presence,omitempty"` // last available presence ("": unavailable)
	Interested bool     `json:"interested,omitempty"`
	Carbons    bool     `json:"carbons,omitempty"`
}

// resumeRequest is what the asking hub sends: the session id, the
// client's bare JID and its h.
type resumeRequest struct {
	ID   string `json:"id"`
	Bare string `json:"bare"`
	H    uint32 `json:"h"`
}

// decodeResumeRequest parses the frame of a hub asking for a session.
func decodeResumeRequest(b []byte) (resumeRequest, error) {
	var f frame
	var req resumeRequest
	if err := json.Unmarshal(b, &f); err != nil {
		return req, fmt.Errorf("xmpp: cluster resume request: %w", err)
	}
	if f.Kind != frameResume || len(f.Reply) == 0 {
		return req, fmt.Errorf("xmpp: cluster resume request: a %q frame", f.Kind)
	}
	if err := json.Unmarshal(f.Reply, &req); err != nil {
		return req, fmt.Errorf("xmpp: cluster resume request: %w", err)
	}
	if req.ID == "" || req.Bare == "" {
		return req, errors.New("xmpp: cluster resume request: no session id or JID")
	}
	return req, nil
}

// decodeHandover parses the answer of the hub that held a session.
func decodeHandover(b []byte) (handover, error) {
	var f frame
	var hv handover
	if err := json.Unmarshal(b, &f); err != nil {
		return hv, fmt.Errorf("xmpp: cluster handover: %w", err)
	}
	switch {
	case f.Kind != frameResume:
		return hv, fmt.Errorf("xmpp: cluster handover: a %q frame", f.Kind)
	case f.Error != "":
		return hv, fmt.Errorf("xmpp: cluster handover: hub %s: %s", f.Node, f.Error)
	}
	if err := json.Unmarshal(f.Reply, &hv); err != nil {
		return hv, fmt.Errorf("xmpp: cluster handover: %w", err)
	}
	if hv.Resource == "" {
		return hv, errors.New("xmpp: cluster handover: no resource")
	}
	return hv, nil
}

func (l *link) sessionSubject(id string) string { return l.prefix + ".x.s." + subjectToken(id) }

// resumable subscribes for the resumable session s (its id set).
func (l *link) resumable(s *session, id string) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || l.resumes[s] != nil {
		return
	}
	sub, err := l.nc.Subscribe(l.sessionSubject(id), func(m *nats.Msg) { l.onResume(id, m) })
	if err != nil {
		l.a.log.Warn("xmpp: cluster: subscribe session", "jid", s.jid, "err", err)
		return
	}
	l.resumes[s] = sub
}

// dropResumable unsubscribes for s (l.mu held).
func (l *link) dropResumableLocked(s *session) {
	if sub := l.resumes[s]; sub != nil {
		_ = sub.Unsubscribe()
		delete(l.resumes, s)
	}
}

// onResume hands the session id over to the hub that asks for it.
func (l *link) onResume(id string, m *nats.Msg) {
	a := l.a
	if m.Reply == "" || a.ctx == nil || a.ctx.Err() != nil {
		return
	}
	req, err := decodeResumeRequest(m.Data)
	if err != nil {
		a.log.Debug("xmpp: cluster: frame dropped", "subject", m.Subject, "err", err)
		_ = m.Respond(l.encode(frame{Kind: frameResume, Error: err.Error()}))
		return
	}
	out, err := a.handOver(id, req, func(hv *handover) ([]byte, error) {
		b, _ := json.Marshal(hv) // a handover always encodes
		out := l.encode(frame{Kind: frameResume, Reply: b})
		if max := l.nc.MaxPayload(); int64(len(out)) > max {
			return nil, fmt.Errorf("%w: %d bytes, NATS takes %d", errHandoverSize, len(out), max)
		}
		return out, nil
	})
	if err != nil {
		a.log.Info("xmpp: cluster: session not handed over", "id", id, "err", err)
		_ = m.Respond(l.encode(frame{Kind: frameResume, Error: err.Error()}))
		return
	}
	_ = m.Respond(out)
}

// errHandoverSize refuses to hand over a session whose unacknowledged
// stanzas do not fit in one NATS message: it stays here, detached, until
// its client resumes it here or its time is up.
var errHandoverSize = errors.New("xmpp: session too large to hand over")

// errNoSession is a resumption of a session this hub does not hold.
var errNoSession = errors.New("xmpp: no such session")

// handOver ends the session id here for another hub to resume it, and
// returns its state as encode makes it (an error of encode keeps it here).
func (a *Adapter) handOver(id string, req resumeRequest, encode func(*handover) ([]byte, error)) ([]byte, error) {
	a.mu.Lock()
	s := a.resume[id]
	a.mu.Unlock()
	if s == nil || s.bare != req.Bare || s.anon {
		return nil, errNoSession
	}
	s.mu.Lock()
	old, ld := s.conn, s.loopDone
	s.mu.Unlock()
	if old != nil { // the old stream has not noticed its end yet
		_ = old.Close()
		if ld != nil {
			select {
			case <-ld:
			case <-time.After(resumeLoopWait):
			}
		}
	}
	s.mu.Lock()
	if s.done || s.sm == nil {
		s.mu.Unlock()
		return nil, errNoSession
	}
	if err := s.ackLocked(req.H); err != nil {
		s.mu.Unlock()
		return nil, err
	}
	hv := &handover{Resource: s.resource, In: s.sm.in, Interested: s.interested, Carbons: a.carbons.enabled(s)}
	for _, it := range s.sm.unacked {
		hv.Unacked = append(hv.Unacked, string(it.b))
	}
	wasAvailable := s.available
	if wasAvailable && s.presence != nil {
		hv.Presence = s.presence.String()
	}
	out, err := encode(hv)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	// Gone from here without an unavailable presence: the session goes
	// on on the other hub. Deliveries waiting for the client's
	// acknowledgement of a stanza handed over fail and go back to their
	// queues (so they may come twice).
	s.available = false
	s.mu.Unlock()
	s.terminate()
	if wasAvailable {
		a.availabilityChanged(s)
	}
	a.log.Debug("xmpp: session handed over to another hub", "jid", s.jid, "unacked", len(hv.Unacked))
	return out, nil
}

// failedNotFound is XEP-0198's answer to a session that cannot be resumed.
const failedNotFound = "<failed xmlns='urn:xmpp:sm:3'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"

// resumeRemote resumes the session prev, which this hub does not hold,
// from the hub that does; it answers <failed/> and returns nil when none
// hands it over.
func (a *Adapter) resumeRemote(c *streamConn, prev string, h uint32) (*session, error) {
	l := a.cl
	bare := c.user + "@" + a.cfg.Domain
	if l == nil || c.anon || !l.nc.IsConnected() {
		return nil, c.write(failedNotFound)
	}
	req, _ := json.Marshal(resumeRequest{ID: prev, Bare: bare, H: h}) // always encodes
	msg, err := l.nc.Request(l.sessionSubject(prev), l.encode(frame{Kind: frameResume, Reply: req}), resumeWait)
	var hv handover
	if err == nil {
		hv, err = decodeHandover(msg.Data)
	}
	if err != nil {
		if !errors.Is(err, nats.ErrNoResponders) {
			a.log.Info("xmpp: cluster: session not resumed from another hub", "jid", bare, "err", err)
		}
		return nil, c.write(failedNotFound)
	}
	var pres *element
	if hv.Presence != "" {
		if pres, err = parseElement([]byte(hv.Presence)); err != nil {
			a.log.Info("xmpp: cluster: handover presence", "jid", bare, "err", err)
			pres = nil
		}
	}
	s := &session{
		a: a, conn: c.conn, raw: c.raw, remote: c.raw.RemoteAddr().String(),
		user: c.user, role: c.role, bare: bare, closed: make(chan struct{}),
	}
	if res := a.register(s, hv.Resource); res != hv.Resource {
		// A session of that full JID is bound here already.
		a.unregisterOnly(s, res)
		return nil, c.write(failedNotFound)
	}
	if err := a.cfg.Auth.Limits().ClaimResource(bare, hv.Resource); err != nil {
		a.unregisterOnly(s, hv.Resource)
		a.log.Info("xmpp: cluster: resumed session refused", "jid", bare, "err", err)
		return nil, c.write(failedNotFound)
	}
	s.resource, s.jid = hv.Resource, bare+"/"+hv.Resource
	st := &smState{id: prev, resumable: true, in: hv.In, acked: h, ackSignal: make(chan struct{}, 1)}
	out := []byte("<resumed xmlns='urn:xmpp:sm:3' previd='" + xmlAttrEscape(prev) + "' h='" + strconv.FormatUint(uint64(hv.In), 10) + "'/>")
	s.mu.Lock()
	s.sm = st
	for _, u := range hv.Unacked {
		if err := s.reserveLocked(len(u)); err != nil {
			break // over the bounds: the rest is not resent
		}
		st.unacked = append(st.unacked, smItem{b: []byte(u), ack: make(chan struct{})})
		out = append(out, u...)
	}
	if len(st.unacked) > 0 {
		out = append(out, "<r xmlns='urn:xmpp:sm:3'/>"...)
	}
	s.interested = hv.Interested
	if pres != nil {
		s.available, s.presence = true, pres
	}
	s.mu.Unlock()
	a.mu.Lock()
	a.resume[prev] = s
	a.mu.Unlock()
	l.joined(s)
	l.resumable(s, prev)
	if hv.Carbons {
		a.carbons.set(s, true)
	}
	s.mu.Lock()
	_ = s.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err = s.conn.Write(out)
	s.mu.Unlock()
	if err != nil {
		s.terminate()
		return nil, err
	}
	if pres != nil {
		a.availabilityChanged(s) // its topic subscriptions attach here
		// The user's resources on other hubs learn where this one is now,
		// and this hub where they are (topic deliveries and carbons go to
		// them from here, cluster_fanout.go): its presence again, and a
		// probe.
		l.publish(bare, frame{Kind: framePresence, Stanza: pres.String()})
		l.publish(bare, frame{Kind: frameProbe, From: s.jid})
	}
	a.log.Debug("xmpp: session resumed from another hub", "jid", s.jid, "resent", len(st.unacked))
	return s, nil
}

package xmpp

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"time"
)

// maxUnacked bounds the stanzas a XEP-0198 session keeps for resending
// (the login presence burst aside); smbound.go bounds their bytes.
const maxUnacked = 1000

var errSessionClosed = errors.New("xmpp: session closed")

// session is a bound client session. Its connection may change when the
// client resumes it (XEP-0198) on a new one.
type session struct {
	a        *Adapter
	raw      net.Conn
	remote   string
	user     string // localpart
	role     string
	anon     bool
	bare     string
	resource string
	jid      string // full JID

	mu          sync.Mutex
	conn        net.Conn // nil while detached
	detached    bool     // waiting for resumption
	done        bool
	closed      chan struct{} // closed when terminated
	loopDone    chan struct{}
	sm          *smState
	available   bool
	presence    *element // last available presence broadcast
	interested  bool     // requested the roster
	resumeTimer *time.Timer
	out         outQueue // what is written to conn (outq.go)
}

// smState is the XEP-0198 state of a session.
type smState struct {
	id        string
	resumable bool
	in        uint32 // stanzas handled from the client
	acked     uint32 // stanzas the client acknowledged
	unacked   []smItem
	// burst counts the presence burst's stanzas among unacked, bytes the
	// others' bytes (smbound.go); ackSignal is signalled on every ack.
	burst     int
	bytes     int64
	ackSignal chan struct{}
}

type smItem struct {
	b     []byte
	ack   chan struct{} // closed when acknowledged
	burst bool          // of the login presence burst: not counted
}

// serve reads the session's stanzas until the connection ends.
func (s *session) serve(r *stanzaReader) {
	s.mu.Lock()
	conn := s.conn
	ld := make(chan struct{})
	s.loopDone = ld
	s.mu.Unlock()
	s.a.metrics.sessions.Inc()
	defer s.a.metrics.sessions.Dec()
	defer close(ld)
	for {
		_ = conn.SetReadDeadline(time.Now().Add(idleTimeout))
		el, err := r.next()
		if err == nil {
			err = s.handle(el)
		}
		if err != nil {
			s.connLost(conn, err)
			return
		}
	}
}

// handle dispatches one top-level element from the client.
func (s *session) handle(el *element) error {
	s.a.metrics.stanzasIn.Inc()
	if el.Name.Space == nsSM {
		return s.handleSM(el)
	}
	if el.Name.Space != nsClient || (el.Name.Local != "message" && el.Name.Local != "presence" && el.Name.Local != "iq") {
		return &streamError{Condition: "unsupported-stanza-type", Text: "unexpected <" + el.Name.Local + "/>"}
	}
	s.mu.Lock()
	if s.sm != nil {
		s.sm.in++
	}
	s.mu.Unlock()
	el.SetAttr("from", s.jid)
	s.a.route(s, el)
	return nil
}

// connLost handles the end of the session's connection conn.
func (s *session) connLost(conn net.Conn, err error) {
	var se *streamError
	clean := errors.Is(err, errStreamEnd)
	_ = conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	switch {
	case errors.As(err, &se):
		s.a.metrics.streamErrors.WithLabelValues(se.Condition).Inc()
		s.a.log.Info("xmpp: stream error", "jid", s.jid, "err", err)
		s.mu.Lock()
		s.closeOutLocked(conn)
		_, _ = conn.Write(append(se.bytes(), "</stream:stream>"...))
		s.mu.Unlock()
		clean = true
	case clean:
		s.mu.Lock()
		s.closeOutLocked(conn)
		_, _ = io.WriteString(conn, "</stream:stream>")
		s.mu.Unlock()
	}
	_ = conn.Close()
	s.mu.Lock()
	if s.conn != conn { // already resumed elsewhere
		s.mu.Unlock()
		return
	}
	if !clean && s.sm != nil && s.sm.resumable && s.a.ctx.Err() == nil && !s.done {
		s.detached, s.conn = true, nil
		s.a.timers.Add(1)
		s.resumeTimer = time.AfterFunc(s.a.cfg.ResumeTimeout, func() {
			defer s.a.timers.Done()
			s.terminate()
		})
		s.mu.Unlock()
		s.a.log.Debug("xmpp: session waits for resumption", "jid", s.jid)
		return
	}
	s.mu.Unlock()
	s.terminate()
}

// send queues el for the client: it is written at once when connected and
// kept for resending until acknowledged when XEP-0198 is on. The returned
// channel (nil without XEP-0198) is closed on acknowledgement.
func (s *session) send(el *element) (<-chan struct{}, error) {
	return s.sendAck(el, false, true)
}

// sendItem is send for the login presence burst (burst) and without the
// <r/> after each stanza (ask false).
func (s *session) sendItem(el *element, burst, ask bool) error {
	_, err := s.sendAck(el, burst, ask)
	return err
}

func (s *session) sendAck(el *element, burst, ask bool) (<-chan struct{}, error) {
	return s.sendBytesAck(el.Bytes(nsClient), true, burst, ask)
}

// sendBytes is send for a stanza already serialised, in a buffer the
// caller reuses once it returns (stanzaenc.go).
func (s *session) sendBytes(b []byte) (<-chan struct{}, error) {
	return s.sendBytesAck(b, false, false, true)
}

// sendBytesAck queues the stanza b; owned says b is the session's to
// keep (else it is copied when XEP-0198 keeps it for resending).
func (s *session) sendBytesAck(b []byte, owned, burst, ask bool) (<-chan struct{}, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.waitOutLocked() // before the XEP-0198 count: stanzas queue in the order they are counted
	if s.done {
		return nil, errSessionClosed
	}
	var ack chan struct{}
	if s.sm != nil {
		if !burst {
			if err := s.reserveLocked(len(b)); err != nil {
				if s.conn != nil {
					_ = s.conn.Close()
				}
				s.a.log.Info("xmpp: session cut: unacknowledged stanzas", "jid", s.jid, "err", err)
				return nil, err
			}
		} else {
			s.sm.burst++
		}
		if !owned {
			b = bytes.Clone(b)
		}
		ack = make(chan struct{})
		s.sm.unacked = append(s.sm.unacked, smItem{b: b, ack: ack, burst: burst})
		if ask {
			b = append(b, "<r xmlns='urn:xmpp:sm:3'/>"...)
		}
	}
	if s.conn != nil {
		s.queueOutLocked(b)
	}
	s.a.metrics.stanzasOut.Inc()
	return ack, nil
}

// writeRaw writes a nonza (no XEP-0198 counting).
func (s *session) writeRaw(b string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return errSessionClosed
	}
	s.queueOutLocked([]byte(b)) // in order with the stanzas
	return nil
}

// handleSM handles a XEP-0198 element.
func (s *session) handleSM(el *element) error {
	switch el.Name.Local {
	case "enable":
		s.mu.Lock()
		if s.sm != nil {
			s.mu.Unlock()
			return s.writeRaw("<failed xmlns='urn:xmpp:sm:3'><unexpected-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>")
		}
		st := &smState{id: randomID(), resumable: el.AttrValue("resume") == "true" || el.AttrValue("resume") == "1",
			ackSignal: make(chan struct{}, 1)}
		s.sm = st
		s.mu.Unlock()
		resume := ""
		if st.resumable {
			s.a.mu.Lock()
			s.a.resume[st.id] = s
			s.a.mu.Unlock()
			s.a.cl.resumable(s, st.id) // on another hub too (cluster_resume.go)
			resume = " resume='true' max='" + strconv.Itoa(int(s.a.cfg.ResumeTimeout/time.Second)) + "'"
		}
		return s.writeRaw("<enabled xmlns='urn:xmpp:sm:3' id='" + st.id + "'" + resume + "/>")
	case "r":
		s.mu.Lock()
		if s.sm == nil {
			s.mu.Unlock()
			return &streamError{Condition: "unsupported-stanza-type", Text: "stream management is not enabled"}
		}
		h := s.sm.in
		s.mu.Unlock()
		return s.writeRaw("<a xmlns='urn:xmpp:sm:3' h='" + strconv.FormatUint(uint64(h), 10) + "'/>")
	case "a":
		h, err := strconv.ParseUint(el.AttrValue("h"), 10, 32)
		if err != nil {
			return &streamError{Condition: "bad-format", Text: "bad h attribute"}
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.ackLocked(uint32(h))
	case "resume":
		return s.writeRaw("<failed xmlns='urn:xmpp:sm:3'><unexpected-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>")
	}
	return &streamError{Condition: "unsupported-stanza-type", Text: "unknown stream management element"}
}

// ackLocked drops the stanzas the client acknowledged up to h.
func (s *session) ackLocked(h uint32) error {
	if s.sm == nil {
		return &streamError{Condition: "unsupported-stanza-type", Text: "stream management is not enabled"}
	}
	n := h - s.sm.acked
	if int(n) > len(s.sm.unacked) || n > 1<<31 {
		return &streamError{Condition: "undefined-condition", Text: "acknowledged more stanzas than were sent"}
	}
	for _, it := range s.sm.unacked[:n] {
		close(it.ack)
	}
	s.releaseLocked(s.sm.unacked[:n])
	s.sm.unacked = append(s.sm.unacked[:0:0], s.sm.unacked[n:]...)
	s.sm.acked = h
	return nil
}

// terminate ends the session for good: it leaves the routing tables,
// broadcasts unavailable presence, and fails waiters for acknowledgements.
func (s *session) terminate() {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		return
	}
	s.done = true
	close(s.closed)
	conn := s.conn
	s.conn = nil
	s.closeOutLocked(s.out.conn) // its pending bytes no longer count
	if s.resumeTimer != nil && s.resumeTimer.Stop() {
		s.a.timers.Done()
	}
	wasAvailable := s.available
	s.available = false
	if s.sm != nil {
		s.releaseLocked(s.sm.unacked) // the user's bytes; waiters see done
	}
	s.mu.Unlock()
	if conn != nil {
		_ = conn.Close()
	}
	s.a.unregister(s, wasAvailable)
	s.a.log.Debug("xmpp: session ended", "jid", s.jid)
}

// isAvailable reports whether the session sent available presence.
func (s *session) isAvailable() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.available && !s.done
}

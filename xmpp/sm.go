package xmpp

import (
	"strconv"
	"time"
)

// resumeSession resumes the XEP-0198 session named by <resume/> on the
// negotiating connection c. It answers <failed/> and returns nil when the
// session cannot be resumed; the client may then bind a new one.
func (a *Adapter) resumeSession(c *streamConn, el *element) (*session, error) {
	prev := el.AttrValue("previd")
	h, herr := strconv.ParseUint(el.AttrValue("h"), 10, 32)
	a.mu.Lock()
	s := a.resume[prev]
	a.mu.Unlock()
	bare := c.user + "@" + a.cfg.Domain
	if s == nil && herr == nil && a.cl != nil {
		return a.resumeRemote(c, prev, uint32(h)) // held by another hub, if any (cluster_resume.go)
	}
	if s == nil || herr != nil || s.bare != bare || c.anon {
		return nil, c.write("<failed xmlns='urn:xmpp:sm:3'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>")
	}
	// An old connection that has not noticed its end yet is closed first.
	s.mu.Lock()
	old, ld := s.conn, s.loopDone
	s.mu.Unlock()
	if old != nil {
		_ = old.Close()
		select {
		case <-ld:
		case <-time.After(writeTimeout):
		}
	}
	s.mu.Lock()
	if s.done || s.sm == nil {
		s.mu.Unlock()
		return nil, c.write("<failed xmlns='urn:xmpp:sm:3'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>")
	}
	if s.resumeTimer != nil && s.resumeTimer.Stop() {
		a.timers.Done()
	}
	s.resumeTimer = nil
	if err := s.ackLocked(uint32(h)); err != nil {
		s.mu.Unlock()
		return nil, err
	}
	s.detached, s.conn, s.raw, s.remote = false, c.conn, c.raw, c.raw.RemoteAddr().String()
	in := s.sm.in
	var out []byte
	out = append(out, "<resumed xmlns='urn:xmpp:sm:3' previd='"+prev+"' h='"+strconv.FormatUint(uint64(in), 10)+"'/>"...)
	for _, it := range s.sm.unacked {
		out = append(out, it.b...)
	}
	if len(s.sm.unacked) > 0 {
		out = append(out, "<r xmlns='urn:xmpp:sm:3'/>"...)
	}
	resent := len(s.sm.unacked)
	_ = s.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err := s.conn.Write(out)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	a.log.Debug("xmpp: session resumed", "jid", s.jid, "resent", resent)
	return s, nil
}

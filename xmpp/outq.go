package xmpp

import (
	"fmt"
	"net"
	"time"

	"github.com/hubsmith/hub/adapters"
)

// A session's output: what is sent to the client is appended to a queue
// that a writer goroutine, started when there is something to write and
// ended when there is not, writes to the connection, everything queued
// meanwhile in one write. A sender never waits for the client's socket,
// so a topic subscription's deliveries to a session go out in batches
// instead of one write(2) and one TLS record each. (Before, at 10
// subscribers of one topic, unpaced, each subscription's deliveries
// waited on their writes one by one, its bus queue of 1024 envelopes
// filled and QoS 0 was dropped: README, Performance.)
//
// Bounds: past maxOutBytes queued (or half of limits.max_pending_bytes,
// if less) a sender waits until the writer takes a batch, as it waited on
// a blocked write before: a topic subscription's deliveries then wait in
// its bus queue (bounded; QoS 0 past it is dropped and counted, QoS 1
// waits in the durable queue), and a client that reads nothing loses its
// connection after writeTimeout. The publisher and the other subscribers
// are never held. The queued bytes also count in the hub's pending-bytes
// budget (adapters.PendingConn, as MQTT's do): past
// limits.max_pending_bytes_total the sessions with the most pending are
// cut off, counted as slow consumers. Idle, a session keeps no buffer and
// no goroutine.

// maxOutBytes is the most a session queues before senders wait: a batch
// of about 3,000 topic deliveries of 64 bytes.
const maxOutBytes = 1 << 20

// topicQueueLen bounds the deliveries of one topic subscription waiting
// in memory for the session, as mqtt's sessionQueueLen does for an MQTT
// client: a burst the session has not queued yet waits there (past it
// QoS 0 is dropped and counted; QoS 1 of a durable subscription stays in
// its durable queue). With the bus's default of 1024, an unpaced publisher
// outran ten subscribers on a loaded machine.
const topicQueueLen = 16384

// maxOutSpare bounds the buffer a busy session keeps between writes.
const maxOutSpare = 64 << 10

// outQueue is a session's output queue, guarded by the session's mu.
type outQueue struct {
	conn     net.Conn              // the connection buf is for (the session's conn changes on resumption)
	pend     *adapters.PendingConn // conn's account of pending bytes (nil without limits)
	buf      []byte                // queued, not yet written
	spare    []byte                // the writer's previous batch, reused
	writing  bool                  // a writer for conn runs
	inFlight int                   // the bytes of the batch being written
	closed   bool                  // conn failed, was cut off or its stream ended: nothing more is queued for it
	// room, when not nil, is closed when the writer takes a batch or
	// ends: the senders waiting for room wait on it.
	room chan struct{}
}

// closeOutLocked discards what is queued for conn and not yet written,
// and whatever would be queued for it later (s.mu held): before a stream
// error or the stream's end is written to it, when it failed and when the
// session ends. A running writer ends.
func (s *session) closeOutLocked(conn net.Conn) {
	q := &s.out
	if q.conn != nil && q.conn != conn {
		return // the queue is another (newer) connection's
	}
	if q.pend != nil {
		q.pend.Close()
	}
	q.wakeLocked()
	*q = outQueue{conn: conn, closed: true}
}

// outBound is the bytes queued past which senders wait.
func (s *session) outBound() int {
	n := maxOutBytes
	if l := s.a.cfg.Auth.Limits(); l != nil {
		if m := l.Config().MaxPendingBytes; m > 0 && m/2 < int64(n) {
			n = int(m / 2)
		}
	}
	return n
}

// waitOutLocked waits, s.mu held (released meanwhile), until the bytes
// queued and being written for s.conn are under outBound; at once when
// the session has no connection.
func (s *session) waitOutLocked() {
	bound := -1
	for !s.done && s.conn != nil && s.out.conn == s.conn && !s.out.closed && len(s.out.buf)+s.out.inFlight > 0 {
		if bound < 0 {
			bound = s.outBound()
		}
		if len(s.out.buf)+s.out.inFlight < bound {
			return
		}
		if s.out.room == nil {
			s.out.room = make(chan struct{})
		}
		room := s.out.room
		s.mu.Unlock()
		t := time.NewTimer(writeTimeout) // the writer's deadline ends it sooner
		select {
		case <-room:
		case <-s.closed:
		case <-t.C:
		}
		t.Stop()
		s.mu.Lock()
	}
}

// wakeLocked wakes the senders waiting for room.
func (q *outQueue) wakeLocked() {
	if q.room != nil {
		close(q.room)
		q.room = nil
	}
}

// queueOutLocked queues b (copied) for s.conn, which is not nil, and
// starts the writer if none runs (s.mu held). Past the pending bounds it
// closes the connection instead.
func (s *session) queueOutLocked(b []byte) {
	q := &s.out
	if q.conn != s.conn { // a new connection (resumption): what was queued was for the old one
		if q.pend != nil {
			q.pend.Close()
		}
		q.wakeLocked()
		*q = outQueue{conn: s.conn}
		if l := s.a.cfg.Auth.Limits(); l != nil {
			c := s.conn
			// Called when the hub-wide budget cuts this connection off for
			// another's write: no session lock is taken (closing it ends
			// the reader, which ends or detaches the session).
			q.pend = l.NewPendingConn(func(err error) {
				s.a.log.Info("xmpp: session cut off", "jid", s.jid, "err", err)
				_ = c.Close()
			})
		}
	}
	if q.closed {
		return
	}
	var err error
	if q.pend != nil {
		err = q.pend.Add(len(b))
	} else if len(q.buf)+len(b) > adapters.DefaultMaxPendingBytes {
		err = fmt.Errorf("%w (%d bytes)", adapters.ErrSlowConsumer, adapters.DefaultMaxPendingBytes)
	}
	if err != nil {
		s.a.log.Info("xmpp: session cut off", "jid", s.jid, "err", err)
		_ = s.conn.Close()
		s.closeOutLocked(s.conn)
		return
	}
	q.buf = append(q.buf, b...)
	if !q.writing {
		q.writing = true
		s.a.timers.Add(1)
		go s.writeOut(q.conn)
	}
}

// writeOut writes the queue to c until it is empty, c fails or the
// session moved to another connection.
func (s *session) writeOut(c net.Conn) {
	defer s.a.timers.Done()
	q := &s.out
	s.mu.Lock()
	defer s.mu.Unlock()
	for q.conn == c && !q.closed && len(q.buf) > 0 {
		batch, pend := q.buf, q.pend
		q.buf, q.spare, q.inFlight = q.spare[:0], nil, len(batch)
		q.wakeLocked()
		s.mu.Unlock()
		_ = c.SetWriteDeadline(time.Now().Add(writeTimeout))
		_, err := c.Write(batch)
		if pend != nil {
			pend.Done(len(batch)) // a closed account ignores it
		}
		s.mu.Lock()
		if err != nil {
			_ = c.Close() // the reader ends the session (or detaches it)
			s.closeOutLocked(c)
			return
		}
		if q.conn == c {
			q.inFlight = 0
			q.wakeLocked()
			if cap(batch) <= maxOutSpare {
				q.spare = batch[:0]
			}
		}
	}
	if q.conn == c && !q.closed { // idle: nothing kept
		q.buf, q.spare, q.writing = nil, nil, false
		q.wakeLocked()
	}
}

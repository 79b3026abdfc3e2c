package xmpp

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// Bounds of what XEP-0198 keeps for resending, by bytes as well as by
// count (maxUnacked): a detached session's buffer is memory the client
// decides on.
const (
	// maxUnackedBytes bounds the unacknowledged stanza bytes of one
	// session, maxUnackedUserBytes those of all the sessions of one user.
	maxUnackedBytes     = 4 << 20
	maxUnackedUserBytes = 16 << 20
	// burstWindow is how many stanzas of the login presence burst may be
	// unacknowledged at once; the rest wait for acknowledgements, so the
	// burst of a roster with thousands of topic JIDs is paced by the
	// client and counts against neither bound. burstAsk is how often in
	// the burst an <r/> asks for one.
	burstWindow = 256
	burstAsk    = 64
	// burstStall is how long the burst waits for an acknowledgement
	// before it asks again.
	burstStall = 5 * time.Second
)

// errUnackedBytes cuts a session whose client does not acknowledge.
var errUnackedBytes = errors.New("xmpp: too many unacknowledged bytes")

// smUsage is the unacknowledged bytes of every user's XEP-0198 sessions.
type smUsage struct {
	mu sync.Mutex
	m  map[string]int64
}

// add changes user's total by delta and reports whether it stays within
// limit (a negative delta always does).
func (u *smUsage) add(user string, delta, limit int64) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m == nil {
		u.m = make(map[string]int64)
	}
	n := u.m[user] + delta
	if delta > 0 && n > limit {
		return false
	}
	if n <= 0 {
		delete(u.m, user)
	} else {
		u.m[user] = n
	}
	return true
}

// get returns user's total.
func (u *smUsage) get(user string) int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.m[user]
}

// reserveLocked counts n more unacknowledged bytes for s (s.mu held),
// or says which bound refuses them.
func (s *session) reserveLocked(n int) error {
	if len(s.sm.unacked)-s.sm.burst >= maxUnacked {
		return errors.New("xmpp: too many unacknowledged stanzas")
	}
	if s.sm.bytes+int64(n) > maxUnackedBytes {
		return fmt.Errorf("%w: %d of %d for the session", errUnackedBytes, s.sm.bytes, maxUnackedBytes)
	}
	if !s.a.smUse.add(s.bare, int64(n), maxUnackedUserBytes) {
		return fmt.Errorf("%w: %d of %d for %s", errUnackedBytes, s.a.smUse.get(s.bare), maxUnackedUserBytes, s.bare)
	}
	s.sm.bytes += int64(n)
	return nil
}

// releaseLocked uncounts acknowledged (or abandoned) items (s.mu held).
func (s *session) releaseLocked(items []smItem) {
	var n int64
	for _, it := range items {
		if it.burst {
			s.sm.burst--
			continue
		}
		n += int64(len(it.b))
	}
	if n > 0 {
		s.sm.bytes -= n
		s.a.smUse.add(s.bare, -n, 0)
	}
	select {
	case s.sm.ackSignal <- struct{}{}:
	default:
	}
}

// sendBurst sends the login presence burst: at once without XEP-0198;
// with it, from a goroutine of its own, at most burstWindow stanzas
// unacknowledged at a time, uncounted by the bounds.
func (s *session) sendBurst(els []*element) {
	s.mu.Lock()
	sm, done := s.sm, s.done
	s.mu.Unlock()
	if done || len(els) == 0 {
		return
	}
	if sm == nil {
		for _, el := range els {
			if _, err := s.send(el); err != nil {
				return
			}
		}
		return
	}
	s.a.timers.Add(1)
	go func() {
		defer s.a.timers.Done()
		for i, el := range els {
			if !s.waitBurst(sm) {
				return
			}
			if err := s.sendItem(el, true, i%burstAsk == burstAsk-1 || i == len(els)-1); err != nil {
				return
			}
		}
	}()
}

// waitBurst waits until fewer than burstWindow burst stanzas are
// unacknowledged; false when the session or the adapter ended.
func (s *session) waitBurst(sm *smState) bool {
	for {
		s.mu.Lock()
		n, done := sm.burst, s.done
		s.mu.Unlock()
		if done {
			return false
		}
		if n < burstWindow {
			return true
		}
		t := time.NewTimer(burstStall)
		select {
		case <-sm.ackSignal:
		case <-t.C:
			_ = s.writeRaw("<r xmlns='urn:xmpp:sm:3'/>")
		case <-s.closed:
			t.Stop()
			return false
		case <-s.a.ctx.Done():
			t.Stop()
			return false
		}
		t.Stop()
	}
}

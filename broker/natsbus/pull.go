package natsbus

import (
	"errors"
	"time"

	"github.com/nats-io/nats.go"
)

// releaseInbox drops the inbox of a puller that has stopped, handing back
// (nacking) whatever JetStream sent it that the puller did not take. The
// inbox is drained, not just unsubscribed: its interest goes first, so
// that JetStream stops choosing the pull request still out on it, and
// what was already on its way is read until the server confirms it has
// processed that. Unsubscribed at once, the inbox lost what was in
// flight, and that came again only after AckWait. Over a route, a
// consumer leader on another server may still send in the moment before
// it learns the inbox is gone; that envelope waits for AckWait.
func (b *Bus) releaseInbox(inbox *nats.Subscription) {
	if inbox == nil {
		return
	}
	nack := func(m *nats.Msg) {
		if m.Header.Get("Status") == "" {
			b.ack(m.Reply, "-NAK", true)
		}
	}
	if err := inbox.Drain(); err != nil {
		for {
			m, err := inbox.NextMsg(time.Millisecond)
			if err != nil {
				break
			}
			nack(m)
		}
		_ = inbox.Unsubscribe()
		return
	}
	// The drain ends (the subscription closes) once the server has
	// answered a flush and nothing is left to read; bounded in case the
	// connection stalls meanwhile.
	deadline := time.Now().Add(ackTimeout)
	for time.Now().Before(deadline) {
		m, err := inbox.NextMsg(10 * time.Millisecond)
		if errors.Is(err, nats.ErrTimeout) {
			if !inbox.IsValid() {
				return
			}
			continue
		}
		if err != nil {
			return
		}
		nack(m)
	}
	_ = inbox.Unsubscribe()
}

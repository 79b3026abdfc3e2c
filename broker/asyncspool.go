package broker

import "context"

// AsyncSpool is a Spool that can take a durable queue write without a
// goroutine waiting for it: Memory.PublishAsync then costs no goroutine
// per message, and the spool can write the envelopes that arrive together
// in one go.
type AsyncSpool interface {
	// EnqueueAsync is Enqueue that returns at once and calls done with
	// its result once the write is durable or has failed. done runs on
	// the spool's own goroutine: it must not block, nor call the spool.
	EnqueueAsync(ctx context.Context, e *Envelope, refs []QueueRef, done func(error))
}

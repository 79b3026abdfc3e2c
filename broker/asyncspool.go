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
	//
	// withdraw, when not nil, takes the write back if the spool has not
	// begun it: it then reports true, nothing is written and done is never
	// called. Memory withdraws the write of an envelope its one durable
	// subscriber acknowledged before it was stored (early delivery): that
	// subscriber's queue has nothing to keep, so nothing reaches the disk.
	EnqueueAsync(ctx context.Context, e *Envelope, refs []QueueRef, done func(error)) (withdraw func() bool)
}

package broker

import (
	"context"
	"sync/atomic"
	"time"
)

// Delivery is one envelope handed to a subscriber. The handler acks it
// once the subscriber has taken it (an MQTT PUBACK or PUBCOMP, an XMPP
// XEP-0198 <a/>, a CoAP ACK, a frame written for QoS 0), or nacks it to
// have it delivered again. Acking or nacking twice is harmless.
type Delivery struct {
	// Envelope is shared with other subscribers: treat it as read-only.
	Envelope *Envelope
	// QoS is the delivery QoS: min(publish QoS, subscription QoS, the
	// highest QoS of the filters that matched).
	QoS byte
	// Retained marks a retained value replayed when a filter was added.
	Retained bool
	// RetainFlag is the retain flag the subscriber should see: set for a
	// replayed retained value, and for a live retained publish through a
	// RetainAsPublished filter.
	RetainFlag bool
	// Redelivered is set when this envelope was handed to the subscriber
	// before (MQTT DUP).
	Redelivered bool
	// IDs are the subscription identifiers of the filters that matched.
	IDs []int

	sub  *memSub
	it   *item
	gen  uint64
	ctx  context.Context // the attachment's, done when it detaches
	done atomic.Bool
	// ext is set for a delivery made by another Bus (NewDelivery).
	ext *DeliveryFuncs
}

// DeliveryFuncs are what acknowledging a delivery does, for a Bus outside
// this package (the NATS bus) that makes its own deliveries.
type DeliveryFuncs struct {
	// Ack acknowledges the delivery.
	Ack func()
	// Nack hands it back, to be delivered again after delay.
	Nack func(delay time.Duration)
}

// NewDelivery returns a delivery of d's exported fields, belonging to the
// attachment whose context is ctx, whose Ack and Nack (each at most once,
// as for the in-process bus) call fs.
func NewDelivery(ctx context.Context, d *Delivery, fs DeliveryFuncs) *Delivery {
	return &Delivery{Envelope: d.Envelope, QoS: d.QoS, Retained: d.Retained, RetainFlag: d.RetainFlag,
		Redelivered: d.Redelivered, IDs: d.IDs, ctx: ctx, ext: &fs}
}

// Context returns the context of the attachment the delivery belongs
// to: done once the subscription detaches.
func (d *Delivery) Context() context.Context {
	if d.ctx == nil {
		return context.Background()
	}
	return d.ctx
}

// Ack acknowledges the delivery: it leaves the window and, from a durable
// queue, is removed.
func (d *Delivery) Ack() {
	if d.ext != nil {
		if d.done.CompareAndSwap(false, true) && d.ext.Ack != nil {
			d.ext.Ack()
		}
		return
	}
	if d.sub == nil || !d.done.CompareAndSwap(false, true) {
		return
	}
	d.sub.ack(d)
}

// Nack hands the delivery back: it is delivered again, before anything
// newer, marked Redelivered.
func (d *Delivery) Nack() { d.NackAfter(0) }

// NackAfter is Nack with a delay; the delivery keeps its place in the
// window meanwhile, so nothing newer overtakes it in a window of one.
func (d *Delivery) NackAfter(delay time.Duration) {
	if d.ext != nil {
		if d.done.CompareAndSwap(false, true) && d.ext.Nack != nil {
			d.ext.Nack(delay)
		}
		return
	}
	if d.sub == nil || !d.done.CompareAndSwap(false, true) {
		return
	}
	if delay <= 0 {
		d.sub.nack(d)
		return
	}
	time.AfterFunc(delay, func() { d.sub.nack(d) })
}

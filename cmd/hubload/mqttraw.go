package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hubsmith/hub/mqttwire"
)

// The lean MQTT 3.1.1 client, hubload's default (--mqtt-client lean). A
// load generator must cost far less than the server it measures; paho
// spends a goroutine hand-off, a token and several allocations on every
// message. Here each connection has one reader goroutine (a 64 KiB
// bufio.Reader, packets decoded in place) and one writer goroutine that
// writes whatever has queued since its last write in one syscall:
// publications are encoded straight into that output buffer, and the
// acknowledgements a read batch needs (PUBACK, PUBREC, PUBREL, PUBCOMP) are
// gathered and queued together once the reader has nothing more buffered.

// maxPacketSize bounds the packets the lean client accepts: a payload of
// the largest --size plus a generous topic.
const maxPacketSize = maxPayloadSize + 1<<16

const (
	leanReadBuffer = 64 << 10
	// leanMaxQueued bounds the bytes a publisher queues before it waits for
	// the writer: QoS 0 has no other back-pressure.
	leanMaxQueued = 256 << 10
	// leanAckBatch is how many acknowledgement bytes the reader gathers at
	// most before queueing them, when the socket keeps it busy.
	leanAckBatch = 16 << 10
	// leanFlushSize is how many bytes a publisher queues at most before it
	// has them written, when nothing makes it wait.
	leanFlushSize = 32 << 10
	// leanReleaseBatch is how many PUBACKs the reader handles at most
	// before it wakes the publisher, when the socket keeps it busy.
	leanReleaseBatch = 256
	// leanKeepalive is the CONNECT keepalive; the writer pings after half
	// of it without writing.
	leanKeepalive = 60 * time.Second
	// leanCloseTimeout bounds writing the DISCONNECT when closing.
	leanCloseTimeout = time.Second
)

// errConnClosed is the error of a connection that close ended.
var errConnClosed = errors.New("mqtt: connection closed")

// leanConn is one connection of the lean client, publishing or subscribing.
type leanConn struct {
	conn    net.Conn
	br      *bufio.Reader
	deliver func([]byte) // subscribers: called from the reader, payload valid during the call
	onLost  func(error)
	qos     byte // of publications
	window  int  // unacknowledged publications allowed (QoS >= 1)
	size    int  // payload bytes
	text    bool // text payload header

	wake       chan struct{} // cap 1: output queued for the writer
	space      chan struct{} // cap 1: the writer took the queue
	progress   chan struct{} // cap 1: an acknowledgement arrived or publications were written
	suback     chan []byte   // cap 1: a SUBACK's return codes
	done       chan struct{} // closed when the connection has ended
	doneOnce   sync.Once
	readerDone chan struct{}
	writerDone chan struct{}

	wmu sync.Mutex // held while writing to conn

	mu      sync.Mutex
	out     []byte // queued output
	outMsgs uint64 // publications in out
	closing bool
	err     error // why the connection ended
	// Publications in flight, by packet id (QoS >= 1), and the counters
	// settle reads.
	inflight  int
	refill    int  // free slots a full window waits for: window/4, at least 1
	refilling bool // the window filled and has not yet freed refill slots
	used      [1 << 16 / 64]uint64
	nextID    uint16
	attempted uint64
	acked     uint64
	written   atomic.Uint64
}

// dialLean connects to addr and completes the MQTT handshake, bounded by
// ctx; the connection is then handed to newLeanConn.
func dialLean(ctx context.Context, addr string, spec mqttwire.ConnectSpec) (net.Conn, *bufio.Reader, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	fail := func(format string, err error) (net.Conn, *bufio.Reader, error) {
		stop()
		_ = conn.Close()
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		return nil, nil, fmt.Errorf(format, err)
	}
	if _, err := conn.Write(mqttwire.AppendConnect(nil, spec)); err != nil {
		return fail("write CONNECT: %w", err)
	}
	br := bufio.NewReaderSize(conn, leanReadBuffer)
	var scratch []byte
	p, err := mqttwire.ReadPacket(br, &scratch, maxPacketSize)
	if err != nil {
		return fail("read CONNACK: %w", err)
	}
	ack, err := mqttwire.ParseConnack(p, mqttwire.V311)
	if err == nil {
		err = ack.Err()
	}
	if err != nil {
		return fail("connect: %w", err)
	}
	if !stop() {
		_ = conn.Close()
		return nil, nil, fmt.Errorf("connect: %w", ctx.Err())
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, br, nil
}

// newLeanConn returns the client of a connected conn; start starts it.
func newLeanConn(conn net.Conn, br *bufio.Reader, deliver func([]byte), onLost func(error)) *leanConn {
	return &leanConn{
		conn: conn, br: br, deliver: deliver, onLost: onLost, nextID: 1, window: 1, refill: 1,
		wake: make(chan struct{}, 1), space: make(chan struct{}, 1), progress: make(chan struct{}, 1),
		suback: make(chan []byte, 1), done: make(chan struct{}),
		readerDone: make(chan struct{}), writerDone: make(chan struct{}),
	}
}

// start starts the reader and the writer; close ends them.
func (c *leanConn) start() *leanConn {
	go c.readLoop()
	go c.writeLoop()
	return c
}

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// fail ends the connection with err, reported through onLost unless close
// ended it.
func (c *leanConn) fail(err error) {
	c.mu.Lock()
	report := c.err == nil && !c.closing
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
	c.doneOnce.Do(func() { close(c.done) })
	_ = c.conn.Close()
	if report && c.onLost != nil {
		c.onLost(fmt.Errorf("connection lost: %w", err))
	}
}

// queue appends control packets to the output, without a bound.
func (c *leanConn) queue(b []byte) {
	c.mu.Lock()
	wasEmpty := len(c.out) == 0
	c.out = append(c.out, b...)
	c.mu.Unlock()
	if wasEmpty {
		notify(c.wake)
	}
}

// write writes b to the socket, between the writer's writes.
func (c *leanConn) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if _, err := c.conn.Write(b); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// readLoop reads and handles packets until the connection ends. What a
// read batch calls for is done once the reader has nothing more buffered:
// the acknowledgements it owes are written together, by the reader itself
// (handing them to the writer would cost a goroutine wake-up per batch),
// and the publisher waiting for its window is woken once for all the
// PUBACKs read.
func (c *leanConn) readLoop() {
	defer close(c.readerDone)
	var scratch, acks []byte
	released := 0
	for {
		if c.br.Buffered() == 0 || len(acks) >= leanAckBatch || released >= leanReleaseBatch {
			if len(acks) > 0 {
				if err := c.write(acks); err != nil {
					c.fail(err)
					return
				}
				acks = acks[:0]
			}
			if released > 0 {
				notify(c.progress)
				released = 0
			}
		}
		p, err := mqttwire.ReadPacket(c.br, &scratch, maxPacketSize)
		if err != nil {
			c.fail(fmt.Errorf("read: %w", err))
			return
		}
		var freed bool
		if acks, freed, err = c.handle(p, acks); err != nil {
			c.fail(err)
			return
		}
		if freed {
			released++
		}
	}
}

// handle acts on one packet from the server, appending the
// acknowledgements it needs to acks; freed says a publication was
// acknowledged and enough of the window is free to wake the publisher.
func (c *leanConn) handle(p mqttwire.Packet, acks []byte) (_ []byte, freed bool, err error) {
	switch p.Type {
	case mqttwire.Publish:
		var v mqttwire.PublishView
		v, err = mqttwire.ParsePublish(p, mqttwire.V311)
		if err != nil {
			return acks, false, err
		}
		if c.deliver != nil {
			c.deliver(v.Payload)
		}
		switch v.QoS {
		case 1:
			acks = mqttwire.AppendAck(acks, mqttwire.Puback, v.ID)
		case 2:
			acks = mqttwire.AppendAck(acks, mqttwire.Pubrec, v.ID)
		}
	case mqttwire.Pubrel:
		var a mqttwire.AckView
		a, err = mqttwire.ParseAck(p, mqttwire.V311)
		if err != nil {
			return acks, false, err
		}
		acks = mqttwire.AppendAck(acks, mqttwire.Pubcomp, a.ID)
	case mqttwire.Puback, mqttwire.Pubcomp:
		var a mqttwire.AckView
		a, err = mqttwire.ParseAck(p, mqttwire.V311)
		if err != nil {
			return acks, false, err
		}
		wake, err := c.release(a.ID)
		return acks, wake, err
	case mqttwire.Pubrec:
		var a mqttwire.AckView
		a, err = mqttwire.ParseAck(p, mqttwire.V311)
		if err != nil {
			return acks, false, err
		}
		acks = mqttwire.AppendAck(acks, mqttwire.Pubrel, a.ID)
	case mqttwire.Suback:
		var codes []byte
		_, codes, err = mqttwire.ParseSuback(p, mqttwire.V311)
		if err != nil {
			return acks, false, err
		}
		select {
		case c.suback <- append([]byte(nil), codes...):
		default:
		}
	case mqttwire.Pingresp:
	default:
		return acks, false, fmt.Errorf("%w: unexpected packet type %d (%s) from the server", mqttwire.ErrMalformed, p.Type, mqttwire.Name(p.Type))
	}
	return acks, false, nil
}

// release frees packet id once its publication is acknowledged.
func (c *leanConn) release(id uint16) (wake bool, err error) {
	c.mu.Lock()
	w, bit := id/64, uint64(1)<<(id%64)
	if c.used[w]&bit == 0 {
		c.mu.Unlock()
		return false, fmt.Errorf("%w: acknowledgement of packet id %d, which is not in flight", mqttwire.ErrMalformed, id)
	}
	c.used[w] &^= bit
	c.inflight--
	c.acked++
	wake = c.inflight <= c.window-c.refill
	c.mu.Unlock()
	return wake, nil
}

// writeLoop writes the queued output, each time all of it in one write,
// until the connection ends or close has had its DISCONNECT written.
func (c *leanConn) writeLoop() {
	defer close(c.writerDone)
	ping := time.NewTicker(leanKeepalive / 2)
	defer ping.Stop()
	var free []byte
	wrote := false
	for {
		select {
		case <-c.wake:
		case <-ping.C:
			if !wrote {
				c.queue(mqttwire.AppendPingreq(nil))
			}
			wrote = false
		case <-c.done:
			return
		}
		c.mu.Lock()
		buf, n := c.out, c.outMsgs
		c.out, c.outMsgs = free[:0], 0
		closing := c.closing
		c.mu.Unlock()
		notify(c.space)
		if len(buf) > 0 {
			if err := c.write(buf); err != nil {
				c.fail(err)
				return
			}
			wrote = true
			if n > 0 {
				c.written.Add(n)
				notify(c.progress)
			}
		}
		free = buf
		if cap(free) > 4*leanMaxQueued {
			free = nil // one huge payload: do not keep its buffer
		}
		if closing {
			c.mu.Lock()
			empty := len(c.out) == 0
			c.mu.Unlock()
			if empty {
				return
			}
		}
	}
}

// publishFrame queues one publication of the run's header h (its send
// time is taken here, as it is encoded) on topic, waiting while c.window
// publications are unacknowledged or the output queue is full.
func (c *leanConn) publishFrame(ctx context.Context, topic string, h header) error {
	c.mu.Lock()
	for {
		if c.err != nil {
			err := c.err
			c.mu.Unlock()
			return err
		}
		if c.qos > 0 && c.inflight >= c.window {
			c.refilling = true
		}
		if c.refilling && c.inflight <= c.window-c.refill {
			c.refilling = false
		}
		var wait chan struct{}
		switch {
		case c.refilling:
			wait = c.progress
		case len(c.out) >= leanMaxQueued:
			wait = c.space
		}
		if wait == nil {
			break
		}
		// About to wait: what is queued goes out first.
		wasQueued := len(c.out) > 0
		c.mu.Unlock()
		if wasQueued {
			notify(c.wake)
		}
		select {
		case <-wait:
		case <-c.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		c.mu.Lock()
	}
	var id uint16
	if c.qos > 0 {
		for {
			id = c.nextID
			c.nextID++
			if c.nextID == 0 {
				c.nextID = 1
			}
			if w, bit := id/64, uint64(1)<<(id%64); c.used[w]&bit == 0 {
				c.used[w] |= bit
				break
			}
		}
		c.inflight++
	}
	h.SentNs = time.Now().UnixNano()
	if c.text {
		c.out = mqttwire.AppendPublishHead(c.out, mqttwire.PublishHeader{Topic: topic, QoS: c.qos, ID: id}, max(c.size, textHeaderSize))
		c.out = appendTextPayload(c.out, h, c.size)
	} else {
		c.out = mqttwire.AppendPublishHead(c.out, mqttwire.PublishHeader{Topic: topic, QoS: c.qos, ID: id}, max(c.size, headerSize))
		c.out = appendPayload(c.out, h, c.size)
	}
	c.outMsgs++
	c.attempted++
	full := len(c.out) >= leanFlushSize
	c.mu.Unlock()
	if full {
		notify(c.wake)
	}
	return nil
}

// flush has the writer write what publishFrame queued. publishFrame
// itself only does so once leanFlushSize bytes are queued or before it
// waits, so that an unpaced publisher writes in batches.
func (c *leanConn) flush() { notify(c.wake) }

// settle waits until every publication is acknowledged (QoS >= 1) or
// written to the socket (QoS 0), or ctx or the connection ends, and
// returns how many were.
func (c *leanConn) settle(ctx context.Context) (uint64, error) {
	c.flush()
	for {
		c.mu.Lock()
		n, all := c.acked, c.inflight == 0
		if c.qos == 0 {
			n = c.written.Load()
			all = n == c.attempted
		}
		err := c.err
		c.mu.Unlock()
		if all {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		select {
		case <-c.progress:
		case <-c.done:
		case <-ctx.Done():
			return n, fmt.Errorf("waiting for the broker: %w", ctx.Err())
		}
	}
}

// subscribe subscribes to filter at qos and waits for the SUBACK.
func (c *leanConn) subscribe(ctx context.Context, filter string, qos byte) error {
	c.queue(mqttwire.AppendSubscribe(nil, mqttwire.V311, 1, qos, filter))
	select {
	case codes := <-c.suback:
		if len(codes) != 1 || codes[0] == 0x80 {
			return fmt.Errorf("subscribe %q: refused by the broker (SUBACK % x)", filter, codes)
		}
		return nil
	case <-c.done:
		c.mu.Lock()
		defer c.mu.Unlock()
		return fmt.Errorf("subscribe %q: %w", filter, c.err)
	case <-ctx.Done():
		return fmt.Errorf("subscribe %q: waiting for the SUBACK: %w", filter, ctx.Err())
	}
}

// close sends DISCONNECT, waits up to leanCloseTimeout for it to be
// written and for the server to close the connection, and ends the
// connection and both goroutines.
func (c *leanConn) close() {
	c.mu.Lock()
	c.closing = true
	if c.err == nil {
		c.out = mqttwire.AppendDisconnect(c.out)
	}
	c.mu.Unlock()
	notify(c.wake)
	_ = c.conn.SetWriteDeadline(time.Now().Add(leanCloseTimeout))
	t := time.NewTimer(leanCloseTimeout)
	defer t.Stop()
	select {
	case <-c.writerDone:
	case <-t.C:
		c.fail(errConnClosed) // the reader then ends too
	}
	// The server closes the connection on DISCONNECT: wait for that, as
	// paho does, so that the server is done with the client when close
	// returns (mochi can deadlock closing while clients are still
	// being removed).
	select {
	case <-c.readerDone:
	case <-t.C:
	}
	c.fail(errConnClosed)
	<-c.writerDone
	<-c.readerDone
}

// leanSpec is the CONNECT of a hubload client.
func leanSpec(c *config, clientID string, clean bool) mqttwire.ConnectSpec {
	return mqttwire.ConnectSpec{ClientID: clientID, Username: c.username, Password: c.password,
		KeepAlive: uint16(leanKeepalive / time.Second), Clean: clean}
}

// leanPersistentSub is a lean subscriber with a persistent session, which
// close removes from the broker by connecting once more with a clean
// session.
type leanPersistentSub struct {
	*leanConn
	addr string
	spec mqttwire.ConnectSpec
}

func (p leanPersistentSub) close() {
	p.leanConn.close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if conn, br, err := dialLean(ctx, p.addr, p.spec); err == nil {
		newLeanConn(conn, br, nil, nil).start().close()
	}
}

// newLeanSubscriber returns a transport.newSubscriber for lean MQTT
// subscribers on url at c.qos.
func newLeanSubscriber(c *config, url string) func(context.Context, int, string, func([]byte), func(error)) (subscriber, error) {
	return func(ctx context.Context, idx int, topic string, deliver func([]byte), onLost func(error)) (subscriber, error) {
		addr, err := mqttHostPort(url)
		if err != nil {
			return nil, err
		}
		id := fmt.Sprintf("%s-sub-%d", c.clientPrefix, idx)
		conn, br, err := dialLean(ctx, addr, leanSpec(c, id, !c.persistent))
		if err != nil {
			return nil, err
		}
		lc := newLeanConn(conn, br, deliver, onLost).start()
		if err := lc.subscribe(ctx, topic, c.qos); err != nil {
			lc.close()
			return nil, err
		}
		if c.persistent {
			return leanPersistentSub{lc, addr, leanSpec(c, id, true)}, nil
		}
		return lc, nil
	}
}

// leanTransport publishes and subscribes over MQTT at c.url with the lean
// client.
func leanTransport(c *config) transport {
	return transport{
		newSubscriber: newLeanSubscriber(c, cmp.Or(c.subURL, c.url)),
		newPublisher: func(ctx context.Context, idx int, onLost func(error)) (publisher, error) {
			addr, err := mqttHostPort(c.url)
			if err != nil {
				return nil, err
			}
			conn, br, err := dialLean(ctx, addr, leanSpec(c, fmt.Sprintf("%s-pub-%d", c.clientPrefix, idx), true))
			if err != nil {
				return nil, err
			}
			lc := newLeanConn(conn, br, nil, onLost)
			lc.qos, lc.window, lc.size, lc.text = c.qos, c.inflight, c.size, c.textPayload
			lc.refill = max(1, c.inflight/4)
			return lc.start(), nil
		},
	}
}

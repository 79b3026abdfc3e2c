package mqtt

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/hubsmith/hub/adapters"
)

// Bounds of a client connection's outgoing bytes.
const (
	// DefaultWriteTimeout bounds one socket write: a client that has not
	// taken the bytes by then is gone or stalled, and its connection is
	// closed (a persistent session keeps its queue for its return), as
	// NATS does with write_deadline.
	DefaultWriteTimeout = 10 * time.Second
	// maxPendingWrite bounds the bytes written by mochi that the socket
	// has not taken yet, a memory bound for bursts to a client that reads
	// slowly; past it the connection is closed as well (NATS:
	// max_pending).
	maxPendingWrite = 16 << 20
	// closeFlushTimeout bounds the flush of what is pending (a refused
	// CONNACK, the last PUBACKs) when a connection is closed.
	closeFlushTimeout = 2 * time.Second
)

// errSlowConsumer closes the connection of a client that does not read.
var errSlowConsumer = errors.New("mqtt: client does not read: pending writes over the bound")

// asyncConn is a client connection whose writes never block: mochi holds
// the client's lock while it writes, and every QoS 1/2 delivery to that
// client takes the lock first (for a packet id), so a socket write blocked
// on a client that stopped reading would block every publisher and the
// bus delivery goroutine. Write queues the bytes (up to maxPendingWrite)
// and a flusher goroutine writes them, each write bounded by a timeout; either bound
// exceeded closes the connection, which ends the client in mochi: a
// persistent session keeps its in-flight messages and gets them again when
// the client returns.
//
// SetDeadline sets only the read deadline (mochi's keepalive); writes have
// their own.
type asyncConn struct {
	net.Conn
	timeout time.Duration         // of one socket write
	slow    func(net.Conn, error) // told once when the connection is closed for a bound

	mu         sync.Mutex
	buf        []byte
	flushing   bool // the flusher goroutine runs
	closing    bool // Close called: flush, then close
	closed     bool
	done       chan struct{} // closed once the connection is closed and flushed
	onDone     func()
	finishOnce sync.Once

	// pend is the connection's account in the hub's pending write budget
	// (nil: maxPendingWrite alone bounds it); limit is its place among
	// the limited connections, or limitErr why it has none (limits.go).
	pend     *adapters.PendingConn
	limit    *adapters.Conn
	limitErr error

	// Parking (park.go). park is nil for a connection never parked (TLS,
	// WebSocket, parking off); rc is the framing under this connection,
	// tcp the socket under that.
	park *parker
	rc   *reasonConn
	tcp  *net.TCPConn
	// reads counts Read calls, for the sweep to see an idle client.
	reads atomic.Uint32
	// requested is parkState == parkRequested, read without mu on every
	// Read.
	requested atomic.Bool
	// Under mu: parkState (parkActive, ...); deadline the read deadline
	// mochi set last (Unix ns, 0: none); expired when a parked client's
	// deadline passed, so that no later one is set and its read times out.
	parkState uint8
	expired   bool
	deadline  int64
	// Under park.mu: the parked connection's poller token (0: not parked).
	token int32
	// resume continues the parked mochi client (mochi.Parker).
	resume func() error
	// The sweep's own: reads at the last sweep, and the sweeps since.
	sweepReads uint32
	idleSweeps uint8
}

// idleWriteBuffer is the most write buffer a connection keeps when its
// flusher finds nothing more to write: the buffer of the last burst (up to
// 64 KiB, the flusher's spare) would otherwise stay with an idle
// connection for as long as it lasts.
const idleWriteBuffer = 512

// newAsyncConn wraps c. Its flusher goroutine runs only while there are
// bytes to write (an idle connection costs no goroutine for it); done is
// called once, when the connection has been closed and what was pending
// written (or given up on).
func newAsyncConn(c net.Conn, timeout time.Duration, slow func(net.Conn, error), done func()) *asyncConn {
	return &asyncConn{Conn: c, timeout: timeout, slow: slow, done: make(chan struct{}), onDone: done}
}

// startFlush runs the flusher unless it runs (c.mu held).
func (c *asyncConn) startFlush() {
	if !c.flushing {
		c.flushing = true
		go c.flush()
	}
}

// finish marks the connection closed and tells the owner, once.
func (c *asyncConn) finish() {
	c.finishOnce.Do(func() {
		if c.pend != nil {
			c.pend.Close()
		}
		c.limit.Release()
		if c.park != nil {
			c.park.unpark(c) // closed while parked: its read ends it
		}
		close(c.done)
		if c.onDone != nil {
			c.onDone()
		}
	})
}

// Write queues b for the flusher. A DISCONNECT to an MQTT 3.1.1 (or 3.1)
// client is dropped: that version has no server DISCONNECT (a client may
// take the packet for a protocol error), the connection is just closed,
// as Mosquitto does; mochi writes one in a few paths (an ACL refusal at
// QoS >= 1, a session the hub refuses after CONNACK).
func (c *asyncConn) Write(b []byte) (int, error) {
	if len(b) >= 2 && b[0] == packets.Disconnect<<4 {
		if rc, ok := c.Conn.(*reasonConn); ok {
			if v := rc.protocolVersion(); v != 0 && v < 5 {
				return len(b), nil
			}
		}
	}
	c.mu.Lock()
	if c.closed || c.closing {
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	if c.pend == nil && len(c.buf)+len(b) > maxPendingWrite {
		c.mu.Unlock()
		err := fmt.Errorf("%w (%d bytes)", errSlowConsumer, maxPendingWrite)
		c.cutOff(err)
		return 0, err
	}
	c.mu.Unlock()
	if c.pend != nil {
		// Not under c.mu: the budget may cut off other connections.
		if err := c.pend.Add(len(b)); err != nil {
			err = fmt.Errorf("mqtt: %w", err)
			c.cutOff(err)
			return 0, err
		}
	}
	c.mu.Lock()
	if c.closed || c.closing {
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	if c.buf == nil {
		c.buf = getWriteBuf()
	}
	c.buf = append(c.buf, b...)
	c.startFlush()
	c.mu.Unlock()
	return len(b), nil
}

// writeBufs are the write buffers of connections with something to write:
// a connection's flusher hands its two back when it finds nothing more, so
// a burst to many connections reuses buffers instead of growing new ones
// from empty in each (the 1->100 fan-out allocated 333 bytes of them a
// delivery), and an idle connection holds none.
var writeBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// getWriteBuf returns an empty buffer from writeBufs.
func getWriteBuf() []byte { return (*writeBufs.Get().(*[]byte))[:0] }

// putWriteBuf gives b to writeBufs unless it is too small to be worth it
// or a large burst's (over 64 KiB).
func putWriteBuf(b []byte) {
	if cap(b) < 4<<10 || cap(b) > 64<<10 {
		return
	}
	b = b[:0]
	writeBufs.Put(&b)
}

// flush writes what is queued, and ends once nothing is (closing the
// connection first when Close asked for it).
func (c *asyncConn) flush() {
	var out []byte
	c.mu.Lock()
	for {
		if c.closed {
			c.flushing = false
			c.mu.Unlock()
			c.finish()
			return
		}
		if len(c.buf) == 0 {
			if !c.closing {
				c.flushing = false
				if cap(c.buf) > idleWriteBuffer {
					// A connection going idle keeps no burst's buffer.
					putWriteBuf(c.buf)
					c.buf = nil
				}
				c.mu.Unlock()
				putWriteBuf(out) // written: the flusher's spare
				return
			}
			c.closed, c.flushing = true, false // closing, all written
			c.mu.Unlock()
			_ = c.Conn.Close()
			c.finish()
			return
		}
		out, c.buf = c.buf, out[:0]
		timeout := c.timeout
		if c.closing {
			timeout = closeFlushTimeout
		}
		c.mu.Unlock()
		_ = c.Conn.SetWriteDeadline(time.Now().Add(timeout))
		n, err := c.Conn.Write(out)
		if c.pend != nil {
			c.pend.Done(n)
		}
		c.mu.Lock()
		if err != nil {
			wasClosed := c.closed || c.closing
			c.closed, c.flushing = true, false
			c.buf = nil
			c.mu.Unlock()
			_ = c.Conn.Close()
			c.finish()
			if !wasClosed && isTimeout(err) {
				c.slow(c.Conn, fmt.Errorf("mqtt: client does not read: write blocked %v: %w", timeout, err))
			}
			return
		}
		if cap(out) > 64<<10 {
			out = nil // a burst's buffer is not kept
		}
	}
}

// Close flushes what is pending (for at most closeFlushTimeout) and closes
// the connection; it does not wait for the flush.
func (c *asyncConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.closing {
		return nil
	}
	c.closing = true
	// The flusher closes the connection (which ends a blocked read) once
	// what is pending is written, or closeFlushTimeout has passed.
	_ = c.Conn.SetWriteDeadline(time.Now().Add(closeFlushTimeout))
	c.startFlush()
	return nil
}

// Read reads from the connection. On a parkable one it counts the read
// and, when a park was asked (requestPark), turns the timeout it brought
// into mochi.ErrParked at a packet boundary, or reads on under mochi's
// deadline.
func (c *asyncConn) Read(p []byte) (int, error) {
	if c.park == nil {
		return c.Conn.Read(p)
	}
	for {
		n, err := c.Conn.Read(p)
		c.reads.Add(1)
		if !c.requested.Load() {
			return n, err
		}
		if c.settlePark(n, err) {
			return 0, mochi.ErrParked
		}
		if n > 0 || !isTimeout(err) {
			return n, err
		}
		// The park's timeout in the middle of a packet: read on.
	}
}

// isTimeout reports a deadline's error (net.Error's Timeout).
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// SetDeadline sets the read deadline only. While a park is asked it is
// noted but not set (the park's deadline is now), and a parked client
// whose deadline passed gets none.
func (c *asyncConn) SetDeadline(t time.Time) error {
	if c.park == nil {
		return c.Conn.SetReadDeadline(t)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = 0
	if !t.IsZero() {
		c.deadline = t.UnixNano()
	}
	if c.parkState == parkRequested || c.expired {
		return nil
	}
	return c.Conn.SetReadDeadline(t)
}

// SetWriteDeadline is ignored: the flusher bounds writes itself.
func (c *asyncConn) SetWriteDeadline(time.Time) error { return nil }

// cutOff ends a connection over its pending bound, or one of the largest
// when all of them are over the hub's budget: what is pending is dropped,
// an MQTT 5 client gets DISCONNECT 0x97 (quota exceeded; 0x89, server
// busy, for the global budget) written after the packet being written, if
// any, and the connection is closed once it is out (or the write timed
// out). MQTT 3.1.1
// has no server DISCONNECT: its connection is just closed. The owner is
// told (slow) once.
func (c *asyncConn) cutOff(err error) {
	code := packets.ErrQuotaExceeded
	if errors.Is(err, adapters.ErrServerBusy) {
		code = packets.ErrServerBusy
	}
	c.mu.Lock()
	if c.closed || c.closing {
		c.mu.Unlock()
		return
	}
	c.buf = nil
	if rc, ok := c.Conn.(*reasonConn); ok && rc.protocolVersion() == 5 {
		c.buf = []byte{packets.Disconnect << 4, 2, code.Code, 0}
	}
	c.closing = true
	// The packet being written, if any, gets the time of any write; the
	// DISCONNECT after it closeFlushTimeout (see flush).
	_ = c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	c.startFlush()
	c.mu.Unlock()
	c.slow(c.Conn, err)
}

// clientReadBuffer is the read buffer mochi gives each client (see
// Adapter.Start).
const clientReadBuffer = 512

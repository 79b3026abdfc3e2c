package mqtt

import (
	"log/slog"
	"maps"
	"net"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
)

// DefaultParkAfter is how long a client on the plain TCP listener may
// send nothing before it is parked (see parker).
const DefaultParkAfter = 2 * time.Second

// Parking states of an asyncConn (asyncConn.parkState, under its mu).
const (
	parkActive    = iota // mochi reads it on the client's goroutine
	parkRequested        // the sweep set its read deadline to now to park it
	parkParked           // no goroutine: the poller watches it
)

// freeAfterParks is how many parks release enough stack (4 KiB each) to
// hand back to the OS at once (see parker.sweep).
const freeAfterParks = 256

// freeEvery bounds how often the parker returns freed memory to the OS: each
// time is a full collection.
const freeEvery = 10 * time.Second

// parker takes idle clients of a plain TCP listener off their goroutines,
// as epoll servers (Mosquitto among them) hold an idle connection: a
// client that has sent nothing for after has its read ended at the next
// packet boundary (its read deadline set to now), mochi returns from its
// read loop with mochi.ErrParked and releases the client's read buffer, and
// the goroutine ends, with its stack (4 KiB at least, the larger part of
// what an idle client costs). The poller (epoll, park_linux.go) watches the
// parked sockets; when one is readable or closed, or its keepalive runs out,
// a new goroutine resumes the client where it was. A client that keeps
// sending is never parked, so busy connections pay one atomic add a read.
//
// One goroutine runs the poller and the sweep (every after/2), which asks
// the connections that read nothing over two sweeps to park and wakes the
// parked ones whose keepalive deadline has passed, so that they end as an
// unparked one would: their read times out.
type parker struct {
	every time.Duration // between sweeps: half the idle time that parks
	poll  *poller
	log   *slog.Logger
	// conns appends the listener's parkable connections to buf.
	conns func(buf []*asyncConn) []*asyncConn
	// end finishes a resumed client's connection as the listener's
	// handle would have (listenerBase.endResumed).
	end func(net.Conn, error)

	mu     sync.Mutex
	parked map[int32]*asyncConn // by poller token
	next   int32
	closed bool
	parks  int // parks since the last return of memory to the OS

	sweeps atomic.Uint64 // sweeps done, for tests

	lastParks int       // parks at the previous sweep (sweep's own)
	lastFree  time.Time // sweep's own
	buf       []*asyncConn

	done chan struct{}
}

// newParker starts a parker; nil and the error when the platform has no
// poller (the connections are then never parked).
func newParker(after time.Duration, log *slog.Logger, conns func([]*asyncConn) []*asyncConn, end func(net.Conn, error)) (*parker, error) {
	pl, err := newPoller()
	if err != nil {
		return nil, err
	}
	p := &parker{
		every: after / 2, poll: pl, log: log, conns: conns, end: end,
		parked: make(map[int32]*asyncConn), done: make(chan struct{}), lastFree: time.Now(),
	}
	go p.run()
	return p, nil
}

// run waits for parked sockets and sweeps, until close.
func (p *parker) run() {
	defer close(p.done)
	next := time.Now().Add(p.every)
	var toks []int32
	for {
		wait := max(time.Until(next), 0)
		var err error
		toks, err = p.poll.wait(toks[:0], int(wait/time.Millisecond)+1)
		if err != nil {
			p.log.Error("mqtt: parked connections: poll", "err", err)
			p.shutdown() // every parked client resumed, none parked again
			return
		}
		for _, t := range toks {
			if t == pollerStop {
				return
			}
			p.mu.Lock()
			c := p.parked[t]
			p.mu.Unlock()
			if c != nil {
				p.unpark(c)
			}
		}
		if !time.Now().Before(next) {
			p.sweep(time.Now())
			next = time.Now().Add(p.every)
		}
	}
}

// sweep asks the connections that read nothing since the last two sweeps
// to park, wakes the parked ones whose deadline has passed, and once a
// burst of parks is over returns the memory they freed to the OS.
func (p *parker) sweep(now time.Time) {
	defer p.sweeps.Add(1)
	p.buf = p.conns(p.buf[:0])
	for i, c := range p.buf {
		p.buf[i] = nil
		if r := c.reads.Load(); r != c.sweepReads {
			c.sweepReads, c.idleSweeps = r, 0
			continue
		}
		if c.idleSweeps < 2 {
			c.idleSweeps++
		}
		if c.idleSweeps >= 2 && c.rc.parkable() {
			c.requestPark(now)
		}
	}
	var expired []*asyncConn
	p.mu.Lock()
	for _, c := range p.parked {
		c.mu.Lock()
		if c.deadline != 0 && now.UnixNano() > c.deadline {
			c.expired = true
			expired = append(expired, c)
		}
		c.mu.Unlock()
	}
	parks := p.parks
	p.mu.Unlock()
	for _, c := range expired {
		p.unpark(c)
	}
	// The stacks of parked goroutines go back to the heap; without a
	// collection and a scavenge they would stay in the process for minutes
	// (the runtime's forced GC is every two), so the RSS that parking saves
	// would not show. Done once the parks of a burst are over.
	if parks == p.lastParks && parks >= freeAfterParks && now.Sub(p.lastFree) >= freeEvery {
		p.mu.Lock()
		p.parks = 0
		p.mu.Unlock()
		parks = 0
		p.lastFree = now
		debug.FreeOSMemory()
	}
	p.lastParks = parks
}

// add parks c, whose mochi client resumes with resume; c's read returned
// mochi.ErrParked.
func (p *parker) add(c *asyncConn, resume func() error) {
	p.mu.Lock()
	c.mu.Lock()
	c.resume = resume
	ok := !p.closed && !c.closed && !c.closing && !c.expired
	if ok {
		p.next++
		for p.next == pollerStop || p.parked[p.next] != nil {
			p.next++
		}
		if err := p.poll.add(c.tcp, p.next); err != nil {
			p.log.Warn("mqtt: park connection", "remote", c.RemoteAddr(), "err", err)
			ok = false
		} else {
			c.token = p.next
			p.parked[p.next] = c
			p.parks++
		}
	}
	if !ok {
		c.parkState = parkActive
	}
	c.mu.Unlock()
	p.mu.Unlock()
	if !ok {
		go c.resumeClient()
	}
}

// unpark resumes c if it is parked.
func (p *parker) unpark(c *asyncConn) {
	p.mu.Lock()
	if c.token == 0 {
		p.mu.Unlock()
		return
	}
	delete(p.parked, c.token)
	c.token = 0
	p.poll.del(c.tcp)
	p.mu.Unlock()
	c.mu.Lock()
	c.parkState = parkActive
	c.mu.Unlock()
	c.reads.Add(1) // not idle: the sweep is not to ask again before it reads
	go c.resumeClient()
}

// close resumes every parked client and stops the poller; clients are
// parked no more.
func (p *parker) close() {
	p.shutdown()
	p.poll.stop()
	<-p.done
	p.poll.close()
}

// shutdown resumes every parked client, and parks none from now on.
func (p *parker) shutdown() {
	p.mu.Lock()
	p.closed = true
	parked := slices.Collect(maps.Values(p.parked))
	p.mu.Unlock()
	for _, c := range parked {
		p.unpark(c)
	}
}

// parkedCount is the number of parked clients.
func (p *parker) parkedCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.parked)
}

// Park holds c's idle client without a goroutine (mochi.Parker).
func (c *asyncConn) Park(resume func() error) { c.park.add(c, resume) }

var _ mochi.Parker = (*asyncConn)(nil)

// resumeClient runs a parked client on this goroutine until it parks again
// or ends; its end is the listener's, as it would have been in handle.
func (c *asyncConn) resumeClient() {
	err := c.resume()
	if err == mochi.ErrParked {
		return
	}
	c.park.end(c, err)
}

// requestPark ends c's read with a timeout, which Read turns into
// mochi.ErrParked at a packet boundary (settlePark).
func (c *asyncConn) requestPark(now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.closing || c.parkState == parkParked {
		return false
	}
	c.parkState = parkRequested
	c.requested.Store(true)
	_ = c.Conn.SetReadDeadline(now)
	return true
}

// settlePark decides a read that returned n, err while a park was asked:
// true to park (nothing read, the timeout the park asked for, and the
// client between packets); otherwise the park is given up and the read
// deadline mochi set restored.
func (c *asyncConn) settlePark(n int, err error) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.parkState != parkRequested {
		return false
	}
	c.requested.Store(false)
	if n == 0 && isTimeout(err) && !c.closed && !c.closing && c.rc.parkable() {
		c.parkState = parkParked
		return true
	}
	c.parkState = parkActive
	_ = c.Conn.SetReadDeadline(unixTime(c.deadline))
	return false
}

// unixTime is the time of a deadline in Unix nanoseconds (0: none).
func unixTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

package adapters

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Accept back-off, as net/http's Server.Serve does it: 5 ms, doubling, at
// most 1 s between tries.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
	// failingFor is how long after its last accept error a listener still
	// counts as failing. While the cause lasts, every try (at most
	// acceptBackoffMax apart) refreshes it; once accept blocks again
	// waiting for clients, the listener is healthy within this time even
	// if nobody connects.
	failingFor = 2 * acceptBackoffMax
)

// Listener states, as ListenerStatus.State reports them.
const (
	// ListenerAccepting: the listener takes connections.
	ListenerAccepting = "accepting"
	// ListenerFailing: accept fails with a temporary error (out of file
	// descriptors, say) and is being retried.
	ListenerFailing = "failing"
	// ListenerStopped: accept failed for good while the listener was open.
	ListenerStopped = "stopped"
	// ListenerClosed: the listener was closed (the adapter stopped).
	ListenerClosed = "closed"
)

// RetryListener is a net.Listener whose Accept survives temporary errors:
// EMFILE, ENFILE, ENOBUFS, ENOMEM, ECONNABORTED and whatever else the
// network stack calls temporary are counted and retried with a back-off
// (5 ms doubling to 1 s, as net/http does) instead of being returned, so an
// accept loop built on it never ends for want of descriptors. Accept
// returns only a connection, or the error that ends the listener. It
// remembers its state for health checks (Status).
type RetryListener struct {
	net.Listener
	log     *slog.Logger
	onError func(error)

	errs      atomic.Uint64
	closeOnce sync.Once
	closed    chan struct{}

	mu        sync.Mutex
	lastErr   error     // the last accept error, nil after a success
	lastErrAt time.Time // when it happened
	stopped   error     // the error that ended Accept while open
}

// NewRetryListener wraps ln. onError, when not nil, is called with each
// temporary accept error (for the adapter's metrics); log receives one
// warning per run of errors and a note when accepting resumes (nil:
// slog.Default()).
func NewRetryListener(ln net.Listener, log *slog.Logger, onError func(error)) *RetryListener {
	if log == nil {
		log = slog.Default()
	}
	return &RetryListener{Listener: ln, log: log, onError: onError, closed: make(chan struct{})}
}

// Accept waits for the next connection, retrying temporary errors.
func (l *RetryListener) Accept() (net.Conn, error) {
	var backoff time.Duration
	var failed uint64 // errors in this run
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			if failed > 0 {
				l.log.Info("accepting again", "addr", l.Addr().String(), "errors", failed)
			}
			l.mu.Lock()
			l.lastErr = nil
			l.mu.Unlock()
			return c, nil
		}
		if l.isClosed() || !TemporaryAcceptError(err) {
			if !l.isClosed() {
				l.mu.Lock()
				l.stopped = err
				l.mu.Unlock()
			}
			return nil, err
		}
		l.errs.Add(1)
		failed++
		l.mu.Lock()
		l.lastErr, l.lastErrAt = err, time.Now()
		l.mu.Unlock()
		if l.onError != nil {
			l.onError(err)
		}
		if failed == 1 {
			l.log.Warn("accept failed; retrying", "addr", l.Addr().String(), "err", err)
		}
		backoff = min(max(2*backoff, acceptBackoffMin), acceptBackoffMax)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-l.closed:
			t.Stop()
			return nil, fmt.Errorf("accept: %w", net.ErrClosed)
		}
	}
}

// Close closes the listener and ends a back-off in progress.
func (l *RetryListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

func (l *RetryListener) isClosed() bool {
	select {
	case <-l.closed:
		return true
	default:
		return false
	}
}

// AcceptErrors is the number of temporary accept errors so far.
func (l *RetryListener) AcceptErrors() uint64 { return l.errs.Load() }

// Status reports the listener's state (one of the Listener* constants)
// and, unless it is accepting, the error behind it.
func (l *RetryListener) Status() (string, error) {
	if l.isClosed() {
		return ListenerClosed, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.stopped != nil:
		return ListenerStopped, l.stopped
	case l.lastErr != nil && time.Since(l.lastErrAt) < failingFor:
		return ListenerFailing, l.lastErr
	}
	return ListenerAccepting, nil
}

// Healthy is nil while the listener accepts; otherwise it says why not.
func (l *RetryListener) Healthy() error {
	state, err := l.Status()
	switch {
	case state == ListenerAccepting:
		return nil
	case err != nil:
		return fmt.Errorf("listener %s %s: %w", l.Addr(), state, err)
	}
	return fmt.Errorf("listener %s %s", l.Addr(), state)
}

// temporary is what net/http's accept loop asks of an error (the method
// is deprecated on net.Error for reads and writes, not for accept).
type temporary interface{ Temporary() bool }

// TemporaryAcceptError reports whether an accept error is worth retrying:
// descriptors or memory running out, a connection aborted before it was
// accepted, or an error the network stack calls temporary or a timeout.
func TemporaryAcceptError(err error) bool {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EINTR, syscall.EAGAIN, syscall.EPROTO} {
		if errors.Is(err, errno) {
			return true
		}
	}
	if errors.Is(err, net.ErrClosed) {
		return false
	}
	var t temporary
	if errors.As(err, &t) && t.Temporary() {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// ListenerStatus is one listener's state, as GET /healthz reports it.
type ListenerStatus struct {
	// Adapter and Name name the listener ("mqtt" and "mqtts", "xmpp" and
	// "xmpp", "rest" and "http").
	Adapter string `json:"adapter"`
	Name    string `json:"name"`
	// Addr is the bound address.
	Addr string `json:"addr"`
	// State is one of the Listener* constants.
	State string `json:"state"`
	// Error says why the listener does not accept.
	Error string `json:"error,omitempty"`
	// AcceptErrors counts the temporary accept errors retried so far.
	AcceptErrors uint64 `json:"accept_errors"`
}

// ListenerReporter is implemented by an adapter that reports the state of
// each of its listeners (for /healthz).
type ListenerReporter interface {
	Listeners() []ListenerStatus
}

// StatusOf is the ListenerStatus of l; adapter and name are left to the
// caller.
func StatusOf(l *RetryListener) ListenerStatus {
	state, err := l.Status()
	s := ListenerStatus{Addr: l.Addr().String(), State: state, AcceptErrors: l.AcceptErrors()}
	if err != nil {
		s.Error = err.Error()
	}
	return s
}

// HealthReport is the body of GET /healthz.
type HealthReport struct {
	// Status is "ok" when every listener accepts and every adapter is
	// healthy, "unavailable" otherwise (then /healthz answers 503).
	Status string `json:"status"`
	// Errors say what is not healthy.
	Errors []string `json:"errors,omitempty"`
	// Listeners are every adapter's listeners.
	Listeners []ListenerStatus `json:"listeners"`
	// Store is the store's state, when the hub has one.
	Store *StoreHealth `json:"store,omitempty"`
	// Warnings say what does not make the hub unavailable but needs the
	// operator (disk pressure); with no Errors they make Status
	// "degraded", still answered 200.
	Warnings []string `json:"warnings,omitempty"`
}

// StoreHealth is the store's part of a HealthReport.
type StoreHealth struct {
	// IntegrityOK says whether the database passed its integrity check at
	// start; a damaged one still serves (see the log), so this does not
	// make the hub unavailable.
	IntegrityOK bool `json:"integrity_ok"`
	// Problems are the integrity check's findings.
	Problems []string `json:"problems,omitempty"`
	// WriteError is the last write that failed for the store's own reason
	// (disk full, I/O error, read-only), at WriteErrorAt (RFC 3339);
	// WriteFailing says no write has succeeded since (the hub is then
	// unavailable), ReadOnly that the database is read-only.
	WriteError   string `json:"write_error,omitempty"`
	WriteErrorAt string `json:"write_error_at,omitempty"`
	WriteFailing bool   `json:"write_failing"`
	ReadOnly     bool   `json:"read_only"`
	// DiskFree and DiskTotal are the store's file system in bytes;
	// DiskPressure says DiskFree is under DiskFreeMin (limits.disk_free_min).
	DiskFree     uint64 `json:"disk_free"`
	DiskTotal    uint64 `json:"disk_total,omitempty"`
	DiskFreeMin  uint64 `json:"disk_free_min,omitempty"`
	DiskPressure bool   `json:"disk_pressure"`
}

// Health status values of HealthReport.Status.
const (
	HealthOK          = "ok"
	HealthUnavailable = "unavailable"
	// HealthDegraded: everything serves, with Warnings (answered 200).
	HealthDegraded = "degraded"
)

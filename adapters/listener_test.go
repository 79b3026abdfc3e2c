package adapters

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// flakyListener fails its first n Accepts with err, then accepts from a
// real loopback listener.
type flakyListener struct {
	net.Listener
	mu  sync.Mutex
	n   int
	err error
}

func (f *flakyListener) Accept() (net.Conn, error) {
	f.mu.Lock()
	if f.n > 0 {
		f.n--
		f.mu.Unlock()
		return nil, f.err
	}
	f.mu.Unlock()
	return f.Listener.Accept()
}

func loopback(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

var quiet = slog.New(slog.DiscardHandler)

func emfile() error {
	return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
}

func TestRetryListenerSurvivesEMFILE(t *testing.T) {
	fl := &flakyListener{Listener: loopback(t), n: 5, err: emfile()}
	var seen int
	var mu sync.Mutex
	rl := NewRetryListener(fl, quiet, func(error) { mu.Lock(); seen++; mu.Unlock() })
	defer rl.Close()
	client, err := net.Dial("tcp", fl.Addr().String()) // waits in the backlog
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	start := time.Now()
	c, err := rl.Accept()
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	_ = c.Close()
	// 5+10+20+40+80 ms of back-off.
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("accepted after %v: no back-off", d)
	}
	mu.Lock()
	defer mu.Unlock()
	if seen != 5 || rl.AcceptErrors() != 5 {
		t.Errorf("errors: callback %d, counted %d, want 5", seen, rl.AcceptErrors())
	}
	if state, err := rl.Status(); state != ListenerAccepting || err != nil {
		t.Errorf("after a success: %s %v", state, err)
	}
}

func TestRetryListenerReportsFailing(t *testing.T) {
	fl := &flakyListener{Listener: loopback(t), n: 1 << 30, err: emfile()}
	rl := NewRetryListener(fl, quiet, nil)
	done := make(chan error, 1)
	go func() {
		_, err := rl.Accept()
		done <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		state, err := rl.Status()
		if state == ListenerFailing {
			if !errors.Is(err, syscall.EMFILE) {
				t.Errorf("failing with %v, want EMFILE", err)
			}
			if rl.Healthy() == nil {
				t.Error("Healthy: nil while failing")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never failing: %s %v", state, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Close ends the back-off at once.
	_ = rl.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Error("Accept after Close: no error")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Accept did not return after Close")
	}
	if state, _ := rl.Status(); state != ListenerClosed {
		t.Errorf("after Close: %s", state)
	}
}

func TestRetryListenerStopsOnPermanentError(t *testing.T) {
	fl := &flakyListener{Listener: loopback(t), n: 1, err: errors.New("broken")}
	rl := NewRetryListener(fl, quiet, nil)
	defer rl.Close()
	if _, err := rl.Accept(); err == nil || err.Error() != "broken" {
		t.Fatalf("Accept: %v, want the permanent error", err)
	}
	if state, err := rl.Status(); state != ListenerStopped || err == nil {
		t.Errorf("state %s %v, want stopped", state, err)
	}
	if rl.AcceptErrors() != 0 {
		t.Errorf("a permanent error counted as temporary")
	}
}

func TestTemporaryAcceptError(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{emfile(), true},
		{&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.ENFILE)}, true},
		{fmt.Errorf("wrapped: %w", syscall.ECONNABORTED), true},
		{net.ErrClosed, false},
		{&net.OpError{Op: "accept", Err: net.ErrClosed}, false},
		{errors.New("other"), false},
	} {
		if got := TemporaryAcceptError(c.err); got != c.want {
			t.Errorf("TemporaryAcceptError(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

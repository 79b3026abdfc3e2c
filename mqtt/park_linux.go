package mqtt

import (
	"errors"
	"fmt"
	"net"
	"syscall"
)

// pollerStop is the token of the poller's wake-up pipe: wait returns it
// after stop.
const pollerStop int32 = 0

// poller watches parked sockets with epoll: level-triggered and one-shot,
// so a socket that has bytes (or its peer's FIN) when it is added is
// reported at once, and once.
type poller struct {
	epfd int
	pipe [2]int // stop writes to pipe[1]; pipe[0] is in the epoll set
	evs  []syscall.EpollEvent
}

func newPoller() (*poller, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("mqtt: poller: epoll_create1: %w", err)
	}
	pl := &poller{epfd: epfd, evs: make([]syscall.EpollEvent, 128)}
	if err := syscall.Pipe2(pl.pipe[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		_ = syscall.Close(epfd)
		return nil, fmt.Errorf("mqtt: poller: pipe2: %w", err)
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: pollerStop}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, pl.pipe[0], &ev); err != nil {
		pl.close()
		return nil, fmt.Errorf("mqtt: poller: epoll_ctl: %w", err)
	}
	return pl, nil
}

// add watches c's socket for bytes, its peer's FIN or an error, reported
// as tok.
func (pl *poller) add(c *net.TCPConn, tok int32) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var cerr error
	err = rc.Control(func(fd uintptr) {
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: tok}
		cerr = syscall.EpollCtl(pl.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
	})
	return errors.Join(err, cerr)
}

// del stops watching c's socket; a closed socket has left the set already.
func (pl *poller) del(c *net.TCPConn) {
	if rc, err := c.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = syscall.EpollCtl(pl.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
		})
	}
}

// wait appends to toks the tokens of the sockets that became ready within
// msec milliseconds (pollerStop once stop was called).
func (pl *poller) wait(toks []int32, msec int) ([]int32, error) {
	n, err := syscall.EpollWait(pl.epfd, pl.evs, msec)
	if errors.Is(err, syscall.EINTR) {
		return toks, nil
	}
	if err != nil {
		return toks, fmt.Errorf("epoll_wait: %w", err)
	}
	for _, ev := range pl.evs[:n] {
		toks = append(toks, ev.Fd)
	}
	return toks, nil
}

// stop makes wait return pollerStop.
func (pl *poller) stop() { _, _ = syscall.Write(pl.pipe[1], []byte{0}) }

// close releases the poller's descriptors.
func (pl *poller) close() {
	_ = syscall.Close(pl.pipe[0])
	_ = syscall.Close(pl.pipe[1])
	_ = syscall.Close(pl.epfd)
}

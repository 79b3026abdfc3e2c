//go:build !linux

package mqtt

import (
	"errors"
	"net"
)

const pollerStop int32 = 0

// poller is Linux's epoll only: elsewhere clients are never parked.
type poller struct{}

func newPoller() (*poller, error) { return nil, errors.New("mqtt: parking idle clients needs Linux") }

func (*poller) add(*net.TCPConn, int32) error          { return errors.ErrUnsupported }
func (*poller) del(*net.TCPConn)                       {}
func (*poller) wait(t []int32, _ int) ([]int32, error) { return t, errors.ErrUnsupported }
func (*poller) stop()                                  {}
func (*poller) close()                                 {}

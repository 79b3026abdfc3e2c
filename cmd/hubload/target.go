package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// checkLoopback refuses a target URL whose host is not a loopback address
// (after resolving names), so that a load test cannot be aimed at someone
// else's server by mistake.
func checkLoopback(ctx context.Context, raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("url %q: %w", raw, err)
	}
	host := u.Hostname()
	if host == "" {
		return fmt.Errorf("url %q: no host", raw)
	}
	if ip := net.ParseIP(host); ip != nil {
		if !ip.IsLoopback() {
			return fmt.Errorf("url %q: %s is not a loopback address (use --allow-remote to load a remote host)", raw, host)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil {
		return fmt.Errorf("url %q: resolving %s: %w", raw, host, err)
	}
	for _, a := range addrs {
		if !a.IP.IsLoopback() {
			return fmt.Errorf("url %q: %s resolves to %s, not a loopback address (use --allow-remote to load a remote host)", raw, host, a.IP)
		}
	}
	return nil
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times: 100 on every
// Linux architecture the hub targets.
const clockTicks = 100

// readProcCPU returns the user plus system CPU time pid has used.
func readProcCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("target pid %d: %w", pid, err)
	}
	return parseProcStat(b)
}

// parseProcStat extracts utime + stime from /proc/PID/stat text. The
// command name, field 2, is in parentheses and may itself hold spaces and
// parentheses, so fields are counted from the last ')'.
func parseProcStat(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("proc stat: no command name")
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("proc stat: %d fields after the name, want at least 13", len(f))
	}
	var ticks uint64
	for _, s := range f[11:13] {
		v, err := strconv.ParseUint(string(s), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("proc stat: cpu time %q: %w", s, err)
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// selfCPU returns the user plus system CPU time of this process.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// memSample is one reading of /proc/PID/status, in KiB.
type memSample struct {
	hwm, rss uint64
}

// readProcStatus reads VmHWM and VmRSS from a /proc/PID/status file.
func readProcStatus(pid int) (memSample, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return memSample{}, fmt.Errorf("target pid %d: %w", pid, err)
	}
	return parseProcStatus(b)
}

// parseProcStatus extracts VmHWM and VmRSS (kB) from status text.
func parseProcStatus(b []byte) (memSample, error) {
	var m memSample
	var haveHWM, haveRSS bool
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Bytes()
		var dst *uint64
		switch {
		case bytes.HasPrefix(line, []byte("VmHWM:")):
			dst, haveHWM = &m.hwm, true
		case bytes.HasPrefix(line, []byte("VmRSS:")):
			dst, haveRSS = &m.rss, true
		default:
			continue
		}
		f := bytes.Fields(line)
		if len(f) < 2 {
			return memSample{}, fmt.Errorf("proc status: malformed line %q", line)
		}
		v, err := strconv.ParseUint(string(f[1]), 10, 64)
		if err != nil {
			return memSample{}, fmt.Errorf("proc status: line %q: %w", line, err)
		}
		*dst = v
	}
	if !haveHWM || !haveRSS {
		return memSample{}, fmt.Errorf("proc status: no VmHWM/VmRSS (kernel thread or exited process?)")
	}
	return m, nil
}

// rssSampler reads the target's memory every interval until stopped.
type rssSampler struct {
	pid    int
	stopCh chan struct{}
	done   chan struct{}

	mu     sync.Mutex
	last   memSample
	maxRSS uint64
}

func startRSSSampler(pid int, every time.Duration) (*rssSampler, error) {
	first, err := readProcStatus(pid)
	if err != nil {
		return nil, err
	}
	s := &rssSampler{pid: pid, stopCh: make(chan struct{}), done: make(chan struct{}), last: first, maxRSS: first.rss}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-s.stopCh:
				return
			case <-t.C:
				s.sample()
			}
		}
	}()
	return s, nil
}

func (s *rssSampler) sample() {
	m, err := readProcStatus(s.pid)
	if err != nil {
		return // the process may have exited; keep the last reading
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last = m
	s.maxRSS = max(s.maxRSS, m.rss)
}

func (s *rssSampler) current() memSample {
	s.sample()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// result takes a last sample and summarises; before is the reading taken
// when the clients were connected.
func (s *rssSampler) result(before memSample) *TargetUsage {
	last := s.current()
	s.mu.Lock()
	defer s.mu.Unlock()
	return &TargetUsage{PID: s.pid, VmHWMKiB: last.hwm, VmRSSKiB: last.rss, StartRSSKiB: before.rss, MaxRSSKiB: s.maxRSS}
}

func (s *rssSampler) stop() {
	select {
	case <-s.stopCh:
	default:
		close(s.stopCh)
	}
	<-s.done
}

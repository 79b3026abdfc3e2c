package main

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"path"
	"runtime/debug"
	"strconv"
	"strings"
)

// memoryLimitShare is the part of the memory the hub may use that its
// default soft memory limit (GOMEMLIMIT) is set to.
const memoryLimitShare = 0.9

// Where the memory the hub may use is read from.
const (
	procCgroup    = "/proc/self/cgroup"
	cgroupRoot    = "/sys/fs/cgroup"
	cgroupV1Limit = "/sys/fs/cgroup/memory/memory.limit_in_bytes"
	procMeminfo   = "/proc/meminfo"
)

// memoryLimit is the soft memory limit the hub sets for the Go runtime,
// or why it sets none.
type memoryLimit struct {
	bytes  int64  // 0: none set
	source string // what the limit was derived from, or why there is none
}

// defaultMemoryLimit chooses the soft memory limit of the Go runtime when
// the user has not: memoryLimitShare of the memory the hub may use, which
// is its cgroup's limit (a container's or a systemd unit's MemoryMax) or,
// without one, the machine's memory. Near the limit the garbage collector
// runs more often instead of letting the heap grow, so that a burst
// (queues filling while a subscriber is slow) makes the hub collect before
// the kernel's OOM killer ends it. A GOMEMLIMIT in the environment is the
// user's choice and is left to the runtime, which has applied it already;
// so is GOGC=off with no GOMEMLIMIT (the user wants no collection at all).
func defaultMemoryLimit(getenv func(string) string, readFile func(string) ([]byte, error)) memoryLimit {
	if v := getenv("GOMEMLIMIT"); v != "" {
		return memoryLimit{source: "GOMEMLIMIT=" + v + " (environment)"}
	}
	if strings.EqualFold(getenv("GOGC"), "off") {
		return memoryLimit{source: "GOGC=off (environment)"}
	}
	avail, source := cgroupMemory(readFile)
	if avail <= 0 {
		avail, source = memTotal(readFile), procMeminfo+" MemTotal"
	}
	if avail <= 0 {
		return memoryLimit{source: "memory size unknown"}
	}
	return memoryLimit{bytes: int64(float64(avail) * memoryLimitShare), source: source}
}

// cgroupMemory is the memory limit of the hub's cgroup (v2, else v1), 0
// when there is none.
func cgroupMemory(readFile func(string) ([]byte, error)) (int64, string) {
	// cgroup v2: "0::/path" in /proc/self/cgroup; the limit of the
	// closest ancestor that has one (the tightest applies).
	if b, err := readFile(procCgroup); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			rel, ok := strings.CutPrefix(line, "0::")
			if !ok {
				continue
			}
			for dir := path.Join(cgroupRoot, path.Clean("/"+rel)); ; dir = path.Dir(dir) {
				f := path.Join(dir, "memory.max")
				if v, err := readFile(f); err == nil {
					if n := parseLimit(v); n > 0 {
						return n, f
					}
				}
				if dir == cgroupRoot || !strings.HasPrefix(dir, cgroupRoot) {
					break
				}
			}
		}
	}
	// cgroup v1, as mounted for the hub (a container sees its own).
	if v, err := readFile(cgroupV1Limit); err == nil {
		if n := parseLimit(v); n > 0 {
			return n, cgroupV1Limit
		}
	}
	return 0, ""
}

// parseLimit reads a cgroup memory limit: 0 for "max", for garbage, and
// for v1's "unlimited" (a number near the largest int64).
func parseLimit(b []byte) int64 {
	n, err := strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64)
	if err != nil || n <= 0 || n >= 1<<62 {
		return 0
	}
	return n
}

// memTotal is the machine's memory from /proc/meminfo, 0 when unknown.
func memTotal(readFile func(string) ([]byte, error)) int64 {
	b, err := readFile(procMeminfo)
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0
		}
		kib, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || kib <= 0 || kib > 1<<52 {
			return 0
		}
		return kib << 10
	}
	return 0
}

// applyMemoryLimit sets the default soft memory limit (see
// defaultMemoryLimit) and logs it.
func applyMemoryLimit(log *slog.Logger, getenv func(string) string, readFile func(string) ([]byte, error)) memoryLimit {
	l := defaultMemoryLimit(getenv, readFile)
	if l.bytes > 0 {
		debug.SetMemoryLimit(l.bytes)
		log.Debug("hub: soft memory limit", "bytes", l.bytes, "mib", fmt.Sprintf("%.0f", float64(l.bytes)/(1<<20)),
			"of", l.source, "share", memoryLimitShare)
	} else {
		log.Debug("hub: no default soft memory limit", "because", l.source)
	}
	return l
}

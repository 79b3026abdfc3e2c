package gateway

import (
	"fmt"
	"strconv"
	"strings"
)

// cpuTimes are the host's CPU times in clock ticks (the "cpu" line of
// /proc/stat).
type cpuTimes struct{ busy, total uint64 }

// busyPercentSince is the busy share of the CPU time between prev and t,
// in percent (since boot when prev is zero).
func (t cpuTimes) busyPercentSince(prev cpuTimes) float64 {
	if t.total < prev.total || t.busy < prev.busy {
		prev = cpuTimes{}
	}
	total := t.total - prev.total
	if total == 0 {
		return 0
	}
	return 100 * float64(t.busy-prev.busy) / float64(total)
}

// parseCPUTimes reads the aggregate "cpu" line of /proc/stat: user nice
// system idle iowait irq softirq steal (guest times are inside user and
// nice already); idle and iowait are not busy.
func parseCPUTimes(stat string) (cpuTimes, error) {
	for line := range strings.Lines(stat) {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "cpu" {
			continue
		}
		if len(f) < 5 {
			return cpuTimes{}, fmt.Errorf("proc stat: cpu line has %d fields, want at least 5", len(f))
		}
		var t cpuTimes
		for i, s := range f[1:min(len(f), 9)] {
			n, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				return cpuTimes{}, fmt.Errorf("proc stat: cpu field %d %q: %w", i+1, s, err)
			}
			t.total += n
			if i != 3 && i != 4 { // idle, iowait
				t.busy += n
			}
		}
		return t, nil
	}
	return cpuTimes{}, fmt.Errorf("proc stat: no cpu line")
}

// meminfo is what the dashboard shows of /proc/meminfo, in bytes.
type meminfo struct{ total, available uint64 }

// parseMeminfo reads MemTotal and MemAvailable (kB) from /proc/meminfo;
// kernels before 3.14 have no MemAvailable, then MemFree + Buffers +
// Cached stands in.
func parseMeminfo(s string) (meminfo, error) {
	var m meminfo
	var free, buffers, cached uint64
	var haveTotal, haveAvail bool
	for line := range strings.Lines(s) {
		name, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil || n > 1<<53 {
			continue
		}
		n *= 1024
		switch name {
		case "MemTotal":
			m.total, haveTotal = n, true
		case "MemAvailable":
			m.available, haveAvail = n, true
		case "MemFree":
			free = n
		case "Buffers":
			buffers = n
		case "Cached":
			cached = n
		}
	}
	if !haveTotal {
		return meminfo{}, fmt.Errorf("proc meminfo: no MemTotal")
	}
	if !haveAvail {
		m.available = min(free+buffers+cached, m.total)
	}
	return m, nil
}

// parseUptime reads the first number of /proc/uptime (seconds).
func parseUptime(s string) (float64, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return 0, fmt.Errorf("proc uptime: empty")
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("proc uptime: %q: not a number of seconds", f[0])
	}
	return v, nil
}

// parseStatmRSS reads the resident pages (second field) of
// /proc/self/statm.
func parseStatmRSS(s string, pageSize int) (uint64, error) {
	f := strings.Fields(s)
	if len(f) < 2 {
		return 0, fmt.Errorf("proc statm: %d fields, want at least 2", len(f))
	}
	n, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("proc statm: resident %q: %w", f[1], err)
	}
	return n * uint64(pageSize), nil
}

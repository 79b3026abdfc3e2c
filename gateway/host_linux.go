package gateway

import (
	"fmt"
	"os"
	"syscall"
	"time"
)

func readProc(name string) (string, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return "", fmt.Errorf("hub: host health: %w", err)
	}
	return string(b), nil
}

func readCPUTimes() (cpuTimes, error) {
	s, err := readProc("/proc/stat")
	if err != nil {
		return cpuTimes{}, err
	}
	return parseCPUTimes(s)
}

func readMeminfo() (meminfo, error) {
	s, err := readProc("/proc/meminfo")
	if err != nil {
		return meminfo{}, err
	}
	return parseMeminfo(s)
}

func hostUptime() (float64, error) {
	s, err := readProc("/proc/uptime")
	if err != nil {
		return 0, err
	}
	return parseUptime(s)
}

func processRSS() (uint64, error) {
	s, err := readProc("/proc/self/statm")
	if err != nil {
		return 0, err
	}
	return parseStatmRSS(s, os.Getpagesize())
}

// processCPU is the CPU time (user + system) the process used so far.
func processCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("hub: host health: getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// diskSpace is the free (for unprivileged users) and total bytes of the
// file system holding dir.
func diskSpace(dir string) (free, total uint64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, fmt.Errorf("hub: host health: statfs %s: %w", dir, err)
	}
	bs := uint64(st.Bsize) // int64 or int32, by platform
	return uint64(st.Bavail) * bs, uint64(st.Blocks) * bs, nil
}

//go:build !linux

package gateway

import (
	"errors"
	"time"
)

var errNoProc = errors.New("no /proc on this system")

// Elsewhere than Linux the host readings are left zero.

func readCPUTimes() (cpuTimes, error)          { return cpuTimes{}, errNoProc }
func readMeminfo() (meminfo, error)            { return meminfo{}, errNoProc }
func hostUptime() (float64, error)             { return 0, errNoProc }
func processRSS() (uint64, error)              { return 0, errNoProc }
func processCPU() (time.Duration, error)       { return 0, errNoProc }
func diskSpace(string) (uint64, uint64, error) { return 0, 0, errNoProc }

//go:build linux || darwin || dragonfly || freebsd || netbsd || openbsd

package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// lockFile is the file in the data dir that "hub serve" holds an
// exclusive flock(2) on while it runs, with its pid inside. The kernel
// drops the lock when the process ends, however it ends, so a stale file
// never blocks a start.
const lockFile = "LOCK"

// dirLock is a held data-dir lock.
type dirLock struct {
	f *os.File
	// warning, when set, says why the lock is not held or incomplete;
	// the hub starts anyway (see lockDataDir).
	warning error
}

// lockDataDir takes the data dir for this process, creating the dir when
// needed. A dir held by another hub is refused with that hub's pid.
//
// A full or read-only filesystem does not stop the hub (it still serves
// QoS 0 there, and refuses QoS >= 1 with each protocol's error): if the
// lock file cannot be created, or the pid cannot be written into it, the
// lock's warning says so and the caller logs it.
func lockDataDir(dir string) (*dirLock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return &dirLock{warning: fmt.Errorf("data dir %s is not locked against a second hub: %w", dir, err)}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lock the data dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("data dir %s is in use by another hub (%s, holding %s): stop that one or give this one another --data-dir",
				dir, holder(path), path)
		}
		return nil, fmt.Errorf("lock the data dir: flock %s: %w", path, err)
	}
	pid := []byte(strconv.Itoa(os.Getpid()) + "\n")
	err = f.Truncate(0)
	if err == nil {
		_, err = f.WriteAt(pid, 0)
	}
	if err != nil {
		// Held all the same; only a second hub's message lacks the pid.
		return &dirLock{f: f, warning: fmt.Errorf("data dir lock %s: cannot write the pid: %w", path, err)}, nil
	}
	return &dirLock{f: f}, nil
}

// holder names the process holding the lock file at path.
func holder(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "pid unknown"
	}
	if pid, err := strconv.Atoi(string(bytes.TrimSpace(b))); err == nil && pid > 0 {
		return "pid " + strconv.Itoa(pid)
	}
	return "pid unknown"
}

// release drops the lock; the file stays (removing it would let a third
// process lock a new file while a second still waits on the old one).
func (l *dirLock) release() {
	if l != nil && l.f != nil {
		_ = l.f.Close()
	}
}

//go:build !(linux || darwin || dragonfly || freebsd || netbsd || openbsd)

package main

import "errors"

// dirLock stands in for the data-dir lock where flock(2) is not
// available; two hubs on one data dir are not detected there.
type dirLock struct{ warning error }

func lockDataDir(dir string) (*dirLock, error) {
	return &dirLock{warning: errors.New("data dir " + dir + " is not locked against a second hub on this platform")}, nil
}

func (*dirLock) release() {}

//go:build !(linux || darwin || dragonfly || freebsd || netbsd || openbsd)

package main

// dirLock stands in for the data-dir lock where flock(2) is not
// available; two hubs on one data dir are not detected there.
type dirLock struct{}

func lockDataDir(string) (*dirLock, error) { return &dirLock{}, nil }

func (*dirLock) release() {}

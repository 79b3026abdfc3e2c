// Package crashtest holds the hub's delivery-guarantee tests (issue 7).
// They build ./cmd/hub once (TestMain), run the real binary on loopback
// ports with a data directory that survives restarts, kill it with
// SIGKILL, stop it with SIGTERM, fill its disk, tear its files and stall
// its subscribers, then check that what the hub acknowledged at QoS >= 1
// still reaches every subscriber entitled to it, in order per publisher.
//
//	go test ./crashtest                      # everything, about two minutes
//	go test -short ./crashtest               # only the process helper
//	CRASHTEST_SEED=N go test -run Crash ./crashtest   # repeat kill points
//	go test -run X -bench Durable -benchtime 3000x ./crashtest
//
// TestDiskFull mounts a 4 MiB tmpfs and skips itself where mounting is not
// permitted. The package has no code outside its tests.
package crashtest

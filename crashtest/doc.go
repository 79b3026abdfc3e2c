// Package crashtest holds the hub's delivery-guarantee tests (issue 7).
// They build ./cmd/hub once, run the real binary on loopback ports, kill it
// with SIGKILL, fill its disk and stall its subscribers, then check that
// what the hub acknowledged at QoS >= 1 still reaches every subscriber
// entitled to it. The package has no code outside its tests.
package crashtest

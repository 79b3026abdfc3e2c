//go:build race

package mqtt

// raceEnabled: the test binary runs under the race detector.
const raceEnabled = true

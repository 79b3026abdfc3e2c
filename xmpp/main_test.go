package xmpp

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that every goroutine of the adapter, the bus and the test
// clients has ended when the tests are done.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

package files

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no goroutine outlives the tests: every Store, bus
// and database the tests open is closed.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

package devices

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a goroutine outlives the tests (a reply
// subscription left behind, for instance).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

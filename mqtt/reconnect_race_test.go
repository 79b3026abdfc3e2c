package mqtt

import (
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// TestReconnectAfterServerClose: a client whose connection the hub has
// just closed (a protocol error) and that connects again at once with the
// same client id gets its session, not a DISCONNECT 0x88 because the old
// connection's subscription had not ended yet.
func TestReconnectAfterServerClose(t *testing.T) {
	t.Parallel()
	h := newHub(t, nil)
	bad := []byte{0x30, 0x07, 0x00, 0x03, 'a', 0x00, 'b', 0x00, 'x'} // PUBLISH with a NUL in the topic (v5)
	for i := range 200 {
		r := dialRaw(t, h.addr)
		r.connect(5)
		if _, err := r.Write(bad); err != nil {
			t.Fatal(err)
		}
		if code, got := disconnectOf(t, r); code != packets.ErrMalformedPacket.Code {
			t.Fatalf("connection %d: got % x, want DISCONNECT 0x81 (malformed packet)", i, got)
		}
		_ = r.Close()
	}
}

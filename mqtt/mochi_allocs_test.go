package mqtt

import (
	"net"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/hubsmith/hub/mqttwire"
)

// loopConn is a net.Conn that discards what is written and reads the same
// bytes over and over.
type loopConn struct {
	in  []byte
	off int
}

func (c *loopConn) Read(p []byte) (int, error) {
	n := copy(p, c.in[c.off:])
	c.off = (c.off + n) % len(c.in)
	return n, nil
}
func (c *loopConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *loopConn) Close() error                     { return nil }
func (c *loopConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *loopConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *loopConn) SetDeadline(time.Time) error      { return nil }
func (c *loopConn) SetReadDeadline(time.Time) error  { return nil }
func (c *loopConn) SetWriteDeadline(time.Time) error { return nil }

// rejectHook rejects every publish, as the hub's hook does (it routes them
// itself).
type rejectHook struct{ mochi.HookBase }

func (rejectHook) ID() string           { return "reject" }
func (rejectHook) Provides(b byte) bool { return b == mochi.OnPublish }
func (rejectHook) OnPublish(_ *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	return pk, errRejectPacket
}

// (errRejectPacket is the hub hook's.)

// TestMochiPublishAllocations holds the allocation patches to mochi's
// publish path (third_party/mochi-mqtt/PATCHES.md): reading a PUBLISH
// costs the packet's own bytes (the topic is a view of them), the hooks'
// verdict nothing, writing a PUBLISH and a PUBACK nothing (upstream: 2, 3
// and 2). CI runs it without -race.
func TestMochiPublishAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own")
	}
	srv := mochi.New(&mochi.Options{Logger: quietLogger()})
	hooks := &mochi.Hooks{Log: quietLogger()}
	if err := hooks.Add(new(rejectHook), nil); err != nil {
		t.Fatal(err)
	}
	in := mqttwire.AppendPublish(nil, mqttwire.PublishHeader{Topic: "sensors/t1", QoS: 1, ID: 7}, []byte("21.5"))
	cl := srv.NewClient(&loopConn{in: in}, "t", "c1", false)
	cl.Properties.ProtocolVersion = 4

	read := testing.AllocsPerRun(500, func() {
		var fh packets.FixedHeader
		if err := cl.ReadFixedHeader(&fh); err != nil {
			t.Fatal(err)
		}
		if _, err := cl.ReadPacket(&fh); err != nil {
			t.Fatal(err)
		}
	})
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "sensors/t1", Payload: []byte("21.5"), PacketID: 7, ProtocolVersion: 4}
	verdict := testing.AllocsPerRun(500, func() {
		if _, err := hooks.OnPublish(cl, pk); err == nil {
			t.Fatal("not rejected")
		}
	})
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: 7}
	write := testing.AllocsPerRun(500, func() {
		if err := cl.WritePacket(pk); err != nil {
			t.Fatal(err)
		}
		if err := cl.WritePacket(ack); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("allocations: read %.1f, hooks %.1f, write PUBLISH+PUBACK %.1f", read, verdict, write)
	for _, c := range []struct {
		what      string
		got, want float64
	}{{"read a PUBLISH", read, 1}, {"OnPublish hooks", verdict, 0}, {"write a PUBLISH and a PUBACK", write, 0}} {
		if c.got > c.want {
			t.Errorf("%s: %.1f allocations, want at most %.0f", c.what, c.got, c.want)
		}
	}
}

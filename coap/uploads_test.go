package coap

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
)

// startOpen starts an adapter on 0.0.0.0 (credentials required) and points
// e.addr at its loopback address.
func startOpen(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	e := start(t, func(c *Config) {
		c.Addr = "0.0.0.0:0"
		if mod != nil {
			mod(c)
		}
	})
	_, port, _ := strings.Cut(e.addr, "]:")
	if port == "" {
		_, port, _ = strings.Cut(e.addr, ":")
	}
	e.addr = "127.0.0.1:" + port
	return e
}

// reassembling is what the adapter holds in block-wise reassembly.
func (a *Adapter) reassembling() int64 { return a.uploadTotal.Load() }

// TestBlock1Guard: a block-wise upload to /ps is authenticated and
// authorized at block 0 and bounded while it is reassembled.
func TestBlock1Guard(t *testing.T) {
	t.Parallel()
	alice := []string{"u=alice", "p=alicepw"}
	sensor := []string{"u=sensor1", "p=sensor1pw"}
	blk := bytes.Repeat([]byte("b"), 1024)
	type step struct {
		conn    int
		path    string
		num     int64
		more    bool
		queries []string
		want    codes.Code
	}
	cases := []struct {
		name  string
		mod   func(*Config)
		steps []step
		held  int64 // bytes in reassembly at the end
	}{
		{"anonymous refused at block 0", nil, []step{
			{0, "/ps/up/a", 0, true, nil, codes.Unauthorized},
			{0, "/ps/up/a", 1, true, nil, codes.RequestEntityIncomplete},
		}, 0},
		{"wrong password refused at block 0", nil, []step{
			{0, "/ps/up/a", 0, true, []string{"u=alice", "p=no"}, codes.Unauthorized},
		}, 0},
		{"forbidden topic refused at block 0", nil, []step{
			{0, "/ps/other/x", 0, true, sensor, codes.Forbidden},
		}, 0},
		{"later block without block 0", nil, []step{
			{0, "/ps/up/a", 3, true, alice, codes.RequestEntityIncomplete},
		}, 0},
		{"complete upload", nil, []step{
			{0, "/ps/up/a", 0, true, alice, codes.Continue},
			{0, "/ps/up/a", 1, true, alice, codes.Continue},
			{0, "/ps/up/a", 2, false, alice, codes.Created},
		}, 0},
		{"held in reassembly", nil, []step{
			{0, "/ps/up/a", 0, true, alice, codes.Continue},
			{0, "/ps/up/a", 1, true, alice, codes.Continue},
		}, 2048},
		{"per endpoint bound", func(c *Config) { c.MaxUploadBytesPerEndpoint = 3000 }, []step{
			{0, "/ps/up/a", 0, true, alice, codes.Continue},
			{0, "/ps/up/a", 1, true, alice, codes.Continue},
			{0, "/ps/up/b", 0, true, alice, codes.RequestEntityTooLarge},
			{1, "/ps/up/b", 0, true, alice, codes.Continue},
		}, 3072},
		{"global bound", func(c *Config) { c.MaxUploadBytesTotal = 3000 }, []step{
			{0, "/ps/up/a", 0, true, alice, codes.Continue},
			{0, "/ps/up/a", 1, true, alice, codes.Continue},
			{1, "/ps/up/b", 0, true, alice, codes.ServiceUnavailable},
		}, 2048},
		{"over MaxPayload", func(c *Config) { c.MaxPayload = 2048 }, []step{
			{0, "/ps/up/a", 0, true, alice, codes.Continue},
			{0, "/ps/up/a", 1, true, alice, codes.Continue},
			{0, "/ps/up/a", 2, true, alice, codes.RequestEntityTooLarge},
		}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := startOpen(t, c.mod)
			conns := []*rawConn{e.raw(t), e.raw(t)}
			for i, s := range c.steps {
				v, err := blockwise.EncodeBlockOption(blockwise.SZX1024, s.num, s.more)
				if err != nil {
					t.Fatal(err)
				}
				m := conns[s.conn].do(codes.PUT, int32(100+i), s.path, map[message.OptionID]uint32{message.Block1: v}, nil, s.queries, blk)
				if m.Code() != s.want {
					t.Fatalf("step %d (block %d of %s): %v %s, want %v", i, s.num, s.path, m.Code(), body(t, m), s.want)
				}
			}
			if got := e.a.reassembling(); got != c.held {
				t.Fatalf("%d bytes in reassembly, want %d", got, c.held)
			}
		})
	}
}

// TestBlock1Timeout: an upload idle past BlockwiseTimeout is forgotten;
// its next block is 4.08.
func TestBlock1Timeout(t *testing.T) {
	t.Parallel()
	e := startOpen(t, func(c *Config) { c.BlockwiseTimeout = 200 * time.Millisecond })
	r := e.raw(t)
	alice := []string{"u=alice", "p=alicepw"}
	blk := bytes.Repeat([]byte("t"), 1024)
	v0, _ := blockwise.EncodeBlockOption(blockwise.SZX1024, 0, true)
	v1, _ := blockwise.EncodeBlockOption(blockwise.SZX1024, 1, true)
	if m := r.do(codes.PUT, 1, "/ps/up/t", map[message.OptionID]uint32{message.Block1: v0}, nil, alice, blk); m.Code() != codes.Continue {
		t.Fatalf("block 0: %v", m.Code())
	}
	time.Sleep(400 * time.Millisecond) // past the timeout being tested
	if m := r.do(codes.PUT, 2, "/ps/up/t", map[message.OptionID]uint32{message.Block1: v1}, nil, alice, blk); m.Code() != codes.RequestEntityIncomplete {
		t.Fatalf("block 1 after the timeout: %v", m.Code())
	}
	if got := e.a.reassembling(); got != 0 {
		t.Fatalf("%d bytes in reassembly", got)
	}
}

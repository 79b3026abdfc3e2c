package coap

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"

	"github.com/hubsmith/hub/files"
)

// BenchmarkFileBlockwise measures a 256 KiB file over CoAP block-wise
// transfers with go-coap's client on loopback, GET and PUT, in blocks of
// 64 and 1024 bytes (one round trip per block); the MB/s column is the
// throughput.
func BenchmarkFileBlockwise(b *testing.B) {
	const size = 256 << 10
	data := pattern(size)
	e := startFiles(b, nil, nil)
	if _, err := e.fs.Put(context.Background(), "bench/get.bin", bytes.NewReader(data), files.PutOptions{Size: -1}); err != nil {
		b.Fatal(err)
	}
	for _, szx := range []blockwise.SZX{blockwise.SZX64, blockwise.SZX1024} {
		cc := e.dialSZX(b, szx)
		b.Run(fmt.Sprintf("get/%d", szx.Size()), func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				resp, err := cc.Get(ctx, "/files/bench/get.bin")
				cancel()
				if err != nil || resp.Code() != codes.Content {
					b.Fatalf("GET: %v", err)
				}
				if n, _ := resp.BodySize(); n != size {
					b.Fatalf("GET: %d bytes", n)
				}
			}
		})
		b.Run(fmt.Sprintf("put/%d", szx.Size()), func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				resp, err := cc.Put(ctx, "/files/bench/put.bin", message.AppOctets, bytes.NewReader(data))
				cancel()
				if err != nil || (resp.Code() != codes.Created && resp.Code() != codes.Changed) {
					b.Fatalf("PUT: %v", err)
				}
			}
		})
	}
}

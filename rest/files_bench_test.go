package rest

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/hubsmith/hub/files"
)

// BenchmarkFileHTTP measures a 4 MiB file over loopback HTTP: upload
// (POST, hashed, synced and committed) and download (GET by
// http.ServeContent); the MB/s column is the throughput.
func BenchmarkFileHTTP(b *testing.B) {
	const size = 4 << 20
	body := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	h := startHub(b, hubOpts{files: func(*files.Config) {}})
	c := &http.Client{}
	b.Cleanup(c.CloseIdleConnections)
	b.Run("upload", func(b *testing.B) {
		b.SetBytes(size)
		for i := 0; b.Loop(); i++ {
			resp, err := c.Post(fmt.Sprintf("%s/api/v1/files?name=bench/up%d", h.base, i%4), "application/octet-stream", bytes.NewReader(body))
			if err != nil {
				b.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
	})
	b.Run("download", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			resp, err := c.Get(h.base + "/api/v1/files/bench/up0")
			if err != nil {
				b.Fatal(err)
			}
			n, _ := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || n != size {
				b.Fatalf("status %d, %d bytes", resp.StatusCode, n)
			}
		}
	})
}

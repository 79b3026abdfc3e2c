package rest

import (
	"net/http"
	"strings"
	"testing"
)

// BenchmarkPublish measures POST /api/v1/topics over loopback HTTP with
// keep-alive, at QoS 0 (in memory) and QoS 1 (durable in SQLite).
func BenchmarkPublish(b *testing.B) {
	for _, q := range []string{"0", "1"} {
		b.Run("qos"+q, func(b *testing.B) {
			h := startHub(b, hubOpts{})
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			b.Cleanup(c.CloseIdleConnections)
			url := h.base + "/api/v1/topics/bench/t?qos=" + q
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := c.Post(url, "text/plain", strings.NewReader("21.5"))
					if err != nil {
						b.Error(err)
						return
					}
					resp.Body.Close()
					if resp.StatusCode/100 != 2 {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
		})
	}
}

package xmpp

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/hubsmith/hub/files"
)

// The throughput of a file sent to a topic JID, from the SI offer to the
// committed file in the store (fsync included): over IBB in iqs of 4 KiB
// blocks (slixmpp's default) and 32 KiB, and over SOCKS5 through the
// hub's proxy. "default" runs with the c2s rate limits of Config
// (DefaultRateStanzas, DefaultRateBytes), which bound IBB; "unlimited"
// without them. Run: go test -run XXX -bench Transfer -benchtime 5x ./xmpp/

const benchFileSize = 1 << 20

func BenchmarkTransferIBB(b *testing.B) {
	for _, rate := range []string{"default", "unlimited"} {
		for _, block := range []int{4096, 32768} {
			b.Run(fmt.Sprintf("%s/block=%d", rate, block), func(b *testing.B) {
				var fs *files.Store
				h := startHub(b, func(c *Config) {
					fs = withFiles(b, 0, -1, c)
					if rate == "unlimited" {
						c.RateBytes, c.RateStanzas = -1, -1
					}
				})
				alice := connect(b, h, "alice", "alicepw")
				data := randomBytes(benchFileSize)
				b.SetBytes(benchFileSize)
				b.ResetTimer()
				for i := range b.N {
					sid := fmt.Sprint("bench", i)
					if typ, inner := alice.iq(b, siOfferXML("o"+sid, "bench@topics.localhost", sid, sid+".bin", benchFileSize, nsIBB)); typ != "result" {
						b.Fatalf("offer: %s", inner)
					}
					if typ, inner := sendIBB(b, alice, "bench@topics.localhost", sid, data, block); typ != "result" {
						b.Fatalf("close: %s", inner)
					}
				}
				b.StopTimer()
				if _, ok := stored(b, fs, "bench/bench0.bin"); !ok {
					b.Fatal("nothing stored")
				}
			})
		}
	}
}

func BenchmarkTransferSOCKS5(b *testing.B) {
	var fs *files.Store
	h := startHub(b, func(c *Config) { fs = withFiles(b, 0, -1, c); c.ProxyAddr = "127.0.0.1:0" })
	alice := connect(b, h, "alice", "alicepw")
	addr := h.a.Addrs()["xmpp-proxy"]
	host, port, _ := net.SplitHostPort(addr)
	const to = "bench@topics.localhost"
	data := randomBytes(benchFileSize)
	b.SetBytes(benchFileSize)
	b.ResetTimer()
	for i := range b.N {
		sid := fmt.Sprint("s5-", i)
		if typ, inner := alice.iq(b, siOfferXML("o"+sid, to, sid, sid+".bin", benchFileSize, nsBytestreams)); typ != "result" {
			b.Fatalf("offer: %s", inner)
		}
		if typ, inner := alice.iq(b, `<iq type='set' id='b`+sid+`' to='`+to+`'><query xmlns='http://jabber.org/protocol/bytestreams' sid='`+sid+`'><streamhost jid='proxy.localhost' host='`+host+`' port='`+port+`'/></query></iq>`); typ != "result" {
			b.Fatalf("streamhost: %s", inner)
		}
		c := dialProxy(b, addr, socks5Addr(sid, alice.jid, to))
		if typ, inner := alice.iq(b, `<iq type='set' id='a`+sid+`' to='proxy.localhost'><query xmlns='http://jabber.org/protocol/bytestreams' sid='`+sid+`'><activate>`+to+`</activate></query></iq>`); typ != "result" {
			b.Fatalf("activate: %s", inner)
		}
		if _, err := c.Write(data); err != nil {
			b.Fatal(err)
		}
		_ = c.Close()
		name := "bench/" + sid + ".bin"
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, ok := stored(b, fs, name); ok {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("%s not stored", name)
			}
			time.Sleep(time.Millisecond)
		}
	}
}

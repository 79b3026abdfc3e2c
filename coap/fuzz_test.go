package coap

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

func encode(tb testing.TB, typ message.Type, code codes.Code, mid int32, path string, observe bool, payload string) []byte {
	tb.Helper()
	p := pool.NewMessage(context.Background())
	p.SetType(typ)
	p.SetCode(code)
	p.SetMessageID(mid)
	p.SetToken([]byte{1, 2, 3})
	if path != "" {
		_ = p.SetPath(path)
	}
	if observe {
		p.SetObserve(0)
	}
	if payload != "" {
		p.SetContentFormat(message.TextPlain)
		p.SetBody(strings.NewReader(payload))
	}
	b, err := p.MarshalWithEncoder(coder.DefaultCoder)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// FuzzDatagram feeds random datagrams to a running adapter over a raw UDP
// socket; after each one the server must still answer a CoAP ping.
func FuzzDatagram(f *testing.F) {
	e := start(f, nil)
	f.Add(encode(f, message.Confirmable, codes.POST, 1, "/ps/f/a", false, "x"))
	f.Add(encode(f, message.NonConfirmable, codes.GET, 2, "/ps/f/+", true, ""))
	f.Add(encode(f, message.Confirmable, codes.PUT, 3, "/ps/f/#", false, "y"))
	f.Add(encode(f, message.Confirmable, codes.DELETE, 4, "/.well-known/core", false, ""))
	f.Add(encode(f, message.Reset, codes.Empty, 5, "", false, ""))
	f.Add([]byte{0x40})
	f.Add([]byte{0x44, 0x02, 0x00, 0x01, 0xff})
	f.Add([]byte{0x48, 0x01, 0x00, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 0xd1, 0x0e, 0xff})
	ra, err := net.ResolveUDPAddr("udp", e.addr)
	if err != nil {
		f.Fatal(err)
	}
	c, err := net.DialUDP("udp", nil, ra)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = c.Close() })
	var mid uint16 = 40000
	f.Fuzz(func(t *testing.T, datagram []byte) {
		if _, err := c.Write(datagram); err != nil {
			t.Fatal(err)
		}
		mid++
		ping := []byte{0x40, 0x00, byte(mid >> 8), byte(mid)}
		if _, err := c.Write(ping); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2048)
		deadline := time.Now().Add(3 * time.Second)
		for {
			_ = c.SetReadDeadline(deadline)
			n, err := c.Read(buf)
			if err != nil {
				t.Fatalf("no answer to a ping after datagram %x: %v", datagram, err)
			}
			if n == 4 && buf[0]>>4 == 0x7 && buf[2] == ping[2] && buf[3] == ping[3] {
				return // the Reset that answers the ping
			}
		}
	})
}

package crashtest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// hostileConfig checks loopback peers' return routability as if they
// were remote, retransmits quickly and bounds reassembly at 1 MiB.
const hostileConfig = `coap:
  verify_loopback: true
  ack_timeout: 250ms
  max_retransmit: 2
  endpoint_idle_timeout: 5s
  max_upload_bytes_total: 1048576
`

// metricValue reads one sample (name with its labels, as /metrics
// prints it) from the hub's /metrics.
func (h *hubProc) metricValue(sample string) (float64, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + h.http + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, nil // not exported yet: nothing counted
}

// coapDatagram encodes one CoAP message.
func coapDatagram(t *testing.T, typ message.Type, code codes.Code, mid int32, token []byte, path string, build func(*pool.Message)) []byte {
	t.Helper()
	p := pool.NewMessage(context.Background())
	p.SetType(typ)
	p.SetCode(code)
	p.SetMessageID(mid)
	p.SetToken(token)
	if path != "" {
		if err := p.SetPath(path); err != nil {
			t.Fatal(err)
		}
	}
	if build != nil {
		build(p)
	}
	b, err := p.MarshalWithEncoder(coder.DefaultCoder)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// udpPeer is a raw CoAP endpoint: it counts what it receives and, when
// answering, answers the hub's pings with a Reset (a real endpoint) or
// stays silent (a spoofed source address).
type udpPeer struct {
	c                         *net.UDPConn
	datagrams, bytes, content atomic.Int64
	done                      chan struct{}
}

func dialPeer(t *testing.T, addr string, answer bool) *udpPeer {
	t.Helper()
	ra, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialUDP("udp", nil, ra)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadBuffer(1 << 20)
	p := &udpPeer{c: c, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		buf := make([]byte, 2048)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			p.datagrams.Add(1)
			p.bytes.Add(int64(n))
			m := pool.NewMessage(context.Background())
			if _, err := m.UnmarshalWithDecoder(coder.DefaultCoder, buf[:n]); err != nil {
				continue
			}
			if m.Code() == codes.Content {
				p.content.Add(1)
			}
			if answer && m.Type() == message.Confirmable {
				rtype := message.Acknowledgement
				if m.Code() == codes.Empty {
					rtype = message.Reset // the answer to a ping
				}
				r := pool.NewMessage(context.Background())
				r.SetType(rtype)
				r.SetCode(codes.Empty)
				r.SetMessageID(m.MessageID())
				if b, err := r.MarshalWithEncoder(coder.DefaultCoder); err == nil {
					_, _ = c.Write(b)
				}
			}
		}
	}()
	t.Cleanup(func() { _ = c.Close(); <-p.done })
	return p
}

func (p *udpPeer) send(t *testing.T, b []byte) {
	t.Helper()
	if _, err := p.c.Write(b); err != nil {
		t.Fatal(err)
	}
}

// TestCoAPHostile runs the measured CoAP attacks of issue 13 against the
// real binary: observes from addresses that never answer, an observation
// flood, and block-wise uploads abandoned in reassembly; then a good
// client of every protocol must still be served.
func TestCoAPHostile(t *testing.T) {
	if testing.Short() {
		t.Skip("floods the CoAP listener")
	}
	cfg := filepath.Join(t.TempDir(), "hub.yaml")
	if err := os.WriteFile(cfg, []byte(hostileConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	h := newHub(t, "", "--config", cfg)
	h.start()
	base := h.rssKB()
	var peak atomic.Int64
	sample := func() { peak.Store(max(peak.Load(), int64(h.rssKB()))) }
	observations := func() float64 {
		v, err := h.metricValue("hub_coap_observations")
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	payload := strings.Repeat("k", 1000)

	// 1. Reflection: 50 observers from addresses that never answer.
	spoofed := make([]*udpPeer, 50)
	for i := range spoofed {
		spoofed[i] = dialPeer(t, h.coap, false)
		spoofed[i].send(t, coapDatagram(t, message.NonConfirmable, codes.GET, int32(i+1), []byte{1, byte(i)}, "/ps/hostile/t", func(m *pool.Message) { m.SetObserve(0) }))
	}
	waitFor(t, "50 observations", 10*time.Second, func() (bool, string) {
		v := observations()
		return v == 50, fmt.Sprint(v)
	})
	for range 20 {
		if code, err := restPublish(h, "hostile/t", 0, payload); err != nil || code != http.StatusAccepted {
			t.Fatalf("publish: %d %v", code, err)
		}
	}
	waitFor(t, "the unanswered observations to end", 20*time.Second, func() (bool, string) {
		v := observations()
		return v == 0, fmt.Sprint(v)
	})
	var spoofDatagrams, spoofBytes, spoofContent int64
	for _, p := range spoofed {
		spoofDatagrams += p.datagrams.Load()
		spoofBytes += p.bytes.Load()
		spoofContent += p.content.Load()
	}
	sample()
	t.Logf("reflection: 50 unanswering observers, 20 publishes of 1000 bytes: %d datagrams, %d bytes sent to them (%d of them 2.05)", spoofDatagrams, spoofBytes, spoofContent)
	// Each: its registration response and one ping with 2 retransmissions.
	if spoofDatagrams > 50*(1+3) || spoofContent > 50 {
		t.Errorf("%d datagrams (%d with content) to 50 unanswering observers, want at most %d (%d)", spoofDatagrams, spoofContent, 50*4, 50)
	}

	// 2. Observation flood: 8 answering endpoints, 300 tokens each, all
	// anonymous: the per-endpoint cap (256) and the per-principal cap
	// (1024, anonymous clients sharing one) hold.
	flood := make([]*udpPeer, 8)
	var fwg sync.WaitGroup
	var lost atomic.Int64
	for i := range flood {
		flood[i] = dialPeer(t, h.coap, true)
		reqs := make([][]byte, 300)
		for j := range reqs {
			reqs[j] = coapDatagram(t, message.NonConfirmable, codes.GET, int32(j+1), []byte{2, byte(i), byte(j), byte(j >> 8)}, "/ps/flood/"+strconv.Itoa(j%10), func(m *pool.Message) { m.SetObserve(0) })
		}
		fwg.Add(1)
		go func(p *udpPeer) {
			defer fwg.Done()
			// One at a time, each after the answer to the one before: a
			// burst would only lose datagrams in the socket buffers.
			for j, b := range reqs {
				if _, err := p.c.Write(b); err != nil {
					lost.Add(1)
					return
				}
				deadline := time.Now().Add(2 * time.Second)
				for p.datagrams.Load() <= int64(j) && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond)
				}
			}
		}(flood[i])
	}
	fwg.Wait()
	if lost.Load() > 0 {
		t.Fatalf("%d flood endpoints could not send", lost.Load())
	}
	waitFor(t, "the flood's observations", 20*time.Second, func() (bool, string) {
		v := observations()
		return v == 1024, fmt.Sprint(v)
	})
	time.Sleep(500 * time.Millisecond) // datagrams past the caps still in flight: none may add one
	if v := observations(); v != 1024 {
		t.Fatalf("%v observations after 2400 observe requests, want the per-principal cap 1024", v)
	}
	var before int64
	for _, p := range flood {
		before += p.content.Load()
	}
	for j := range 10 {
		if code, err := restPublish(h, "flood/"+strconv.Itoa(j), 0, payload); err != nil || code != http.StatusAccepted {
			t.Fatalf("publish: %d %v", code, err)
		}
	}
	count := func() int64 {
		n := -before
		for _, p := range flood {
			n += p.content.Load()
		}
		return n
	}
	// NON notifications may be lost on the way (UDP); what matters is that
	// no more than one per observation goes out.
	waitFor(t, "the flood's notifications", 20*time.Second, func() (bool, string) {
		n := count()
		return n >= 900, fmt.Sprint(n)
	})
	time.Sleep(500 * time.Millisecond) // for any notification over the count still on its way
	notes := count()
	if notes > 1024 {
		t.Errorf("%d notifications for 1024 observations", notes)
	}
	sample()
	t.Logf("observation flood: 2400 observe requests from 8 endpoints held as %v observations; 10 publishes of 1000 bytes sent %d notifications; RSS %d KiB (start %d KiB)", observations(), notes, h.rssKB(), base)

	// 3. Block-wise uploads left in reassembly: 64 endpoints send 24
	// blocks of 1 KiB each and never the last one.
	var cont, refused, other, held atomic.Int64
	var wg sync.WaitGroup
	blk := bytes.Repeat([]byte("u"), 1024)
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ra, _ := net.ResolveUDPAddr("udp", h.coap)
			c, err := net.DialUDP("udp", nil, ra)
			if err != nil {
				other.Add(1)
				return
			}
			defer c.Close()
			buf := make([]byte, 2048)
			taken := int64(0)
			defer func() { held.Add(taken) }()
			for n := range 24 {
				v, _ := blockwise.EncodeBlockOption(blockwise.SZX1024, int64(n), true)
				p := pool.NewMessage(context.Background())
				p.SetType(message.Confirmable)
				p.SetCode(codes.PUT)
				p.SetMessageID(int32(n + 1))
				p.SetToken([]byte{3, byte(i)})
				_ = p.SetPath("/ps/hostile/upload/" + strconv.Itoa(i))
				p.SetOptionUint32(message.Block1, v)
				p.SetBody(bytes.NewReader(blk))
				b, err := p.MarshalWithEncoder(coder.DefaultCoder)
				if err != nil {
					other.Add(1)
					return
				}
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Write(b); err != nil {
					other.Add(1)
					return
				}
				k, err := c.Read(buf)
				if err != nil {
					other.Add(1)
					return
				}
				m := pool.NewMessage(context.Background())
				if _, err := m.UnmarshalWithDecoder(coder.DefaultCoder, buf[:k]); err != nil {
					other.Add(1)
					return
				}
				switch m.Code() {
				case codes.Continue:
					cont.Add(1)
					taken++
				case codes.ServiceUnavailable, codes.RequestEntityTooLarge:
					refused.Add(1)
					taken = 0 // refused: the hub dropped what it had of this upload
					return
				default:
					other.Add(1)
					return
				}
			}
		}()
	}
	wg.Wait()
	sample()
	t.Logf("abandoned block-wise uploads: 64 endpoints x 24 blocks of 1 KiB: %d blocks taken, %d uploads refused (5.03/4.13), %d blocks held at the end, %d other answers; RSS %d KiB", cont.Load(), refused.Load(), held.Load(), other.Load(), h.rssKB())
	if held.Load() > 1024 || refused.Load() == 0 {
		t.Errorf("%d blocks of 1 KiB held in reassembly with max_upload_bytes_total 1 MiB (%d refused)", held.Load(), refused.Load())
	}
	if other.Load() > 0 {
		t.Errorf("%d uploads got neither 2.31 nor a refusal", other.Load())
	}

	t.Logf("RSS: start %d KiB, peak %d KiB", base, peak.Load())
	if limit := int64(base) + 100<<10; peak.Load() > limit {
		t.Errorf("peak RSS %d KiB, over %d KiB", peak.Load(), limit)
	}
	soakGoodClients(t, h)
}

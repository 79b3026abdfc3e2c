package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	piondtls "github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/udp"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/files"
	"github.com/hubsmith/hub/gateway"
	"github.com/hubsmith/hub/hubtest"
)

// filesHub is a hub with its listeners on 0.0.0.0 (so credentials and
// ACLs apply), reached through 127.0.0.1.
type filesHub struct {
	*hubtest.Hub
	http, coap, mqtt string
}

// startFilesHub: files of at most 2 MiB, 3 MiB per principal, CoAP
// uploads idle for 500 ms discarded. bob may use files/public/# only;
// device lamp1 reads files/fw/#.
func startFilesHub(t *testing.T) *filesHub {
	t.Helper()
	h := hubtest.Start(t, func(c *gateway.Config) {
		c.MQTT.Addr, c.CoAP.Addr, c.HTTP.Addr = "0.0.0.0:0", "0.0.0.0:0", "0.0.0.0:0"
		c.XMPP.Addr = gateway.Off
		c.Files.MaxFileSize = 2 << 20
		c.Files.QuotaPerPrincipal = 3 << 20
		c.Files.CoAPUploadTimeout = 500 * time.Millisecond
		c.ACL = map[string][]adapters.ACLRule{
			"bob":   {{Action: "all", Filter: "files/public/#", Allow: true}},
			"lamp1": {{Action: "all", Filter: "devices/lamp1/#", Allow: true}, {Action: "subscribe", Filter: "files/fw/#", Allow: true}},
		}
	})
	for _, u := range [][3]string{{"bob", "bobpw", adapters.RoleUser}, {"lamp1", "lamppw", adapters.RoleDevice}} {
		if err := h.Store.AddUser(t.Context(), u[0], u[1], u[2]); err != nil {
			t.Fatal(err)
		}
	}
	return &filesHub{Hub: h,
		http: "http://" + loopback(t, h.Addr(t, "rest")),
		coap: loopback(t, h.Addr(t, "coap.coap")),
		mqtt: loopback(t, h.Addr(t, "mqtt.mqtt")),
	}
}

func sumHex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func randomish(n int) []byte {
	b := make([]byte, n)
	x := uint32(2463534242)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// upload POSTs a raw body as user and returns the status and body.
func (h *filesHub) upload(t *testing.T, user, name string, body io.Reader, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, h.http+"/api/v1/files?name="+name, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	req.SetBasicAuth(user, user+"pw")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("upload %s: %v", name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (h *filesHub) get(t *testing.T, user, path string, hdr map[string]string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, h.http+path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	if user != "" {
		req.SetBasicAuth(user, user+"pw")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func dialCoAPBlocks(t *testing.T, addr string, szx blockwise.SZX) *udpClient.Conn {
	t.Helper()
	cc, err := udp.Dial(addr, options.WithBlockwise(true, szx, 30*time.Second), options.WithErrors(func(error) {}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close(); <-cc.Done() })
	return cc
}

func coapBody(m *pool.Message) []byte {
	if m.Body() == nil {
		return nil
	}
	b, _ := io.ReadAll(m.Body())
	return b
}

func descriptorOf(t *testing.T, payload []byte) files.Descriptor {
	t.Helper()
	var d files.Descriptor
	if err := json.Unmarshal(payload, &d); err != nil {
		t.Fatalf("descriptor %q: %v", payload, err)
	}
	return d
}

func TestFileAcrossProtocols(t *testing.T) {
	h := startFilesHub(t)
	sub := dialMQTT(t, h.mqtt, "watcher", "alice", "alicepw", true)
	sub.subscribe(t, "files/#", 1)

	// 1 MiB over REST, its digest declared.
	fw := randomish(1 << 20)
	s, b := h.upload(t, "alice", "fw/big.bin", bytes.NewReader(fw), map[string]string{"X-Checksum-SHA256": sumHex(fw), "Content-Type": "application/octet-stream"})
	if s != http.StatusCreated {
		t.Fatalf("upload: %d %s", s, b)
	}
	d := descriptorOf(t, []byte(b))
	m := sub.next(t)
	if m.Topic != "files/fw/big.bin" || descriptorOf(t, []byte(m.Payload)) != d || d.SHA256 != sumHex(fw) || d.Uploader != "alice" ||
		!strings.HasSuffix(d.URL, "/api/v1/files/fw/big.bin") || d.CoAPPath != "/files/fw/big.bin" {
		t.Fatalf("MQTT got %s %s; upload answered %+v", m.Topic, m.Payload, d)
	}
	// Range over HTTP.
	if s, got := h.get(t, "alice", "/api/v1/files/fw/big.bin", map[string]string{"Range": "bytes=1000-1999"}); s != http.StatusPartialContent || !bytes.Equal(got, fw[1000:2000]) {
		t.Errorf("Range GET: %d, %d bytes", s, len(got))
	}
	// The descriptor as CoAP's retained value, and the bytes block-wise.
	auth := []message.Option{coapQuery("u=alice"), coapQuery("p=alicepw")}
	cc := dialCoAPBlocks(t, h.coap, blockwise.SZX1024)
	resp, err := cc.Get(ctx(t), "/ps/files/fw/big.bin", auth...)
	if err != nil || resp.Code() != codes.Content || descriptorOf(t, coapBody(resp)) != d {
		t.Fatalf("CoAP GET /ps/files/fw/big.bin: %v %v", resp.Code(), err)
	}
	c30, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err = cc.Get(c30, "/files/fw/big.bin", auth...)
	if err != nil || resp.Code() != codes.Content {
		t.Fatalf("CoAP block-wise GET: %v %v", resp.Code(), err)
	}
	if got := coapBody(resp); sumHex(got) != d.SHA256 {
		t.Errorf("CoAP block-wise GET (1024): %d bytes, sha256 %s", len(got), sumHex(got))
	}
	// Blocks of 16 bytes, for a constrained device (8 KiB: 512 blocks).
	small := fw[:8<<10]
	if s, b := h.upload(t, "alice", "fw/small.bin", bytes.NewReader(small), nil); s != http.StatusCreated {
		t.Fatalf("upload small: %d %s", s, b)
	}
	sub.next(t)
	resp, err = dialCoAPBlocks(t, h.coap, blockwise.SZX16).Get(c30, "/files/fw/small.bin", auth...)
	if err != nil || resp.Code() != codes.Content || sumHex(coapBody(resp)) != sumHex(small) {
		t.Errorf("CoAP block-wise GET (16): %v %v", resp.Code(), err)
	}

	// CoAP block-wise PUT; REST and MQTT see it.
	up := randomish(100 << 10)[7:]
	resp, err = dialCoAPBlocks(t, h.coap, blockwise.SZX256).Put(c30, "/files/fw/from-coap.bin", message.AppOctets, bytes.NewReader(up),
		append(auth, coapQuery("sha256="+sumHex(up)))...)
	if err != nil || resp.Code() != codes.Created {
		t.Fatalf("CoAP PUT: %v %v %q", resp.Code(), err, coapBody(resp))
	}
	if m := sub.next(t); m.Topic != "files/fw/from-coap.bin" || descriptorOf(t, []byte(m.Payload)).SHA256 != sumHex(up) {
		t.Errorf("MQTT got %s %s", m.Topic, m.Payload)
	}
	if s, got := h.get(t, "alice", "/api/v1/files/fw/from-coap.bin", nil); s != http.StatusOK || !bytes.Equal(got, up) {
		t.Errorf("REST GET of the CoAP upload: %d, %d bytes", s, len(got))
	}
}

func TestFileRefusalsEachProtocol(t *testing.T) {
	h := startFilesHub(t)
	watcher := dialMQTT(t, h.mqtt, "watcher", "alice", "alicepw", true)
	watcher.subscribe(t, "files/#", 1)
	bobSub := dialMQTT(t, h.mqtt, "bobwatch", "bob", "bobpw", true)
	bobSub.subscribe(t, "files/public/#", 1)
	if s, b := h.upload(t, "alice", "private/used.bin", bytes.NewReader(randomish(2<<20)), nil); s != http.StatusCreated {
		t.Fatalf("alice's 2 MiB: %d %s", s, b)
	}
	watcher.next(t)
	// bob's MQTT subscription gets his descriptor, not alice's private one.
	if s, b := h.upload(t, "bob", "public/hello.txt", strings.NewReader("hello"), nil); s != http.StatusCreated {
		t.Fatalf("bob's upload: %d %s", s, b)
	}
	if m := bobSub.next(t); m.Topic != "files/public/hello.txt" {
		t.Errorf("bob's MQTT subscriber got %s first, want files/public/hello.txt", m.Topic)
	}
	watcher.next(t)

	// REST.
	for _, tc := range []struct {
		desc, user, name string
		body             []byte
		hdr              map[string]string
		status           int
		msg              string
	}{
		{"size", "bob", "public/big.bin", randomish(2<<20 + 1), nil, http.StatusRequestEntityTooLarge, "the limit is 2097152"},
		{"quota", "alice", "private/more.bin", randomish(1<<20 + 1), nil, http.StatusInsufficientStorage, "alice has 2097152 of 3145728 bytes"},
		{"acl", "bob", "private/x.bin", []byte("x"), nil, http.StatusForbidden, "not authorized"},
		{"checksum", "bob", "public/c.bin", []byte("data"), map[string]string{"X-Checksum-SHA256": sumHex([]byte("other"))}, http.StatusBadRequest, "checksum mismatch"},
	} {
		s, b := h.upload(t, tc.user, tc.name, bytes.NewReader(tc.body), tc.hdr)
		if s != tc.status || !strings.Contains(b, tc.msg) {
			t.Errorf("REST %s: %d %s, want %d with %q", tc.desc, s, b, tc.status, tc.msg)
		}
	}
	if s, _ := h.get(t, "bob", "/api/v1/files/private/used.bin", nil); s != http.StatusForbidden {
		t.Errorf("REST read by bob of a private file: %d", s)
	}
	if s, _ := h.get(t, "", "/api/v1/files/public/hello.txt", nil); s != http.StatusUnauthorized {
		t.Errorf("REST read without credentials off loopback: %d", s)
	}

	// CoAP.
	bob := []message.Option{coapQuery("u=bob"), coapQuery("p=bobpw")}
	alice := []message.Option{coapQuery("u=alice"), coapQuery("p=alicepw")}
	for _, tc := range []struct {
		desc string
		path string
		body []byte
		opts []message.Option
		want codes.Code
		msg  string
	}{
		{"size", "/files/public/big.bin", randomish(2<<20 + 1), bob, codes.RequestEntityTooLarge, "limit"},
		{"quota", "/files/private/more.bin", randomish(1<<20 + 1), alice, codes.Forbidden, "quota exceeded"},
		{"acl", "/files/private/x.bin", []byte("x"), bob, codes.Forbidden, "not authorized"},
		{"checksum", "/files/public/c.bin", []byte("data"), append(bob[:2:2], coapQuery("sha256="+sumHex([]byte("other")))), codes.BadRequest, "checksum mismatch"},
		{"anonymous", "/files/public/a.bin", []byte("x"), nil, codes.Unauthorized, "authentication required"},
	} {
		c30, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		resp, err := dialCoAPBlocks(t, h.coap, blockwise.SZX1024).Put(c30, tc.path, message.AppOctets, bytes.NewReader(tc.body), tc.opts...)
		cancel()
		if err != nil || resp.Code() != tc.want || !strings.Contains(string(coapBody(resp)), tc.msg) {
			code := codes.Empty
			if resp != nil {
				code = resp.Code()
			}
			t.Errorf("CoAP %s: %v %v, want %v with %q", tc.desc, code, err, tc.want, tc.msg)
		}
	}
	resp, err := dialCoAPBlocks(t, h.coap, blockwise.SZX1024).Get(ctx(t), "/files/private/used.bin", bob...)
	if err != nil || resp.Code() != codes.Forbidden {
		t.Errorf("CoAP read by bob of a private file: %v %v", resp.Code(), err)
	}
	// MQTT: no descriptor of a refused upload reached anyone.
	watcher.none(t, 200*time.Millisecond)
	for _, n := range []string{"public/big.bin", "private/more.bin", "private/x.bin", "public/c.bin", "public/a.bin"} {
		if _, err := h.Files.Stat(t.Context(), n); err == nil {
			t.Errorf("refused upload %s is visible", n)
		}
	}
}

func TestFileInterruptedUploadsLeaveNothing(t *testing.T) {
	h := startFilesHub(t)
	watcher := dialMQTT(t, h.mqtt, "watcher", "alice", "alicepw", true)
	watcher.subscribe(t, "files/#", 1)
	tmp := filepath.Join(h.Config.DataDir, "files", "tmp")
	temps := func() int {
		es, _ := os.ReadDir(tmp)
		return len(es)
	}

	// HTTP: a body cut half way.
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.http, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST /api/v1/files?name=cut/http.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Basic %s\r\nContent-Length: 500000\r\n\r\n", "YWxpY2U6YWxpY2Vwdw==")
	if _, err := conn.Write(randomish(200000)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the HTTP upload in progress", func() bool { return temps() == 1 })
	conn.Close()
	eventually(t, "the cut HTTP upload discarded", func() bool { return temps() == 0 })

	// CoAP: the first blocks of a block-wise PUT, then silence (a client
	// whose own block-wise layer is off, so the test sends each block).
	cc, err := udp.Dial(h.coap, options.WithBlockwise(false, blockwise.SZX1024, time.Second), options.WithErrors(func(error) {}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close(); <-cc.Done() })
	for num := range int64(3) {
		req, err := cc.NewPutRequest(ctx(t), "/files/cut/coap.bin", message.AppOctets, bytes.NewReader(randomish(1024)),
			coapQuery("u=alice"), coapQuery("p=alicepw"), coapQuery("c=cutter"))
		if err != nil {
			t.Fatal(err)
		}
		v, _ := blockwise.EncodeBlockOption(blockwise.SZX1024, num, true)
		req.SetOptionUint32(message.Block1, v)
		resp, err := cc.Do(req)
		if err != nil || resp.Code() != codes.Continue {
			t.Fatalf("block %d: %v %v", num, resp.Code(), err)
		}
		cc.ReleaseMessage(req)
	}
	if temps() != 1 {
		t.Errorf("%d temporary files during the CoAP upload, want 1", temps())
	}
	eventually(t, "the abandoned CoAP upload discarded", func() bool { return temps() == 0 })

	for _, n := range []string{"cut/http.bin", "cut/coap.bin"} {
		if s, _ := h.get(t, "alice", "/api/v1/files/"+n, nil); s != http.StatusNotFound {
			t.Errorf("GET %s after an interrupted upload: %d", n, s)
		}
	}
	watcher.none(t, 100*time.Millisecond)
}

func TestFileToDevice(t *testing.T) {
	h := startFilesHub(t)
	if s, b := httpAsBody(t, http.MethodPost, h.http+"/api/v1/devices", "admin", "adminpw", `{"id":"lamp1","protocol":"mqtt"}`); s != http.StatusCreated {
		t.Fatalf("add device: %d %s", s, b)
	}
	fw := randomish(300 << 10)
	if s, b := h.upload(t, "alice", "fw/lamp.bin", bytes.NewReader(fw), nil); s != http.StatusCreated {
		t.Fatalf("upload: %d %s", s, b)
	}
	// The device: on a "file" command it fetches the bytes over HTTP from
	// the shared link, which needs no credentials (a device's default
	// rules do not cover files/...), and replies with the digest it got.
	dev := dialMQTT(t, h.mqtt, "lamp1", "lamp1", "lamppw", true)
	dev.Client.Subscribe("devices/lamp1/commands/file", 1, func(c paho.Client, m paho.Message) {
		var req struct {
			ID     string `json:"id"`
			Params struct {
				files.Descriptor
				SharedURL string `json:"shared_url"`
			} `json:"params"`
		}
		if json.Unmarshal(m.Payload(), &req) != nil || req.Params.SHA256 == "" || !strings.Contains(req.Params.SharedURL, "/api/") {
			return
		}
		reply := `{"error":"fetch failed"}`
		// The link's host is this machine's outward address; the test
		// reaches the same port on loopback.
		u := h.http + req.Params.SharedURL[strings.Index(req.Params.SharedURL, "/api/"):]
		if resp, err := http.Get(u); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				reply = fmt.Sprintf(`{"sha256":%q}`, sumHex(b))
			}
		}
		c.Publish("devices/lamp1/responses/"+req.ID, 1, false, reply)
	}).WaitTimeout(wait)
	eventually(t, "lamp1 online", func() bool {
		_, body := httpAsBody(t, http.MethodGet, h.http+"/api/v1/devices/lamp1", "admin", "adminpw", "")
		return strings.Contains(body, `"online":true`)
	})
	s, b := httpAsBody(t, http.MethodPost, h.http+"/api/v1/devices/lamp1/files/fw/lamp.bin?timeout=5s", "admin", "adminpw", "")
	if s != http.StatusOK || b != fmt.Sprintf(`{"sha256":%q}`, sumHex(fw)) {
		t.Fatalf("file command: %d %s", s, b)
	}
	// bob may neither command the device nor read fw/.
	if s, b := httpAsBody(t, http.MethodPost, h.http+"/api/v1/devices/lamp1/files/fw/lamp.bin", "bob", "bobpw", ""); s != http.StatusForbidden {
		t.Errorf("file command by bob: %d %s", s, b)
	}
}

// TestFileToCoAPDevice: a DTLS CoAP device observing its command topics
// gets the file command, fetches the bytes block-wise over the same DTLS
// session and replies with their sha256.
func TestFileToCoAPDevice(t *testing.T) {
	h := hubtest.Start(t, func(c *gateway.Config) {
		c.CoAP.DTLSAddr = "127.0.0.1:0"
		c.ACL = map[string][]adapters.ACLRule{
			"therm1": {{Action: "all", Filter: "devices/therm1/#", Allow: true}, {Action: "subscribe", Filter: "files/fw/#", Allow: true}},
		}
	})
	base := "http://" + h.Addr(t, "rest")
	if code, body, _ := httpDo(t, http.MethodPost, base+"/api/v1/devices", "application/json",
		`{"id":"therm1","protocol":"coap","psk":"746865726d6b6579"}`); code != http.StatusCreated {
		t.Fatalf("create device = %d %s", code, body)
	}
	fw := randomish(20000)
	if code, body, _ := httpDo(t, http.MethodPost, base+"/api/v1/files?name=fw/therm.bin", "application/octet-stream", string(fw)); code != http.StatusCreated {
		t.Fatalf("upload = %d %s", code, body)
	}
	cc, err := dtls.Dial(h.Addr(t, "coap.coaps"), dtls.NewDTLSClientOptions(
		piondtls.WithPSK(func([]byte) ([]byte, error) { return []byte("thermkey"), nil }),
		piondtls.WithPSKIdentityHint([]byte("therm1")),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8),
	), options.WithErrors(func(error) {}), options.WithBlockwise(true, blockwise.SZX256, 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close(); <-cc.Done() })
	cmds := make(chan []byte, 4)
	obs, err := cc.Observe(ctxLong(t), "/ps/devices/therm1/commands/+", func(m *pool.Message) {
		if b := coapBody(m); len(b) > 0 && bytes.Contains(b, []byte(`"params"`)) {
			cmds <- b
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		_ = obs.Cancel(c)
	})
	eventually(t, "therm1 online", func() bool {
		_, body, _ := httpDo(t, http.MethodGet, base+"/api/v1/devices/therm1", "", "")
		return strings.Contains(body, `"online":true`)
	})
	go func() {
		var req struct {
			ID     string           `json:"id"`
			Params files.Descriptor `json:"params"`
		}
		select {
		case b := <-cmds:
			if json.Unmarshal(b, &req) != nil {
				return
			}
		case <-time.After(wait):
			return
		}
		c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		resp, err := cc.Get(c, req.Params.CoAPPath)
		reply := `{"error":"fetch failed"}`
		if err == nil && resp.Code() == codes.Content {
			reply = fmt.Sprintf(`{"sha256":%q}`, sumHex(coapBody(resp)))
		}
		_, _ = cc.Post(c, "/ps/devices/therm1/responses/"+req.ID, message.AppJSON, strings.NewReader(reply))
	}()
	code, body, _ := httpDo(t, http.MethodPost, base+"/api/v1/devices/therm1/files/fw/therm.bin?timeout=10s", "", "")
	if code != http.StatusOK || body != fmt.Sprintf(`{"sha256":%q}`, sumHex(fw)) {
		t.Fatalf("file command to a CoAP device = %d %s", code, body)
	}
}

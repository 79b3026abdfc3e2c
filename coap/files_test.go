package coap

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/udp"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/files"
	"github.com/hubsmith/hub/store"
)

type filesEnv struct {
	*env
	fs  *files.Store
	dir string
}

// startFiles runs the adapter with a real file store (SQLite metadata,
// blobs on disk); fmod and mod adjust the configs.
func startFiles(t testing.TB, fmod func(*files.Config), mod func(*Config)) *filesEnv {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	st, err := store.Open(ctx, filepath.Join(dir, "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	fe := &filesEnv{dir: filepath.Join(dir, "files")}
	fe.env = startSpool(t, st, func(c *Config) {
		fc := files.Config{Dir: fe.dir, DB: st, Bus: c.Bus, SweepInterval: -1, Logger: c.Logger}
		if fmod != nil {
			fmod(&fc)
		}
		fs, err := files.Open(ctx, fc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = fs.Close() })
		fe.fs = fs
		c.Files = fs
		if mod != nil {
			mod(c)
		}
	})
	return fe
}

func (e *env) dialSZX(t testing.TB, szx blockwise.SZX) *udpClient.Conn {
	t.Helper()
	runner, stop := periodicRunner()
	cc, err := udp.Dial(e.addr, options.WithBlockwise(true, szx, 10*time.Second),
		options.WithErrors(func(error) {}), options.WithPeriodicRunner(runner))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close(); <-cc.Done(); stop() })
	return cc
}

func hexSum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

func TestFileBlockwiseGet(t *testing.T) {
	t.Parallel()
	e := startFiles(t, nil, nil)
	fw := pattern(20000)
	d, err := e.fs.Put(context.Background(), "fw/esp32/v1.bin", bytes.NewReader(fw), files.PutOptions{Size: -1, ContentType: "application/octet-stream"})
	if err != nil {
		t.Fatal(err)
	}
	for _, szx := range []blockwise.SZX{blockwise.SZX16, blockwise.SZX64, blockwise.SZX1024} {
		cc := e.dialSZX(t, szx)
		// 16-byte blocks are 1,250 exchanges: more than 5 s on a busy
		// machine with -race.
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		defer cancel()
		resp, err := cc.Get(ctx, "/files/fw/esp32/v1.bin")
		if err != nil {
			t.Fatalf("block size %d: %v", szx.Size(), err)
		}
		got := body(t, resp)
		if resp.Code() != codes.Content || hexSum(got) != d.SHA256 {
			t.Errorf("block size %d: %v, %d bytes, sha256 %s", szx.Size(), resp.Code(), len(got), hexSum(got))
		}
		if tag, err := resp.ETag(); err != nil || hex.EncodeToString(tag) != d.SHA256[:16] {
			t.Errorf("block size %d: ETag %x, %v", szx.Size(), tag, err)
		}
		if cf, err := resp.ContentFormat(); err != nil || cf != message.AppOctets {
			t.Errorf("block size %d: Content-Format %v, %v", szx.Size(), cf, err)
		}
	}
	// The descriptor is the retained value of /ps/files/{name}.
	resp, err := e.dial(t, "").Get(ctx5(t), "/ps/files/fw/esp32/v1.bin")
	if err != nil {
		t.Fatal(err)
	}
	var got files.Descriptor
	if err := json.Unmarshal(body(t, resp), &got); err != nil || got != d {
		t.Errorf("GET /ps/files/...: %v %+v, want %+v", err, got, d)
	}
}

// rawReq sends one request datagram with options and returns the answer.
func (r *rawConn) do(code codes.Code, mid int32, path string, opts map[message.OptionID]uint32, etag []byte, queries []string, payload []byte) *pool.Message {
	r.t.Helper()
	p := pool.NewMessage(context.Background())
	p.SetType(message.Confirmable)
	p.SetCode(code)
	p.SetMessageID(mid)
	p.SetToken([]byte{byte(mid), byte(mid >> 8), 7})
	if err := p.SetPath(path); err != nil {
		r.t.Fatal(err)
	}
	for id, v := range opts {
		p.SetOptionUint32(id, v)
	}
	if etag != nil {
		p.SetOptionBytes(message.ETag, etag)
	}
	for _, q := range queries {
		p.AddQuery(q)
	}
	if payload != nil {
		p.SetBody(bytes.NewReader(payload))
	}
	b, err := p.MarshalWithEncoder(coder.DefaultCoder)
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatal(err)
	}
	for {
		m := r.mustRecv()
		if m.MessageID() == mid || bytes.Equal(m.Token(), p.Token()) {
			return m
		}
	}
}

func block(szx blockwise.SZX, num int64, more bool) uint32 {
	v, err := blockwise.EncodeBlockOption(szx, num, more)
	if err != nil {
		panic(err)
	}
	return v
}

func TestFileGetAnyBlock(t *testing.T) {
	t.Parallel()
	e := startFiles(t, nil, nil)
	fw := pattern(1000)
	d, err := e.fs.Put(context.Background(), "fw.bin", bytes.NewReader(fw), files.PutOptions{Size: -1})
	if err != nil {
		t.Fatal(err)
	}
	r := e.raw(t)
	// A client resumes at block 5 of 64 bytes, a fresh exchange.
	m := r.do(codes.GET, 100, "/files/fw.bin", map[message.OptionID]uint32{message.Block2: block(blockwise.SZX64, 5, false)}, nil, nil, nil)
	v, _ := m.GetOptionUint32(message.Block2)
	szx, num, more, _ := blockwise.DecodeBlockOption(v)
	size2, _ := m.GetOptionUint32(message.Size2)
	if m.Code() != codes.Content || szx != blockwise.SZX64 || num != 5 || !more || size2 != 1000 || !bytes.Equal(body(t, m), fw[320:384]) {
		t.Errorf("block 5: %v szx %d num %d more %v size2 %d", m.Code(), szx.Size(), num, more, size2)
	}
	// The last block.
	m = r.do(codes.GET, 101, "/files/fw.bin", map[message.OptionID]uint32{message.Block2: block(blockwise.SZX64, 15, false)}, nil, nil, nil)
	v, _ = m.GetOptionUint32(message.Block2)
	_, num, more, _ = blockwise.DecodeBlockOption(v)
	if m.Code() != codes.Content || num != 15 || more || !bytes.Equal(body(t, m), fw[960:]) {
		t.Errorf("last block: %v num %d more %v", m.Code(), num, more)
	}
	// A matching ETag: 2.03 Valid without the bytes.
	tag, _ := hex.DecodeString(d.SHA256[:16])
	if m := r.do(codes.GET, 102, "/files/fw.bin", nil, tag, nil, nil); m.Code() != codes.Valid || len(body(t, m)) != 0 {
		t.Errorf("GET with its ETag: %v", m.Code())
	}
	if m := r.do(codes.GET, 103, "/files/none.bin", nil, nil, nil, nil); m.Code() != codes.NotFound || !strings.Contains(string(body(t, m)), "file not found") {
		t.Errorf("GET of no file: %v %q", m.Code(), body(t, m))
	}
	if m := r.do(codes.GET, 104, "/files/a/../b", nil, nil, nil, nil); m.Code() != codes.BadRequest {
		t.Errorf("GET of a bad name: %v %q", m.Code(), body(t, m))
	}
}

func TestFileBlockwisePut(t *testing.T) {
	t.Parallel()
	e := startFiles(t, nil, nil)
	retained := e.collect(t, "files/#")
	fw := pattern(50000) // over MaxPayload: the file store bounds it, not the adapter
	for i, szx := range []blockwise.SZX{blockwise.SZX16, blockwise.SZX1024} {
		data := fw
		if szx == blockwise.SZX16 {
			data = fw[:3000]
		}
		cc := e.dialSZX(t, szx)
		resp, err := cc.Put(ctx5(t), "/files/up/image.bin", message.AppOctets, bytes.NewReader(data), query("sha256="+hexSum(data)))
		if err != nil {
			t.Fatalf("block size %d: %v", szx.Size(), err)
		}
		want := codes.Created
		if i > 0 {
			want = codes.Changed
		}
		if resp.Code() != want {
			t.Fatalf("block size %d: %v %q, want %v", szx.Size(), resp.Code(), body(t, resp), want)
		}
		env := retained.next(t)
		var d files.Descriptor
		if err := json.Unmarshal(env.Payload, &d); err != nil || d.SHA256 != hexSum(data) || d.Size != int64(len(data)) || d.ContentType != "application/octet-stream" {
			t.Errorf("block size %d: descriptor %s", szx.Size(), env.Payload)
		}
		_, f, err := e.fs.Open(context.Background(), "up/image.bin")
		if err != nil {
			t.Fatal(err)
		}
		st, _ := f.Stat()
		f.Close()
		if st.Size() != int64(len(data)) {
			t.Errorf("block size %d: stored %d bytes", szx.Size(), st.Size())
		}
	}
	// A file in one datagram, no Block1.
	resp, err := e.dial(t, "").Put(ctx5(t), "/files/small.txt", message.TextPlain, strings.NewReader("hello"))
	if err != nil || resp.Code() != codes.Created {
		t.Fatalf("small PUT: %v %v", resp.Code(), err)
	}
	if d, err := e.fs.Stat(context.Background(), "small.txt"); err != nil || d.Size != 5 || d.ContentType != "text/plain;charset=utf-8" {
		t.Errorf("small file: %+v, %v", d, err)
	}
	resp, err = e.dial(t, "").Delete(ctx5(t), "/files/small.txt")
	if err != nil || resp.Code() != codes.Deleted {
		t.Fatalf("DELETE: %v %v", resp.Code(), err)
	}
	if _, err := e.fs.Stat(context.Background(), "small.txt"); !errors.Is(err, files.ErrNotFound) {
		t.Errorf("after DELETE: %v", err)
	}
}

func TestFilePutResumeAndInterrupt(t *testing.T) {
	t.Parallel()
	e := startFiles(t, nil, func(c *Config) { c.FileUploadTimeout = 300 * time.Millisecond })
	data := pattern(64*4 + 10)
	opts := func(num int64, more bool) map[message.OptionID]uint32 {
		o := map[message.OptionID]uint32{message.Block1: block(blockwise.SZX64, num, more)}
		if num == 0 {
			o[message.Size1] = uint32(len(data))
		}
		return o
	}
	chunk := func(num int64) []byte { return data[num*64 : min(int(num+1)*64, len(data))] }
	q := []string{"c=dev7"}
	r := e.raw(t)
	for num := range int64(2) {
		m := r.do(codes.PUT, int32(200+num), "/files/fw/dev7.bin", opts(num, true), nil, q, chunk(num))
		if m.Code() != codes.Continue {
			t.Fatalf("block %d: %v %q", num, m.Code(), body(t, m))
		}
		if v, _ := m.GetOptionUint32(message.Block1); v != block(blockwise.SZX64, num, true) {
			t.Errorf("block %d: Block1 echo %d", num, v)
		}
	}
	// A block repeated with a new message id is acknowledged again; one
	// past the next is 4.08.
	if m := r.do(codes.PUT, 210, "/files/fw/dev7.bin", opts(1, true), nil, q, chunk(1)); m.Code() != codes.Continue {
		t.Errorf("repeated block: %v %q", m.Code(), body(t, m))
	}
	if m := r.do(codes.PUT, 211, "/files/fw/dev7.bin", opts(3, true), nil, q, chunk(3)); m.Code() != codes.RequestEntityIncomplete {
		t.Errorf("block 3 before 2: %v %q", m.Code(), body(t, m))
	}
	if _, err := e.fs.Stat(context.Background(), "fw/dev7.bin"); !errors.Is(err, files.ErrNotFound) {
		t.Errorf("an upload in progress is visible: %v", err)
	}
	// The same client id from another port resumes at block 2.
	r2 := e.raw(t)
	for num := int64(2); num <= 4; num++ {
		m := r2.do(codes.PUT, int32(300+num), "/files/fw/dev7.bin", opts(num, num < 4), nil, q, chunk(num))
		want := codes.Continue
		if num == 4 {
			want = codes.Created
		}
		if m.Code() != want {
			t.Fatalf("resumed block %d: %v %q", num, m.Code(), body(t, m))
		}
	}
	d, err := e.fs.Stat(context.Background(), "fw/dev7.bin")
	if err != nil || d.SHA256 != hexSum(data) {
		t.Fatalf("resumed upload: %+v, %v", d, err)
	}
	// The last block again (a lost response) gets the same answer.
	if m := r2.do(codes.PUT, 320, "/files/fw/dev7.bin", opts(4, false), nil, q, chunk(4)); m.Code() != codes.Created {
		t.Errorf("repeated last block: %v %q", m.Code(), body(t, m))
	}

	// An upload abandoned half way leaves nothing once it idles out.
	if m := r.do(codes.PUT, 400, "/files/fw/cut.bin", opts(0, true), nil, q, chunk(0)); m.Code() != codes.Continue {
		t.Fatalf("block 0: %v", m.Code())
	}
	tmp := filepath.Join(e.dir, "tmp")
	waitFor(t, "the abandoned upload discarded", func() bool {
		es, _ := os.ReadDir(tmp)
		return e.a.FileUploads() == 0 && len(es) == 0
	})
	if _, err := e.fs.Stat(context.Background(), "fw/cut.bin"); !errors.Is(err, files.ErrNotFound) {
		t.Errorf("abandoned upload: %v", err)
	}
	if rs, _ := e.bus.Retained(context.Background(), "files/fw/cut.bin"); len(rs) != 0 {
		t.Error("abandoned upload has a descriptor")
	}
	if m := r.do(codes.PUT, 401, "/files/fw/cut.bin", opts(1, true), nil, q, chunk(1)); m.Code() != codes.RequestEntityIncomplete {
		t.Errorf("block after the upload idled out: %v", m.Code())
	}
}

func TestFileRefusals(t *testing.T) {
	t.Parallel()
	e := startFiles(t, func(c *files.Config) { c.MaxFileSize = 2000; c.QuotaPerPrincipal = 3000 }, func(c *Config) {
		c.Addr = "0.0.0.0:0" // credentials required
		c.Auth = adapters.NewAuth(testUsers, map[string][]adapters.ACLRule{
			"alice": {{Action: adapters.ActionAll, Filter: "files/alice/#", Allow: true}},
		})
		c.MaxFileUploads = 2
	})
	ctx := context.Background()
	if _, err := e.fs.Put(ctx, "alice/used", bytes.NewReader(make([]byte, 2000)), files.PutOptions{Size: -1, Uploader: "alice"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.fs.Put(ctx, "secret/x", strings.NewReader("x"), files.PutOptions{Size: -1}); err != nil {
		t.Fatal(err)
	}
	alice := []string{"u=alice", "p=alicepw"}
	r := e.raw(t)
	b1 := func(num int64, more bool, size uint32) map[message.OptionID]uint32 {
		o := map[message.OptionID]uint32{message.Block1: block(blockwise.SZX1024, num, more)}
		if size > 0 {
			o[message.Size1] = size
		}
		return o
	}
	for i, tc := range []struct {
		desc    string
		code    codes.Code
		path    string
		opts    map[message.OptionID]uint32
		queries []string
		payload []byte
		want    codes.Code
		msg     string
	}{
		{"anonymous off loopback", codes.GET, "/files/alice/used", nil, nil, nil, codes.Unauthorized, "authentication required"},
		{"acl read", codes.GET, "/files/secret/x", nil, alice, nil, codes.Forbidden, "not authorized"},
		{"acl write", codes.PUT, "/files/secret/y", nil, alice, []byte("x"), codes.Forbidden, "not authorized"},
		{"acl delete", codes.DELETE, "/files/secret/x", nil, alice, nil, codes.Forbidden, "not authorized"},
		{"size declared", codes.PUT, "/files/alice/big", b1(0, true, 5000), alice, make([]byte, 1024), codes.RequestEntityTooLarge, "the limit is 2000"},
		{"quota", codes.PUT, "/files/alice/more", b1(0, true, 1500), alice, make([]byte, 1024), codes.Forbidden, "quota exceeded"},
		{"checksum", codes.PUT, "/files/alice/c", nil, append([]string{"sha256=" + hexSum([]byte("other"))}, alice...), []byte("data"), codes.BadRequest, "checksum mismatch"},
		{"bad name", codes.PUT, "/files/alice/+", nil, alice, []byte("x"), codes.BadRequest, "invalid file name"},
		{"short block", codes.PUT, "/files/alice/s", b1(0, true, 0), alice, []byte("x"), codes.BadRequest, "has 1 bytes"},
		{"no upload", codes.PUT, "/files/alice/n", b1(3, true, 0), alice, make([]byte, 1024), codes.RequestEntityIncomplete, "no upload is in progress"},
		{"method", codes.POST, "/files/alice/used", nil, alice, []byte("x"), codes.MethodNotAllowed, "use GET, PUT or DELETE"},
	} {
		m := r.do(tc.code, int32(500+i), tc.path, tc.opts, nil, tc.queries, tc.payload)
		if m.Code() != tc.want || !strings.Contains(string(body(t, m)), tc.msg) {
			t.Errorf("%s: %v %q, want %v with %q", tc.desc, m.Code(), body(t, m), tc.want, tc.msg)
		}
		if tc.want == codes.RequestEntityTooLarge {
			if v, err := m.GetOptionUint32(message.Size1); err != nil || v != 2000 {
				t.Errorf("%s: Size1 %d, %v; want the limit 2000", tc.desc, v, err)
			}
		}
	}
	// Streamed past the limit without a declared size: refused at the
	// block that crosses it (by admin, whose quota is untouched).
	admin := []string{"u=admin", "p=adminpw"}
	for num := int64(0); num < 2; num++ {
		if m := r.do(codes.PUT, int32(600+num), "/files/alice/stream", b1(num, true, 0), nil, admin, make([]byte, 1024)); m.Code() != codes.Continue && num == 0 ||
			num == 1 && m.Code() != codes.RequestEntityTooLarge {
			t.Errorf("streamed block %d: %v %q", num, m.Code(), body(t, m))
		}
	}
	// At most MaxFileUploads at once.
	for i, n := range []string{"alice/p1", "alice/p2", "alice/p3"} {
		m := r.do(codes.PUT, int32(700+i), "/files/"+n, b1(0, true, 0), nil, admin, make([]byte, 1024))
		if want := codes.Continue; i == 2 && m.Code() != codes.ServiceUnavailable || i < 2 && m.Code() != want {
			t.Errorf("upload %d: %v %q", i, m.Code(), body(t, m))
		}
	}
	for _, n := range []string{"alice/big", "alice/more", "alice/c", "alice/stream", "secret/y"} {
		if _, err := e.fs.Stat(ctx, n); err == nil {
			t.Errorf("refused upload %s is visible", n)
		}
	}
}

// FuzzFileBlock1 sends PUTs of /files with arbitrary Block1 and Size1
// values and payloads, in sequence on one upload: every request gets an
// answer, and a file that becomes visible holds exactly the bytes its
// descriptor's sha256 names.
func FuzzFileBlock1(f *testing.F) {
	e := startFiles(f, func(c *files.Config) { c.MaxFileSize = 8192 }, nil)
	f.Add(uint32(block(blockwise.SZX16, 0, true)), uint32(0), 16)
	f.Add(uint32(block(blockwise.SZX16, 1, false)), uint32(0), 5)
	f.Add(uint32(block(blockwise.SZX1024, 0, false)), uint32(100), 100)
	f.Add(uint32(block(blockwise.SZX64, 3, true)), uint32(1<<20), 64)
	f.Add(uint32(0xffffff), uint32(0), 0)
	f.Add(uint32(7), uint32(9000), 1024) // BERT szx
	ra, err := net.ResolveUDPAddr("udp", e.addr)
	if err != nil {
		f.Fatal(err)
	}
	c, err := net.DialUDP("udp", nil, ra)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = c.Close() })
	r := &rawConn{c: c}
	var mid int32 = 1000
	f.Fuzz(func(t *testing.T, b1, size1 uint32, n int) {
		r.t = t
		mid = (mid + 1) & 0xffff
		opts := map[message.OptionID]uint32{message.Block1: b1 & 0xffffff}
		if size1 > 0 {
			opts[message.Size1] = size1
		}
		m := r.do(codes.PUT, mid, "/files/fuzz/f.bin", opts, nil, []string{"c=fuzz"}, pattern(min(max(n, 0), 1024)))
		if m.Code() < codes.Created {
			t.Fatalf("answer %v", m.Code())
		}
		d, rd, err := e.fs.Reader(context.Background(), "fuzz/f.bin")
		if err != nil {
			return
		}
		got := make([]byte, d.Size)
		if _, err := rd.ReadAt(got, 0); err != nil && !errors.Is(err, io.EOF) {
			t.Fatal(err)
		}
		if hexSum(got) != d.SHA256 {
			t.Fatalf("visible file of %d bytes does not match its sha256", d.Size)
		}
	})
}

package rest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/devices"
	"github.com/hubsmith/hub/files"
	"github.com/hubsmith/hub/store"
)

func hexSum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// req sends a request with headers and returns status, headers and body.
func (h *testHub) req(method, path, auth string, hdr map[string]string, body io.Reader) (int, http.Header, []byte) {
	h.t.Helper()
	r, err := http.NewRequest(method, h.base+path, body)
	if err != nil {
		h.t.Fatal(err)
	}
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	if u, p, ok := strings.Cut(auth, ":"); ok {
		r.SetBasicAuth(u, p)
	}
	resp, err := h.httpc.Do(r)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

func decodeDescriptor(t *testing.T, b []byte) files.Descriptor {
	t.Helper()
	var d files.Descriptor
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("descriptor %q: %v", b, err)
	}
	return d
}

func TestFileUploadDownload(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOpts{files: func(*files.Config) {}})
	body := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	retained := h.busSub("files/#")

	s, hdr, b := h.req("POST", "/api/v1/files?name=fw/esp32/v1.bin&sha256="+hexSum(body), "",
		map[string]string{"Content-Type": "application/octet-stream"}, bytes.NewReader(body))
	if s != 201 {
		t.Fatalf("upload: %d %s", s, b)
	}
	d := decodeDescriptor(t, b)
	if d.Name != "fw/esp32/v1.bin" || d.Size != int64(len(body)) || d.SHA256 != hexSum(body) ||
		d.URL != h.base+"/api/v1/files/fw/esp32/v1.bin" || d.CoAPPath != "/files/fw/esp32/v1.bin" ||
		hdr.Get("Location") != "/api/v1/files/fw/esp32/v1.bin" || hdr.Get("ETag") != `"`+d.SHA256+`"` {
		t.Errorf("upload answered %+v, headers %v", d, hdr)
	}
	e := recv(t, retained, "descriptor on files/fw/esp32/v1.bin")
	if e.Topic != "files/fw/esp32/v1.bin" || !e.Retain || e.ContentType != "application/json" || decodeDescriptor(t, e.Payload) != d {
		t.Errorf("bus got %s %q retain %v", e.Topic, e.Payload, e.Retain)
	}

	for _, tc := range []struct {
		desc   string
		method string
		hdr    map[string]string
		status int
		want   []byte
	}{
		{"whole", "GET", nil, 200, body},
		{"range", "GET", map[string]string{"Range": "bytes=100-199"}, 206, body[100:200]},
		{"suffix range", "GET", map[string]string{"Range": "bytes=-10"}, 206, body[len(body)-10:]},
		{"not modified", "GET", map[string]string{"If-None-Match": d.ETag()}, 304, nil},
		{"other etag", "GET", map[string]string{"If-None-Match": `"x"`}, 200, body},
		{"bad range", "GET", map[string]string{"Range": "bytes=999999-"}, 416, nil},
		{"head", "HEAD", nil, 200, nil},
	} {
		s, hdr, b := h.req(tc.method, "/api/v1/files/fw/esp32/v1.bin", "", tc.hdr, nil)
		if s != tc.status || (tc.want != nil && !bytes.Equal(b, tc.want)) {
			t.Errorf("%s: %d, %d bytes; want %d, %d bytes", tc.desc, s, len(b), tc.status, len(tc.want))
		}
		if s == 200 || s == 206 {
			if hdr.Get("ETag") != d.ETag() || hdr.Get("Content-Type") != "application/octet-stream" ||
				hdr.Get(HeaderChecksum) != d.SHA256 || hdr.Get("Accept-Ranges") != "bytes" || hdr.Get("Last-Modified") == "" {
				t.Errorf("%s: headers %v", tc.desc, hdr)
			}
		}
		if tc.method == "HEAD" && hdr.Get("Content-Length") != fmt.Sprint(len(body)) {
			t.Errorf("HEAD: Content-Length %q", hdr.Get("Content-Length"))
		}
	}
	if got := hdr.Get(HeaderReprDigest); got != "" {
		t.Errorf("upload answer carries %s %q", HeaderReprDigest, got)
	}

	// Multipart, with the name and digest as fields before the file.
	var mp bytes.Buffer
	w := multipart.NewWriter(&mp)
	_ = w.WriteField("name", "photos/My Cat.txt")
	_ = w.WriteField("sha256", hexSum([]byte("meow")))
	fw, _ := w.CreateFormFile("file", "ignored.txt")
	_, _ = fw.Write([]byte("meow"))
	_ = w.Close()
	s, _, b = h.req("POST", "/api/v1/files", "", map[string]string{"Content-Type": w.FormDataContentType()}, &mp)
	if s != 201 {
		t.Fatalf("multipart upload: %d %s", s, b)
	}
	if e := recv(t, retained, "the multipart file's descriptor"); e.Topic != "files/photos/My Cat.txt" {
		t.Errorf("bus got %s", e.Topic)
	}
	if md := decodeDescriptor(t, b); md.Name != "photos/My Cat.txt" || md.URL != h.base+"/api/v1/files/photos/My%20Cat.txt" || md.Size != 4 {
		t.Errorf("multipart descriptor %+v", md)
	}
	s, _, b = h.req("GET", "/api/v1/files/photos/My%20Cat.txt", "", nil, nil)
	if s != 200 || string(b) != "meow" {
		t.Errorf("GET of an escaped name: %d %q", s, b)
	}

	// List, paginated.
	s, _, b = h.req("GET", "/api/v1/files?limit=1", "", nil, nil)
	var l fileList
	if s != 200 || json.Unmarshal(b, &l) != nil || len(l.Files) != 1 || l.Files[0].Name != "fw/esp32/v1.bin" || l.Next != "fw/esp32/v1.bin" {
		t.Fatalf("list page 1: %d %s", s, b)
	}
	s, _, b = h.req("GET", "/api/v1/files?limit=1&after="+l.Next, "", nil, nil)
	l = fileList{}
	if s != 200 || json.Unmarshal(b, &l) != nil || len(l.Files) != 1 || l.Files[0].Name != "photos/My Cat.txt" || l.Next != "" {
		t.Fatalf("list page 2: %d %s", s, b)
	}

	// Delete clears the retained descriptor.
	if s, _, b := h.req("DELETE", "/api/v1/files/fw/esp32/v1.bin", "", nil, nil); s != 204 {
		t.Fatalf("delete: %d %s", s, b)
	}
	if e := recv(t, retained, "the cleared descriptor"); e.Topic != "files/fw/esp32/v1.bin" || len(e.Payload) != 0 {
		t.Errorf("after delete the bus got %s %q", e.Topic, e.Payload)
	}
	if s, _, b := h.req("GET", "/api/v1/files/fw/esp32/v1.bin", "", nil, nil); s != 404 || !strings.Contains(errorOf(t, string(b)), "not found") {
		t.Errorf("GET after delete: %d %s", s, b)
	}
	if s, _, b := h.req("DELETE", "/api/v1/files/fw/esp32/v1.bin", "", nil, nil); s != 404 {
		t.Errorf("second delete: %d %s", s, b)
	}
}

func TestFileRefusals(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOpts{addr: "0.0.0.0:0", files: func(c *files.Config) { c.MaxFileSize = 4096; c.QuotaPerPrincipal = 6000 }})
	ctx := context.Background()
	for _, u := range []string{"alice", "mallory"} {
		if err := h.st.AddUser(ctx, u, u+"pw", adapters.RoleUser); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.st.SetACL(ctx, "mallory", []adapters.ACLRule{
		{Action: adapters.ActionAll, Filter: "files/public/#", Allow: true},
	}); err != nil {
		t.Fatal(err)
	}
	if s, _, b := h.req("POST", "/api/v1/files?name=private/doc", "alice:alicepw", nil, strings.NewReader("secret")); s != 201 {
		t.Fatalf("alice's upload: %d %s", s, b)
	}
	if s, _, b := h.req("POST", "/api/v1/files?name=public/quota", "alice:alicepw", nil, bytes.NewReader(make([]byte, 4000))); s != 201 {
		t.Fatalf("alice's upload: %d %s", s, b)
	}
	small := []byte("hello")
	b64 := func(b []byte) string { s := sha256.Sum256(b); return base64.StdEncoding.EncodeToString(s[:]) }
	for _, tc := range []struct {
		desc, method, path, auth string
		hdr                      map[string]string
		body                     []byte
		status                   int
		msg                      string
	}{
		{"no credentials", "POST", "/api/v1/files?name=a", "", nil, small, 401, "authentication required"},
		{"no credentials read", "GET", "/api/v1/files/private/doc", "", nil, nil, 401, "authentication required"},
		{"acl upload", "POST", "/api/v1/files?name=private/x", "mallory:mallorypw", nil, small, 403, "not authorized"},
		{"acl read", "GET", "/api/v1/files/private/doc", "mallory:mallorypw", nil, nil, 403, "not authorized"},
		{"acl delete", "DELETE", "/api/v1/files/private/doc", "mallory:mallorypw", nil, nil, 403, "not authorized"},
		{"too large declared", "POST", "/api/v1/files?name=public/big", "mallory:mallorypw", nil, make([]byte, 5000), 413, "the limit is 4096"},
		{"too large chunked", "POST", "/api/v1/files?name=public/big", "mallory:mallorypw", map[string]string{"chunked": ""}, make([]byte, 5000), 413, "limit of 4096"},
		{"quota", "POST", "/api/v1/files?name=public/more", "alice:alicepw", nil, make([]byte, 3000), 507, "alice has 4006 of 6000 bytes"},
		{"checksum query", "POST", "/api/v1/files?name=public/c&sha256=" + hexSum([]byte("other")), "alice:alicepw", nil, small, 400, "checksum mismatch"},
		{"checksum header", "POST", "/api/v1/files?name=public/c", "alice:alicepw", map[string]string{HeaderChecksum: hexSum([]byte("other"))}, small, 400, "checksum mismatch"},
		{"repr-digest", "POST", "/api/v1/files?name=public/c", "alice:alicepw", map[string]string{"Repr-Digest": "sha-256=:" + b64([]byte("x")) + ":"}, small, 400, "checksum mismatch"},
		{"digest", "POST", "/api/v1/files?name=public/c", "alice:alicepw", map[string]string{"Digest": "SHA-256=" + b64([]byte("x"))}, small, 400, "checksum mismatch"},
		{"digests disagree", "POST", "/api/v1/files?name=public/c&sha256=" + hexSum(small), "alice:alicepw", map[string]string{"Digest": "SHA-256=" + b64([]byte("x"))}, small, 400, "disagrees"},
		{"malformed digest", "POST", "/api/v1/files?name=public/c", "alice:alicepw", map[string]string{"Content-Digest": "sha-256=abc"}, small, 400, "sha-256=:base64:"},
		{"no name", "POST", "/api/v1/files", "alice:alicepw", nil, small, 400, "?name="},
		{"bad name", "POST", "/api/v1/files?name=a//b", "alice:alicepw", nil, small, 400, "invalid file name"},
		{"bad ttl", "POST", "/api/v1/files?name=a&ttl=soon", "alice:alicepw", nil, small, 400, "ttl"},
		{"bad content type", "POST", "/api/v1/files?name=a", "alice:alicepw", map[string]string{"Content-Type": "text/"}, small, 400, "invalid content type"},
		{"bad limit", "GET", "/api/v1/files?limit=0", "alice:alicepw", nil, nil, 400, "limit"},
		{"missing", "GET", "/api/v1/files/public/none", "alice:alicepw", nil, nil, 404, "file not found"},
		{"unknown slot", "PUT", "/api/v1/slots/nope/x", "", nil, small, 404, "no such slot"},
		{"unknown share", "GET", "/api/v1/shared/nope/x", "", nil, nil, 404, "not found"},
	} {
		var body io.Reader
		if tc.body != nil {
			body = bytes.NewReader(tc.body)
			if _, ok := tc.hdr["chunked"]; ok {
				body = io.MultiReader(body) // no length: chunked
			}
		}
		s, _, b := h.req(tc.method, tc.path, tc.auth, tc.hdr, body)
		if s != tc.status {
			t.Errorf("%s: %d %s, want %d", tc.desc, s, b, tc.status)
			continue
		}
		if msg := errorOf(t, string(b)); !strings.Contains(msg, tc.msg) {
			t.Errorf("%s: message %q does not say %q", tc.desc, msg, tc.msg)
		}
	}
	// Mallory lists only what it may read.
	s, _, b := h.req("GET", "/api/v1/files", "mallory:mallorypw", nil, nil)
	var l fileList
	if s != 200 || json.Unmarshal(b, &l) != nil || len(l.Files) != 1 || l.Files[0].Name != "public/quota" {
		t.Errorf("mallory's list: %d %s", s, b)
	}
	// Nothing refused is visible.
	for _, n := range []string{"public/big", "public/more", "public/c", "private/x", "a"} {
		if _, err := h.fs.Stat(ctx, n); err == nil {
			t.Errorf("refused upload %s is visible", n)
		}
	}
}

func TestSlotHTTP(t *testing.T) {
	t.Parallel()
	// Off loopback: the slot and shared URLs work without credentials.
	h := startHub(t, hubOpts{addr: "0.0.0.0:0", files: func(*files.Config) {}})
	ctx := context.Background()
	body := []byte("a picture of a cat")
	sl, err := h.fs.NewSlot(ctx, files.SlotOptions{Name: "upload/alice/cat.jpg", Size: int64(len(body)), ContentType: "image/jpeg", Uploader: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	put := strings.TrimPrefix(sl.PutURL, h.base)
	get := strings.TrimPrefix(sl.GetURL, h.base)
	if s, _, b := h.req("PUT", put, "", map[string]string{"Content-Type": "image/png"}, bytes.NewReader(body)); s != 400 {
		t.Errorf("PUT of another type: %d %s", s, b)
	}
	if s, _, b := h.req("PUT", put, "", map[string]string{"Content-Type": "image/jpeg"}, bytes.NewReader(append(body, '!'))); s != 413 {
		t.Errorf("PUT of more bytes: %d %s", s, b)
	}
	if s, _, b := h.req("OPTIONS", put, "", nil, nil); s != 204 {
		t.Errorf("preflight: %d %s", s, b)
	}
	s, hdr, b := h.req("PUT", put, "", map[string]string{"Content-Type": "image/jpeg"}, bytes.NewReader(body))
	if s != 201 || hdr.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("slot PUT: %d %s %v", s, b, hdr)
	}
	if d := decodeDescriptor(t, b); d.Uploader != "alice" || d.SHA256 != hexSum(body) {
		t.Errorf("slot descriptor %+v", d)
	}
	if s, _, b := h.req("PUT", put, "", nil, bytes.NewReader(body)); s != 404 {
		t.Errorf("second PUT: %d %s", s, b)
	}
	s, hdr, b = h.req("GET", get, "", map[string]string{"Range": "bytes=2-8"}, nil)
	if s != 206 || string(b) != string(body[2:9]) || hdr.Get("Content-Type") != "image/jpeg" {
		t.Errorf("shared GET: %d %q %v", s, b, hdr)
	}
	// The regular URL still needs credentials.
	if s, _, _ := h.req("GET", "/api/v1/files/upload/alice/cat.jpg", "", nil, nil); s != 401 {
		t.Errorf("GET of the regular URL without credentials: %d", s)
	}
}

func TestFileUploadInterrupted(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h := startHub(t, hubOpts{files: func(c *files.Config) { c.Dir = dir }})
	tmp := filepath.Join(dir, "tmp")
	count := func() int {
		es, err := os.ReadDir(tmp)
		if err != nil {
			t.Fatal(err)
		}
		return len(es)
	}
	conn := dialHub(t, h)
	fmt.Fprintf(conn, "POST /api/v1/files?name=cut HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
	if _, err := conn.Write(make([]byte, 50000)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the upload's temporary file", func() bool { return count() == 1 })
	conn.Close()
	waitFor(t, "the temporary file removed", func() bool { return count() == 0 })
	if _, err := h.fs.Stat(context.Background(), "cut"); err == nil {
		t.Error("an interrupted upload is visible")
	}
	if rs, _ := h.bus.Retained(context.Background(), "files/cut"); len(rs) != 0 {
		t.Error("an interrupted upload has a descriptor")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSendFileToDevice(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOpts{files: func(*files.Config) {}})
	ctx := context.Background()
	for _, id := range []string{"lamp", "away"} {
		if err := h.reg.Add(ctx, store.Device{ID: id}, ""); err != nil {
			t.Fatal(err)
		}
	}
	h.reg.DevicePresence(ctx, "lamp", "mqtt", true, time.Now())
	fakeBusDevice(t, h, "lamp", func(req devices.CommandRequest, name string) []byte {
		var d files.Descriptor
		if name != FileCommand || json.Unmarshal(req.Params, &d) != nil {
			return []byte(`{"error":"bad command"}`)
		}
		// The device fetches the bytes it was told about.
		resp, err := http.Get(d.URL)
		if err != nil {
			return []byte(`{"error":"fetch"}`)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return fmt.Appendf(nil, `{"sha256":%q}`, hexSum(b))
	})
	fw := []byte("firmware image v2")
	if s, _, b := h.req("POST", "/api/v1/files?name=fw/lamp.bin", "", nil, bytes.NewReader(fw)); s != 201 {
		t.Fatalf("upload: %d %s", s, b)
	}
	for _, tc := range []struct {
		desc, path string
		status     int
		want       string
	}{
		{"sent", "/api/v1/devices/lamp/files/fw/lamp.bin?timeout=5s", 200, fmt.Sprintf(`{"sha256":%q}`, hexSum(fw))},
		{"no such file", "/api/v1/devices/lamp/files/fw/none.bin", 404, "file not found"},
		{"unknown device", "/api/v1/devices/ghost/files/fw/lamp.bin", 404, "unknown device"},
		{"offline device", "/api/v1/devices/away/files/fw/lamp.bin", 503, "offline"},
		{"bad name", "/api/v1/devices/lamp/files/a//b", 400, "invalid file name"},
	} {
		s, _, b := h.req("POST", tc.path, "", nil, nil)
		if s != tc.status {
			t.Errorf("%s: %d %s, want %d", tc.desc, s, b, tc.status)
			continue
		}
		if s == 200 && string(b) != tc.want {
			t.Errorf("%s: reply %s, want %s", tc.desc, b, tc.want)
		}
		if s != 200 && !strings.Contains(errorOf(t, string(b)), tc.want) {
			t.Errorf("%s: message %s does not say %q", tc.desc, b, tc.want)
		}
	}
}

func TestFilesDisabled(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOpts{})
	if s, _, b := h.req("GET", "/api/v1/files", "", nil, nil); s != 404 || !strings.Contains(string(b), "not enabled") {
		t.Errorf("files without a store: %d %s", s, b)
	}
}

// FuzzDeclaredDigest checks that the digest headers never panic the
// parser and that what it accepts is one 64-digit hex digest.
func FuzzDeclaredDigest(f *testing.F) {
	sum := hexSum([]byte("x"))
	b, _ := hex.DecodeString(sum)
	b64 := base64.StdEncoding.EncodeToString(b)
	for _, s := range [][3]string{
		{sum, "", ""}, {"", "sha-256=:" + b64 + ":", ""}, {"", "", "SHA-256=" + b64},
		{"", "sha-512=:abc:, sha-256=:" + b64 + ":", "md5=x"}, {"zz", "sha-256=", "SHA-256=::"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, checksum, repr, digest string) {
		h := http.Header{}
		if checksum != "" {
			h.Set(HeaderChecksum, checksum)
		}
		if repr != "" {
			h.Set("Repr-Digest", repr)
		}
		if digest != "" {
			h.Set("Digest", digest)
		}
		got, err := declaredDigest(h, "")
		if err != nil {
			return
		}
		if got != "" {
			if b, err := hex.DecodeString(got); err != nil || len(b) != 32 || strings.ToLower(got) != got {
				t.Fatalf("declaredDigest accepted %q", got)
			}
		}
	})
}

// TestFileUploadOutlivesReadTimeout: an upload that keeps sending is taken
// though it lasts longer than the server's ReadTimeout; one that stalls
// is cut after it.
func TestFileUploadOutlivesReadTimeout(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOpts{readTimeout: 400 * time.Millisecond, readHeaderTimeout: 200 * time.Millisecond, files: func(*files.Config) {}})
	conn := dialHub(t, h)
	fmt.Fprintf(conn, "POST /api/v1/files?name=slow HTTP/1.1\r\nHost: x\r\nContent-Length: 1200\r\n\r\n")
	start := time.Now()
	for range 12 {
		if _, err := conn.Write(bytes.Repeat([]byte("s"), 100)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.Contains(line, "201") {
		t.Fatalf("slow but steady upload over %v: %q, %v", time.Since(start), line, err)
	}
	// Stalled: cut after ReadTimeout.
	conn = dialHub(t, h)
	fmt.Fprintf(conn, "POST /api/v1/files?name=stalled HTTP/1.1\r\nHost: x\r\nContent-Length: 1200\r\n\r\n")
	if _, err := conn.Write([]byte("s")); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(conn)
	if err != nil || !strings.HasPrefix(string(b), "HTTP/1.1 408") || !strings.Contains(string(b), "upload stalled") {
		t.Errorf("a stalled upload: %q, %v; want a 408 and the connection closed", b, err)
	}
	if _, err := h.fs.Stat(context.Background(), "stalled"); err == nil {
		t.Error("a stalled upload was stored")
	}
}

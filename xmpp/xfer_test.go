package xmpp

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/files"
	"github.com/hubsmith/hub/store"
)

// withFiles gives the test hub a real file store (limit max bytes a file,
// quota bytes per principal; 0: the defaults) and returns it.
func withFiles(t testing.TB, max, quota int64, c *Config) *files.Store {
	t.Helper()
	fs, err := files.Open(context.Background(), files.Config{
		Dir: t.TempDir(), DB: c.Store.(*store.Store), Bus: c.Bus, MaxFileSize: max, QuotaPerPrincipal: quota,
		BaseURL: func() string { return "http://127.0.0.1:1" }, Logger: testLogger(), SweepInterval: -1,
	})
	if err != nil {
		t.Fatalf("files: %v", err)
	}
	t.Cleanup(func() { _ = fs.Close() })
	c.Files = fs
	return fs
}

// stored returns the bytes stored under name, if any.
func stored(t testing.TB, fs *files.Store, name string) ([]byte, bool) {
	t.Helper()
	_, f, err := fs.Open(context.Background(), name)
	if errors.Is(err, files.ErrNotFound) {
		return nil, false
	}
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b, true
}

// fileCount is how many files the store lists.
func fileCount(t testing.TB, fs *files.Store) int {
	t.Helper()
	ds, _, err := fs.List(context.Background(), "", files.MaxListLimit)
	if err != nil {
		t.Fatal(err)
	}
	return len(ds)
}

// siOfferXML is an XEP-0096 offer of a file to to.
func siOfferXML(id, to, sid, name string, size int64, methods ...string) string {
	var opts strings.Builder
	for _, m := range methods {
		opts.WriteString("<option><value>" + m + "</value></option>")
	}
	return fmt.Sprintf(`<iq type='set' id='%s' to='%s'><si xmlns='http://jabber.org/protocol/si' id='%s' mime-type='application/octet-stream' profile='http://jabber.org/protocol/si/profile/file-transfer'>`+
		`<file xmlns='http://jabber.org/protocol/si/profile/file-transfer' name='%s' size='%d'/>`+
		`<feature xmlns='http://jabber.org/protocol/feature-neg'><x xmlns='jabber:x:data' type='form'><field var='stream-method' type='list-single'>%s</field></x></feature></si></iq>`,
		id, to, sid, name, size, opts.String())
}

// sendIBB sends data to to over IBB in blocks of block bytes, from open to
// close, and returns the close's answer.
func sendIBB(t testing.TB, c *client, to, sid string, data []byte, block int) (string, string) {
	t.Helper()
	typ, inner := c.iq(t, fmt.Sprintf(`<iq type='set' id='o-%s' to='%s'><open xmlns='http://jabber.org/protocol/ibb' sid='%s' block-size='%d'/></iq>`, sid, to, sid, block))
	if typ != "result" {
		t.Fatalf("ibb open: %s %s", typ, inner)
	}
	for seq := 0; len(data) > 0; seq++ {
		n := min(block, len(data))
		typ, inner := c.iq(t, fmt.Sprintf(`<iq type='set' id='d-%s-%d' to='%s'><data xmlns='http://jabber.org/protocol/ibb' sid='%s' seq='%d'>%s</data></iq>`,
			sid, seq, to, sid, seq, base64.StdEncoding.EncodeToString(data[:n])))
		if typ != "result" {
			t.Fatalf("ibb data %d: %s %s", seq, typ, inner)
		}
		data = data[n:]
	}
	return c.iq(t, fmt.Sprintf(`<iq type='set' id='c-%s' to='%s'><close xmlns='http://jabber.org/protocol/ibb' sid='%s'/></iq>`, sid, to, sid))
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func TestSIOverIBBToTopic(t *testing.T) {
	t.Parallel()
	var fs *files.Store
	h := startHub(t, func(c *Config) { fs = withFiles(t, 1<<20, 0, c) })
	alice := connect(t, h, "alice", "alicepw")
	data := randomBytes(100_000)
	const to = "lab.cam@topics.localhost"
	typ, inner := alice.iq(t, siOfferXML("s1", to, "sid1", "../../photo.jpg", int64(len(data)), nsBytestreams, nsIBB))
	if typ != "result" || !strings.Contains(inner, nsIBB) {
		t.Fatalf("offer: %s %s", typ, inner)
	}
	if typ, inner := sendIBB(t, alice, to, "sid1", data, 4096); typ != "result" {
		t.Fatalf("close: %s %s", typ, inner)
	}
	got, ok := stored(t, fs, "lab/cam/photo.jpg")
	if !ok || !bytes.Equal(got, data) {
		t.Fatalf("stored %d bytes (%v), want the %d sent", len(got), ok, len(data))
	}
}

func TestSIRefusals(t *testing.T) {
	t.Parallel()
	var fs *files.Store
	h := startHub(t, func(c *Config) {
		fs = withFiles(t, 100_000, 50_000, c)
		c.Auth = adapters.NewAuth(c.Store.(*store.Store), map[string][]adapters.ACLRule{"alice": {{Action: "publish", Filter: "files/open/#", Allow: true}}})
	})
	alice := connect(t, h, "alice", "alicepw")
	tests := []struct {
		name, to, file string
		size           int64
		methods        []string
		want           []string
	}{
		{"acl", "closed@topics.localhost", "a.bin", 10, []string{nsIBB}, []string{"forbidden", "may not write files/closed/a.bin"}},
		{"too large", "open@topics.localhost", "a.bin", 200_000, []string{nsIBB}, []string{"not-acceptable", "over the limit of 100000"}},
		{"quota", "open@topics.localhost", "a.bin", 60_000, []string{nsIBB}, []string{"resource-constraint", "quota"}},
		{"no stream method", "open@topics.localhost", "a.bin", 10, []string{"urn:x:smoke-signals"}, []string{"no-valid-streams"}},
		{"bad name", "open@topics.localhost", "..", 10, []string{nsIBB}, []string{"bad-request", "not usable"}},
	}
	for i, tc := range tests {
		typ, inner := alice.iq(t, siOfferXML(fmt.Sprint("r", i), tc.to, fmt.Sprint("sid-r", i), tc.file, tc.size, tc.methods...))
		if typ != "error" {
			t.Errorf("%s: %s %s, want an error", tc.name, typ, inner)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(inner, w) {
				t.Errorf("%s: answer %s lacks %q", tc.name, inner, w)
			}
		}
	}
	// Data for a sid no offer has, a bad sequence number.
	typ, inner := alice.iq(t, `<iq type='set' id='x1' to='open@topics.localhost'><data xmlns='http://jabber.org/protocol/ibb' sid='nope' seq='0'>AAAA</data></iq>`)
	if typ != "error" || !strings.Contains(inner, "item-not-found") {
		t.Errorf("unknown sid: %s %s", typ, inner)
	}
	if typ, inner := alice.iq(t, siOfferXML("ok", "open@topics.localhost", "sid-seq", "b.bin", 10, nsIBB)); typ != "result" {
		t.Fatalf("offer: %s %s", typ, inner)
	}
	alice.iq(t, `<iq type='set' id='x2' to='open@topics.localhost'><open xmlns='http://jabber.org/protocol/ibb' sid='sid-seq' block-size='4096'/></iq>`)
	typ, inner = alice.iq(t, `<iq type='set' id='x3' to='open@topics.localhost'><data xmlns='http://jabber.org/protocol/ibb' sid='sid-seq' seq='5'>AAAA</data></iq>`)
	if typ != "error" || !strings.Contains(inner, "unexpected-request") {
		t.Errorf("bad seq: %s %s", typ, inner)
	}
	if n := fileCount(t, fs); n != 0 {
		t.Errorf("%d files stored, want none", n)
	}
}

// TestIBBInterrupted: the sender goes away mid-transfer; nothing is
// stored, and the transfer leaves the table.
func TestIBBInterrupted(t *testing.T) {
	t.Parallel()
	var fs *files.Store
	h := startHub(t, func(c *Config) { fs = withFiles(t, 0, 0, c) })
	alice := connect(t, h, "alice", "alicepw")
	const to = "cut@topics.localhost"
	if typ, inner := alice.iq(t, siOfferXML("s", to, "sid-cut", "half.bin", 10_000, nsIBB)); typ != "result" {
		t.Fatalf("offer: %s %s", typ, inner)
	}
	alice.iq(t, `<iq type='set' id='o' to='`+to+`'><open xmlns='http://jabber.org/protocol/ibb' sid='sid-cut' block-size='4096'/></iq>`)
	typ, _ := alice.iq(t, `<iq type='set' id='d' to='`+to+`'><data xmlns='http://jabber.org/protocol/ibb' sid='sid-cut' seq='0'>`+base64.StdEncoding.EncodeToString(randomBytes(4096))+`</data></iq>`)
	if typ != "result" {
		t.Fatalf("data: %s", typ)
	}
	_ = alice.s.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		h.a.xfer.mu.Lock()
		n := len(h.a.xfer.byKey)
		h.a.xfer.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d transfers still open after the sender left", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := fileCount(t, fs); n != 0 {
		t.Fatalf("%d files stored from an interrupted transfer", n)
	}
}

func TestSIOverSOCKS5ToTopic(t *testing.T) {
	t.Parallel()
	var fs *files.Store
	h := startHub(t, func(c *Config) { fs = withFiles(t, 0, 0, c); c.ProxyAddr = "127.0.0.1:0" })
	alice := connect(t, h, "alice", "alicepw")
	data := randomBytes(500_000)
	const to = "lab.cam@topics.localhost"
	typ, inner := alice.iq(t, siOfferXML("s1", to, "sid5", "clip.bin", int64(len(data)), nsBytestreams, nsIBB))
	if typ != "result" || !strings.Contains(inner, nsBytestreams) {
		t.Fatalf("offer: %s %s", typ, inner)
	}
	addr := h.a.Addrs()["xmpp-proxy"]
	host, port, _ := net.SplitHostPort(addr)
	// A streamhost of the sender's own is not used.
	typ, inner = alice.iq(t, `<iq type='set' id='b0' to='`+to+`'><query xmlns='http://jabber.org/protocol/bytestreams' sid='other'><streamhost jid='`+alice.jid+`' host='127.0.0.1' port='1'/></query></iq>`)
	if typ != "error" {
		t.Fatalf("bytestream for an unknown sid: %s %s", typ, inner)
	}
	// Only the sender's own streamhost: not used, and the transfer stays
	// open for another try.
	typ, inner = alice.iq(t, `<iq type='set' id='b0b' to='`+to+`'><query xmlns='http://jabber.org/protocol/bytestreams' sid='sid5'><streamhost jid='`+alice.jid+`' host='127.0.0.1' port='1'/></query></iq>`)
	if typ != "error" || !strings.Contains(inner, "item-not-found") {
		t.Fatalf("sender's own streamhost: %s %s", typ, inner)
	}
	typ, inner = alice.iq(t, `<iq type='set' id='b1' to='`+to+`'><query xmlns='http://jabber.org/protocol/bytestreams' sid='sid5'><streamhost jid='proxy.localhost' host='`+host+`' port='`+port+`'/></query></iq>`)
	if typ != "result" || !strings.Contains(inner, "streamhost-used") {
		t.Fatalf("streamhost: %s %s", typ, inner)
	}
	c := dialProxy(t, addr, socks5Addr("sid5", alice.jid, to))
	typ, inner = alice.iq(t, `<iq type='set' id='b2' to='proxy.localhost'><query xmlns='http://jabber.org/protocol/bytestreams' sid='sid5'><activate>`+to+`</activate></query></iq>`)
	if typ != "result" {
		t.Fatalf("activate: %s %s", typ, inner)
	}
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if got, ok := stored(t, fs, "lab/cam/clip.bin"); ok {
			if !bytes.Equal(got, data) {
				t.Fatalf("stored %d bytes, not the %d sent", len(got), len(data))
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("file not stored")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestUploadSlot(t *testing.T) {
	t.Parallel()
	h := startHub(t, func(c *Config) { withFiles(t, 5000, 1000, c) })
	alice := connect(t, h, "alice", "alicepw")
	typ, inner := alice.iq(t, `<iq type='get' to='localhost' id='i'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>`)
	if typ != "result" || !strings.Contains(inner, "upload.localhost") {
		t.Fatalf("items: %s", inner)
	}
	typ, inner = alice.iq(t, `<iq type='get' to='upload.localhost' id='i2'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`)
	if typ != "result" || !strings.Contains(inner, nsUpload) || !strings.Contains(inner, "max-file-size") || !strings.Contains(inner, "5000") {
		t.Fatalf("info: %s", inner)
	}
	typ, inner = alice.iq(t, `<iq type='get' to='upload.localhost' id='u1'><request xmlns='urn:xmpp:http:upload:0' filename='cat.jpg' size='500' content-type='image/jpeg'/></iq>`)
	if typ != "result" || !strings.Contains(inner, `url="http://127.0.0.1:1/api/v1/slots/`) ||
		!strings.Contains(inner, `url="http://127.0.0.1:1/api/v1/shared/`) || !strings.Contains(inner, "/cat.jpg") {
		t.Fatalf("slot: %s %s", typ, inner)
	}
	for _, tc := range []struct{ req, want string }{
		{`filename='big.bin' size='6000'`, ">5000</max-file-size>"},
		{`filename='q.bin' size='2000'`, "resource-constraint"},
		{`filename='' size='10'`, "bad-request"},
		{`filename='a' size='x'`, "bad-request"},
	} {
		typ, inner := alice.iq(t, `<iq type='get' to='upload.localhost' id='u2'><request xmlns='urn:xmpp:http:upload:0' `+tc.req+`/></iq>`)
		if typ != "error" || !strings.Contains(inner, tc.want) {
			t.Errorf("%s: %s %s, want %s", tc.req, typ, inner, tc.want)
		}
	}
}

// TestFileDescriptorAsOOB: a chat user subscribed to a file's topic JID,
// or to a PubSub node of files, gets its descriptor as an XEP-0066 link
// whose body is the URL.
func TestFileDescriptorAsOOB(t *testing.T) {
	t.Parallel()
	h := startHub(t, func(c *Config) { withFiles(t, 0, 0, c) })
	alice := connect(t, h, "alice", "alicepw")
	bob := connect(t, h, "bob", "bobpw")
	const fileJID = "files.lab.cam.clip@topics.localhost"
	bob.send(t, `<presence type='subscribe' to='`+fileJID+`'/>`)
	bob.expect(t, "approval", func(v rx) bool { return v.XMLName.Local == "presence" && v.Type == "subscribed" })
	if typ, inner := bob.iq(t, `<iq type='set' to='pubsub.localhost' id='ps'><pubsub xmlns='http://jabber.org/protocol/pubsub'><subscribe node='files/lab/#' jid='bob@localhost'/></pubsub></iq>`); typ != "result" {
		t.Fatalf("pubsub subscribe: %s", inner)
	}
	data := randomBytes(5000)
	if typ, inner := alice.iq(t, siOfferXML("s", "lab.cam@topics.localhost", "sid-oob", "clip", int64(len(data)), nsIBB)); typ != "result" {
		t.Fatalf("offer: %s", inner)
	}
	if typ, inner := sendIBB(t, alice, "lab.cam@topics.localhost", "sid-oob", data, 4096); typ != "result" {
		t.Fatalf("close: %s", inner)
	}
	var m, ev rx
	bob.expect(t, "link from the file's topic JID and pubsub event", func(v rx) bool {
		switch {
		case isMessageFrom(fileJID)(v):
			m = v
		case isMessageFrom("pubsub.localhost")(v):
			ev = v
		}
		return m.Body != "" && ev.Body != ""
	})
	if !strings.HasPrefix(m.Body, "http://127.0.0.1:1/api/v1/shared/") || !strings.HasSuffix(m.Body, "/clip") ||
		!strings.Contains(m.Inner, nsOOB) || !strings.Contains(m.Inner, "<url") {
		t.Fatalf("link message: body %q, %s", m.Body, m.Inner)
	}
	if ev.Body != m.Body || !strings.Contains(ev.Inner, nsOOB) || !strings.Contains(ev.Inner, "pubsub#event") {
		t.Fatalf("event: body %q, %s", ev.Body, ev.Inner)
	}
}

// TestFileToOfflineUser: a file offered to a user who is not there is
// stored and reaches the user, at the next login, as a link from the
// sender.
func TestFileToOfflineUser(t *testing.T) {
	t.Parallel()
	var fs *files.Store
	h := startHub(t, func(c *Config) { fs = withFiles(t, 0, 0, c) })
	alice := connect(t, h, "alice", "alicepw")
	data := randomBytes(3000)
	if typ, inner := alice.iq(t, siOfferXML("s", "bob@localhost", "sid-u", "notes.txt", int64(len(data)), nsIBB)); typ != "result" {
		t.Fatalf("offer: %s", inner)
	}
	if typ, inner := sendIBB(t, alice, "bob@localhost", "sid-u", data, 4096); typ != "result" {
		t.Fatalf("close: %s", inner)
	}
	// To a user who does not exist: refused.
	if typ, inner := alice.iq(t, siOfferXML("s2", "nobody@localhost", "sid-n", "x.txt", 1, nsIBB)); typ != "error" || !strings.Contains(inner, "service-unavailable") {
		t.Fatalf("offer to nobody: %s %s", typ, inner)
	}
	bob := connect(t, h, "bob", "bobpw")
	m := bob.expect(t, "link from alice", func(v rx) bool {
		return v.XMLName.Local == "message" && strings.HasPrefix(v.From, "alice@localhost") && v.Body != ""
	})
	if !strings.HasSuffix(m.Body, "/notes.txt") || !strings.Contains(m.Inner, nsOOB) {
		t.Fatalf("link: %q %s", m.Body, m.Inner)
	}
	ds, _, err := fs.List(context.Background(), "", 10)
	if err != nil || len(ds) != 1 || !strings.HasPrefix(ds[0].Name, "users/bob/") || ds[0].Uploader != "alice" {
		t.Fatalf("stored %+v, %v", ds, err)
	}
}

// TestSIBetweenUsersRouted: an offer to another user's full JID goes to
// that user, as any server routes it; the hub takes no part.
func TestSIBetweenUsersRouted(t *testing.T) {
	t.Parallel()
	h := startHub(t, func(c *Config) { withFiles(t, 0, 0, c) })
	alice := connect(t, h, "alice", "alicepw")
	bob := connect(t, h, "bob", "bobpw")
	alice.send(t, siOfferXML("p2p", bob.jid, "sid-p", "a.bin", 10, nsIBB))
	got := bob.expect(t, "offer", func(v rx) bool { return v.XMLName.Local == "iq" && v.ID == "p2p" })
	if got.From != alice.jid || !strings.Contains(got.Inner, nsSI) {
		t.Fatalf("offer: from %s, %s", got.From, got.Inner)
	}
}

// TestFileToDevice: a file offered to a device JID is stored under the
// device's name and the device gets the command "file" with its
// descriptor.
func TestFileToDevice(t *testing.T) {
	t.Parallel()
	cmds := make(chan adapters.Command, 1)
	h := startHub(t, func(c *Config) {
		withFiles(t, 0, 0, c)
		c.Auth = adapters.NewAuth(c.Store.(*store.Store), map[string][]adapters.ACLRule{"alice": {
			{Action: "command", Filter: "lamp1", Allow: true}, {Action: "all", Filter: "#", Allow: true}}})
		c.DeviceCommand = func(ctx context.Context, cmd adapters.Command) (json.RawMessage, error) {
			cmds <- cmd
			return json.RawMessage(`"ok"`), nil
		}
	})
	alice := connect(t, h, "alice", "alicepw")
	bob := connect(t, h, "bob", "bobpw")
	data := randomBytes(2000)
	const to = "lamp1@devices.localhost"
	if typ, inner := bob.iq(t, siOfferXML("s", to, "sid-b", "fw.bin", int64(len(data)), nsIBB)); typ != "error" || !strings.Contains(inner, "forbidden") {
		t.Fatalf("offer without the command right: %s %s", typ, inner)
	}
	if typ, inner := alice.iq(t, siOfferXML("s", to, "sid-d", "fw.bin", int64(len(data)), nsIBB)); typ != "result" {
		t.Fatalf("offer: %s", inner)
	}
	if typ, inner := sendIBB(t, alice, to, "sid-d", data, 4096); typ != "result" {
		t.Fatalf("close: %s", inner)
	}
	select {
	case cmd := <-cmds:
		var d struct {
			files.Descriptor
			SharedURL string `json:"shared_url"`
		}
		if err := json.Unmarshal(cmd.Params, &d); err != nil || cmd.Name != "file" || cmd.DeviceID != "lamp1" ||
			d.Name != "devices/lamp1/fw.bin" || d.Size != int64(len(data)) || d.URL == "" || !strings.Contains(d.SharedURL, "/api/v1/shared/") {
			t.Fatalf("command %+v (%v)", cmd, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no file command reached the device")
	}
}

// TestTransferBounds: a principal has at most maxTransfersPerPrincipal
// transfers open; the next offer is refused until one ends.
func TestTransferBounds(t *testing.T) {
	t.Parallel()
	h := startHub(t, func(c *Config) { withFiles(t, 0, 0, c) })
	alice := connect(t, h, "alice", "alicepw")
	const to = "many@topics.localhost"
	for i := range maxTransfersPerPrincipal {
		if typ, inner := alice.iq(t, siOfferXML(fmt.Sprint("o", i), to, fmt.Sprint("sid", i), fmt.Sprint("f", i), 10, nsIBB)); typ != "result" {
			t.Fatalf("offer %d: %s", i, inner)
		}
	}
	typ, inner := alice.iq(t, siOfferXML("over", to, "sid-over", "g", 10, nsIBB))
	if typ != "error" || !strings.Contains(inner, "resource-constraint") || !strings.Contains(inner, "too many transfers") {
		t.Fatalf("offer over the bound: %s %s", typ, inner)
	}
	// The same sid again is a conflict, not a second transfer.
	if typ, inner := alice.iq(t, siOfferXML("dup", to, "sid0", "f0", 10, nsIBB)); typ != "error" || !strings.Contains(inner, "conflict") {
		t.Fatalf("duplicate sid: %s %s", typ, inner)
	}
	if typ, inner := sendIBB(t, alice, to, "sid0", randomBytes(10), 4096); typ != "result" {
		t.Fatalf("close: %s", inner)
	}
	if typ, inner := alice.iq(t, siOfferXML("again", to, "sid-again", "g", 10, nsIBB)); typ != "result" {
		t.Fatalf("offer after one ended: %s %s", typ, inner)
	}
}

package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hubsmith/hub/gateway"
	"github.com/hubsmith/hub/hubtest"
)

// Files over XMPP end to end: XEP-0096 offers over IBB and over SOCKS5
// through the hub's proxy to a topic JID, seen over REST and MQTT; the
// refusals; an interrupted transfer; links to chat users; XEP-0363.

const (
	nsIBB = "http://jabber.org/protocol/ibb"
	nsS5B = "http://jabber.org/protocol/bytestreams"
)

// jid is the client's full JID.
func (c *xmppClient) jid() string { return c.s.LocalAddr().String() }

// iq sends an iq with a fresh id and returns the answer.
func (c *xmppClient) iq(t *testing.T, format string, a ...any) stanza {
	t.Helper()
	id := fmt.Sprintf("e2e-%x", randomBytes(6))
	c.send(t, strings.Replace(fmt.Sprintf(format, a...), "<iq ", "<iq id='"+id+"' ", 1))
	return c.expect(t, "answer to iq "+id, func(v stanza) bool { return v.XMLName.Local == "iq" && v.ID == id })
}

// xmlText is the stanza's children serialized, for looking into answers.
func (v stanza) xmlText() string {
	b, _ := xml.Marshal(v.Children)
	return string(b)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// offerFile sends an XEP-0096 offer and returns the answer.
func offerFile(t *testing.T, c *xmppClient, to, sid, name string, size int, method string) stanza {
	t.Helper()
	return c.iq(t, `<iq type='set' to='%s'><si xmlns='http://jabber.org/protocol/si' id='%s' mime-type='application/octet-stream' profile='http://jabber.org/protocol/si/profile/file-transfer'>`+
		`<file xmlns='http://jabber.org/protocol/si/profile/file-transfer' name='%s' size='%d'/>`+
		`<feature xmlns='http://jabber.org/protocol/feature-neg'><x xmlns='jabber:x:data' type='form'><field var='stream-method' type='list-single'>`+
		`<option><value>%s</value></option></field></x></feature></si></iq>`, to, sid, name, size, method)
}

// ibbSend opens an IBB stream, sends data in 4 KiB blocks, and closes it
// unless keepOpen; it returns the answer to the close.
func ibbSend(t *testing.T, c *xmppClient, to, sid string, data []byte, keepOpen bool) stanza {
	t.Helper()
	if r := c.iq(t, `<iq type='set' to='%s'><open xmlns='%s' sid='%s' block-size='4096'/></iq>`, to, nsIBB, sid); r.Type != "result" {
		t.Fatalf("ibb open: %s %s", r.Type, r.xmlText())
	}
	for seq := 0; len(data) > 0; seq++ {
		n := min(4096, len(data))
		if r := c.iq(t, `<iq type='set' to='%s'><data xmlns='%s' sid='%s' seq='%d'>%s</data></iq>`, to, nsIBB, sid, seq, base64.StdEncoding.EncodeToString(data[:n])); r.Type != "result" {
			t.Fatalf("ibb data %d: %s %s", seq, r.Type, r.xmlText())
		}
		data = data[n:]
	}
	if keepOpen {
		return stanza{}
	}
	return c.iq(t, `<iq type='set' to='%s'><close xmlns='%s' sid='%s'/></iq>`, to, nsIBB, sid)
}

// socks5Send sends data to to over a SOCKS5 bytestream through the hub's
// proxy at proxyAddr, as XEP-0065 §6 has the requester do.
func socks5Send(t *testing.T, c *xmppClient, proxyAddr, to, sid string, data []byte) {
	t.Helper()
	r := c.iq(t, `<iq type='get' to='proxy.localhost'><query xmlns='%s'/></iq>`, nsS5B)
	host, port, _ := net.SplitHostPort(proxyAddr)
	if r.Type != "result" || !strings.Contains(r.xmlText(), host) || !strings.Contains(r.xmlText(), port) {
		t.Fatalf("streamhost query: %s %s", r.Type, r.xmlText())
	}
	if r := c.iq(t, `<iq type='set' to='%s'><query xmlns='%s' sid='%s'><streamhost jid='proxy.localhost' host='%s' port='%s'/></query></iq>`, to, nsS5B, sid, host, port); r.Type != "result" || !strings.Contains(r.xmlText(), "streamhost-used") {
		t.Fatalf("bytestream offer: %s %s", r.Type, r.xmlText())
	}
	conn, err := net.Dial("tcp", proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	h := sha1.Sum([]byte(sid + c.jid() + to))
	dst := hex.EncodeToString(h[:])
	_ = conn.SetDeadline(time.Now().Add(wait))
	req := append(append([]byte{5, 1, 0, 5, 1, 0, 3, byte(len(dst))}, dst...), 0, 0)
	if _, err := conn.Write(req); err != nil {
		t.Fatal(err)
	}
	reply := make([]byte, 2+5+len(dst)+2)
	if _, err := io.ReadFull(conn, reply); err != nil || reply[0] != 5 || reply[1] != 0 || reply[3] != 0 {
		t.Fatalf("socks5 handshake: % x %v", reply, err)
	}
	_ = conn.SetDeadline(time.Time{})
	if r := c.iq(t, `<iq type='set' to='proxy.localhost'><query xmlns='%s' sid='%s'><activate>%s</activate></query></iq>`, nsS5B, sid, to); r.Type != "result" {
		t.Fatalf("activate: %s %s", r.Type, r.xmlText())
	}
	if _, err := conn.Write(data); err != nil {
		t.Fatal(err)
	}
}

// getFile fetches a file over REST as user (status and body).
func getFile(t *testing.T, h *hubtest.Hub, user, pass, name string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+h.Addr(t, "rest")+"/api/v1/files/"+name, nil)
	req.SetBasicAuth(user, pass)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// descriptor is the part of a file descriptor the tests check.
type descriptor struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	URL    string `json:"url"`
}

func TestXMPPFileToTopicOverIBBAndSOCKS5(t *testing.T) {
	t.Parallel()
	h := hubtest.Start(t)
	sub := dialMQTT(t, h.Addr(t, "mqtt"), "files-watch", "admin", "adminpw", true)
	sub.subscribe(t, "files/lab/cam/#", 1)
	alice := dialXMPP(t, h.Addr(t, "xmpp"), "alice", "alicepw")
	const to = "lab.cam@topics.localhost"
	for _, tc := range []struct {
		method, name string
		size         int
	}{{nsIBB, "ibb.bin", 100_000}, {nsS5B, "socks5.bin", 1 << 20}} {
		data := randomBytes(tc.size)
		sid := "sid-" + tc.name
		if r := offerFile(t, alice, to, sid, tc.name, len(data), tc.method); r.Type != "result" || !strings.Contains(r.xmlText(), tc.method) {
			t.Fatalf("%s offer: %s %s", tc.name, r.Type, r.xmlText())
		}
		if tc.method == nsIBB {
			if r := ibbSend(t, alice, to, sid, data, false); r.Type != "result" {
				t.Fatalf("ibb close: %s %s", r.Type, r.xmlText())
			}
		} else {
			socks5Send(t, alice, h.Addr(t, "xmpp.xmpp-proxy"), to, sid, data)
		}
		m := sub.next(t)
		var d descriptor
		if err := json.Unmarshal([]byte(m.Payload), &d); err != nil || m.Topic != "files/lab/cam/"+tc.name ||
			d.Name != "lab/cam/"+tc.name || d.SHA256 != sum(data) || d.Size != int64(len(data)) {
			t.Fatalf("descriptor on %s: %s (%v)", m.Topic, m.Payload, err)
		}
		code, got := getFile(t, h, "alice", "alicepw", "lab/cam/"+tc.name)
		if code != http.StatusOK || !bytes.Equal(got, data) {
			t.Fatalf("GET %s: %d, %d bytes (sha256 %s, want %s)", tc.name, code, len(got), sum(got), sum(data))
		}
	}
}

// TestXMPPFileRefusals: the ACL, the size limit and the quota answer the
// offer (and the slot request) with their stanza errors and a text.
func TestXMPPFileRefusals(t *testing.T) {
	t.Parallel()
	h := hubtest.Start(t, func(c *gateway.Config) {
		c.Files.MaxFileSize = 100_000
		c.Files.QuotaPerPrincipal = 150_000
	})
	setACL(t, h, "alice", `[{"action":"all","filter":"files/open/#","allow":true},{"action":"all","filter":"open/#","allow":true},{"action":"all","filter":"files/uploads/alice/#","allow":true}]`)
	alice := dialXMPP(t, h.Addr(t, "xmpp"), "alice", "alicepw")
	for _, tc := range []struct {
		name, to string
		size     int
		want     []string
	}{
		{"acl", "closed@topics.localhost", 10, []string{"forbidden", "may not write files/closed/f.bin"}},
		{"size", "open@topics.localhost", 200_000, []string{"not-acceptable", "over the limit of 100000"}},
	} {
		r := offerFile(t, alice, tc.to, "sid-"+tc.name, "f.bin", tc.size, nsIBB)
		for _, w := range tc.want {
			if r.Type != "error" || !strings.Contains(r.xmlText(), w) {
				t.Errorf("%s: %s %s, want %q", tc.name, r.Type, r.xmlText(), w)
			}
		}
	}
	// Fill the quota, then one more.
	data := randomBytes(90_000)
	if r := offerFile(t, alice, "open@topics.localhost", "sid-q1", "q1.bin", len(data), nsIBB); r.Type != "result" {
		t.Fatalf("offer: %s", r.xmlText())
	}
	if r := ibbSend(t, alice, "open@topics.localhost", "sid-q1", data, false); r.Type != "result" {
		t.Fatalf("close: %s", r.xmlText())
	}
	r := offerFile(t, alice, "open@topics.localhost", "sid-q2", "q2.bin", len(data), nsIBB)
	if r.Type != "error" || !strings.Contains(r.xmlText(), "resource-constraint") || !strings.Contains(r.xmlText(), "quota") {
		t.Errorf("over quota: %s %s", r.Type, r.xmlText())
	}
	r = alice.iq(t, `<iq type='get' to='upload.localhost'><request xmlns='urn:xmpp:http:upload:0' filename='x.bin' size='90000'/></iq>`)
	if r.Type != "error" || !strings.Contains(r.xmlText(), "resource-constraint") {
		t.Errorf("slot over quota: %s %s", r.Type, r.xmlText())
	}
	r = alice.iq(t, `<iq type='get' to='upload.localhost'><request xmlns='urn:xmpp:http:upload:0' filename='x.bin' size='200000'/></iq>`)
	if r.Type != "error" || !strings.Contains(r.xmlText(), "file-too-large") || !strings.Contains(r.xmlText(), "100000") {
		t.Errorf("slot over the limit: %s %s", r.Type, r.xmlText())
	}
}

// TestXMPPFileInterruptedIBB: the sender goes away mid-stream; nothing is
// visible: no file over REST, no descriptor over MQTT.
func TestXMPPFileInterruptedIBB(t *testing.T) {
	t.Parallel()
	h := hubtest.Start(t)
	alice := dialXMPP(t, h.Addr(t, "xmpp"), "alice", "alicepw")
	const to = "cut@topics.localhost"
	if r := offerFile(t, alice, to, "sid-cut", "half.bin", 50_000, nsIBB); r.Type != "result" {
		t.Fatalf("offer: %s", r.xmlText())
	}
	ibbSend(t, alice, to, "sid-cut", randomBytes(20_000), true)
	tmp := filepath.Join(h.Config.DataDir, "files", "tmp")
	if ents, err := os.ReadDir(tmp); err != nil || len(ents) != 1 {
		t.Fatalf("%s holds %d entries (%v), want the upload's temporary file", tmp, len(ents), err)
	}
	_ = alice.s.Close()
	<-alice.done
	// The upload's temporary file goes with the session.
	eventually(t, "the interrupted upload's temporary file is removed", func() bool {
		ents, err := os.ReadDir(tmp)
		return err == nil && len(ents) == 0
	})
	if code, _ := getFile(t, h, "admin", "adminpw", "cut/half.bin"); code != http.StatusNotFound {
		t.Fatalf("GET the interrupted file: %d, want 404", code)
	}
	watch := dialMQTT(t, h.Addr(t, "mqtt"), "cut-watch", "admin", "adminpw", true)
	watch.subscribe(t, "files/cut/#", 1)
	watch.none(t, 300*time.Millisecond)
}

// TestXMPPFileLinks: a file offered to an offline user's bare JID reaches
// that user at the next login as an XEP-0066 link whose body is a URL that
// serves the bytes without credentials; an XEP-0363 slot stores what is
// PUT to it.
func TestXMPPFileLinks(t *testing.T) {
	t.Parallel()
	h := hubtest.Start(t)
	code, body, _ := httpDo(t, http.MethodPost, "http://admin:adminpw@"+h.Addr(t, "rest")+"/api/v1/users", "application/json", `{"name":"bob","password":"bobpw","role":"user"}`)
	if code != http.StatusCreated && code != http.StatusOK {
		t.Fatalf("add bob: %d %s", code, body)
	}
	alice := dialXMPP(t, h.Addr(t, "xmpp"), "alice", "alicepw")
	data := randomBytes(30_000)
	if r := offerFile(t, alice, "bob@localhost", "sid-bob", "photo.jpg", len(data), nsIBB); r.Type != "result" {
		t.Fatalf("offer: %s", r.xmlText())
	}
	if r := ibbSend(t, alice, "bob@localhost", "sid-bob", data, false); r.Type != "result" {
		t.Fatalf("close: %s", r.xmlText())
	}
	bob := dialXMPP(t, h.Addr(t, "xmpp"), "bob", "bobpw")
	m := bob.expect(t, "link from alice", func(v stanza) bool {
		return v.XMLName.Local == "message" && strings.HasPrefix(v.From, "alice@localhost") && v.Body != ""
	})
	if !strings.Contains(m.xmlText(), "jabber:x:oob") || !strings.HasSuffix(m.Body, "/photo.jpg") {
		t.Fatalf("link: %q %s", m.Body, m.xmlText())
	}
	resp, err := http.Get(m.Body)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, data) {
		t.Fatalf("GET %s: %d, %d bytes", m.Body, resp.StatusCode, len(got))
	}

	// XEP-0363.
	up := randomBytes(40_000)
	r := alice.iq(t, `<iq type='get' to='upload.localhost'><request xmlns='urn:xmpp:http:upload:0' filename='up.bin' size='%d' content-type='application/octet-stream'/></iq>`, len(up))
	if r.Type != "result" {
		t.Fatalf("slot: %s", r.xmlText())
	}
	var slot struct {
		Put struct {
			URL string `xml:"url,attr"`
		} `xml:"slot>put"`
		Get struct {
			URL string `xml:"url,attr"`
		} `xml:"slot>get"`
	}
	if err := xml.Unmarshal([]byte("<r>"+r.xmlText()+"</r>"), &slot); err != nil || slot.Put.URL == "" || slot.Get.URL == "" {
		t.Fatalf("slot %s: %v", r.xmlText(), err)
	}
	req, _ := http.NewRequest(http.MethodPut, slot.Put.URL, bytes.NewReader(up))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("PUT slot: %d", resp.StatusCode)
	}
	resp, err = http.Get(slot.Get.URL)
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, up) {
		t.Fatalf("GET slot file: %d, %d bytes", resp.StatusCode, len(got))
	}
}

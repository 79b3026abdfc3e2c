package xmpp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/hubsmith/hub/files"
)

// XEP-0095 Stream Initiation with the XEP-0096 file transfer profile and
// XEP-0020 feature negotiation, the hub as the receiver of a file offered
// to one of its JIDs (a topic, a device, an offline user), and the
// XEP-0065 target side of a SOCKS5 bytestream through the hub's own proxy.
const (
	nsSI          = "http://jabber.org/protocol/si"
	nsSIFile      = "http://jabber.org/protocol/si/profile/file-transfer"
	nsFeatureNeg  = "http://jabber.org/protocol/feature-neg"
	streamMethod  = "stream-method"
	maxFileName   = 255
	defaultSIMIME = "application/octet-stream"
)

// siOffer is a parsed XEP-0096 file offer.
type siOffer struct {
	sid      string
	name     string // base name of the file
	size     int64
	mimeType string
	desc     string
	methods  []string // stream methods offered, in order
}

// errSI is an SI offer the hub cannot take; its stanza error is in siError.
var errSI = errors.New("xmpp: si")

// siError is the stanza error of a refused offer.
type siError struct {
	etype, cond string
	app         string // XEP-0095 application condition (bad-profile, no-valid-streams)
	msg         string
}

func (e *siError) Error() string { return "xmpp: si: " + e.msg }
func (e *siError) Unwrap() error { return errSI }

// parseSIOffer parses the <si/> of an offer.
func parseSIOffer(si *element) (siOffer, error) {
	o := siOffer{sid: si.AttrValue("id"), mimeType: si.AttrValue("mime-type")}
	bad := func(msg string) (siOffer, error) {
		return o, &siError{etype: "modify", cond: "bad-request", msg: msg}
	}
	if o.sid == "" {
		return bad("offer without id")
	}
	if p := si.AttrValue("profile"); p != nsSIFile {
		return o, &siError{etype: "modify", cond: "bad-request", app: "bad-profile", msg: fmt.Sprintf("profile %q, want %s", p, nsSIFile)}
	}
	f := si.Child(nsSIFile, "file")
	if f == nil {
		return bad("offer without <file/>")
	}
	name, ok := baseFileName(f.AttrValue("name"))
	if !ok {
		return bad(fmt.Sprintf("file name %q is not usable", f.AttrValue("name")))
	}
	o.name = name
	size, err := strconv.ParseInt(f.AttrValue("size"), 10, 64)
	if err != nil || size < 0 {
		return bad(fmt.Sprintf("file size %q: want a number of bytes", f.AttrValue("size")))
	}
	o.size = size
	o.desc = f.childText(nsSIFile, "desc")
	if o.mimeType == "" {
		o.mimeType = defaultSIMIME
	}
	if fn := si.Child(nsFeatureNeg, "feature"); fn != nil {
		if x := fn.Child(nsData, "x"); x != nil {
			for _, fld := range x.Elements() {
				if fld.AttrValue("var") != streamMethod {
					continue
				}
				for _, opt := range fld.Elements() {
					if opt.Name.Local == "option" {
						if v := strings.TrimSpace(opt.childText("", "value")); v != "" {
							o.methods = append(o.methods, v)
						}
					}
				}
			}
		}
	}
	if len(o.methods) == 0 {
		return bad("offer without stream methods")
	}
	return o, nil
}

// baseFileName is the last element of a file name a client sent: its
// path is none of the hub's business (and must not climb out of where the
// file goes). It refuses names that cannot be a topic level.
func baseFileName(name string) (string, bool) {
	name = path.Base(strings.ReplaceAll(name, "\\", "/"))
	if name == "" || name == "." || name == ".." || name == "/" || len(name) > maxFileName || strings.ContainsAny(name, "+#\x00") {
		return "", false
	}
	return name, true
}

// chooseMethod picks the stream method: SOCKS5 through the hub's proxy
// when the proxy runs and the sender offers it (it is the faster), else IBB.
func chooseMethod(methods []string, proxy bool) (string, bool) {
	ibb := false
	for _, m := range methods {
		if m == nsBytestreams && proxy {
			return m, true
		}
		ibb = ibb || m == nsIBB
	}
	if ibb {
		return nsIBB, true
	}
	return "", false
}

// siAccept is the answer accepting an offer with method.
func siAccept(iq *element, method string) *element {
	return resultOf(iq).Add(newElement(nsSI, "si").Add(
		newElement(nsFeatureNeg, "feature").Add(
			newElement(nsData, "x", "type", "submit").Add(
				newElement(nsData, "field", "var", streamMethod).Add(
					newElement(nsData, "value").AddText(method))))))
}

// siRefusal is the error answer refusing an offer.
func siRefusal(iq *element, e *siError) *element {
	r := errorText(iq, e.etype, e.cond, e.msg)
	if e.app != "" {
		if el := r.Child(nsClient, "error"); el != nil {
			el.Add(newElement(nsSI, e.app))
		}
	}
	return r
}

// fileTarget decides where an offered file goes: the store's name for it
// and what happens once it is stored. It returns an *siError to refuse.
type fileTarget func(ctx context.Context, p peer, o siOffer) (name string, stored func(ctx context.Context, d fileInfo), err error)

// handleSIOffer answers an SI file offer from p to the hub's JID to: it
// refuses it (ACL, size, quota, too many transfers, no stream method it
// speaks) or starts storing and accepts with the stream method chosen.
// It reports whether el was an SI offer.
func (a *Adapter) handleSIOffer(p peer, el *element, target fileTarget) bool {
	si := el.Child(nsSI, "si")
	if si == nil || el.Name.Local != "iq" {
		return false
	}
	if el.AttrValue("type") != "set" {
		if t := el.AttrValue("type"); t == "get" {
			_ = p.send(errorReply(el, "modify", "bad-request"))
		}
		return true
	}
	refuse := func(err error) {
		var se *siError
		if !errors.As(err, &se) {
			etype, cond := storeCondition(err)
			se = &siError{etype: etype, cond: cond, msg: err.Error()}
		}
		a.log.Info("xmpp: file offer refused", "from", p.fullJID(), "to", el.AttrValue("to"), "err", err)
		_ = p.send(siRefusal(el, se))
	}
	if a.cfg.Files == nil {
		refuse(&siError{etype: "cancel", cond: "service-unavailable", msg: "this hub keeps no files"})
		return true
	}
	o, err := parseSIOffer(si)
	if err != nil {
		refuse(err)
		return true
	}
	// Users of the server the hub is a component of cannot reach
	// proxy.{domain}: IBB for them.
	_, c2s := p.(clientPeer)
	method, ok := chooseMethod(o.methods, a.proxy != nil && c2s)
	if !ok {
		refuse(&siError{etype: "cancel", cond: "bad-request", app: "no-valid-streams",
			msg: "the hub takes files over " + nsIBB + " or " + nsBytestreams})
		return true
	}
	if max := a.maxFileSize(); max > 0 && o.size > max {
		refuse(&siError{etype: "modify", cond: "not-acceptable", msg: fmt.Sprintf("file of %d bytes is over the limit of %d", o.size, max)})
		return true
	}
	ctx := context.WithoutCancel(a.ctx)
	name, stored, err := target(ctx, p, o)
	if err != nil {
		refuse(err)
		return true
	}
	pr := p.principal()
	if a.xfer.get(p.fullJID(), o.sid) != nil {
		refuse(&siError{etype: "cancel", cond: "conflict", msg: "a transfer with this id is open"})
		return true
	}
	if err := a.xfer.reserve(pr.Name); err != nil {
		refuse(&siError{etype: "wait", cond: "resource-constraint", msg: err.Error()})
		return true
	}
	up, err := a.cfg.Files.Begin(ctx, name, files.PutOptions{ContentType: o.mimeType, Size: o.size, Uploader: pr.Name})
	if err != nil {
		a.xfer.release(pr.Name)
		refuse(err)
		return true
	}
	in := &inbound{key: transferKey(p.fullJID(), o.sid), sid: o.sid, from: p.fullJID(), to: el.AttrValue("to"),
		owner: pr.Name, name: name, size: o.size, method: method, up: up, stored: stored}
	a.xfer.add(in)
	_ = p.send(siAccept(el, method))
	return true
}

// handleBytestream handles a XEP-0065 streamhost offer from p for an
// accepted transfer (§5.3.1): the hub uses only its own proxy (it does not
// connect to hosts a client names), registers there as the target and
// answers streamhost-used; the sender then connects and activates, and the
// bytes flow into the store. It reports whether el was a bytestreams query.
func (a *Adapter) handleBytestream(p peer, el *element) bool {
	q := el.Child(nsBytestreams, "query")
	if q == nil || el.Name.Local != "iq" {
		return false
	}
	if el.AttrValue("type") != "set" {
		if el.AttrValue("type") == "get" {
			_ = p.send(errorReply(el, "modify", "bad-request"))
		}
		return true
	}
	sid := q.AttrValue("sid")
	in := a.xfer.get(p.fullJID(), sid)
	if in == nil {
		_ = p.send(errorText(el, "cancel", "not-acceptable", "no accepted file offer has this sid"))
		return true
	}
	if q.AttrValue("mode") == "udp" {
		a.xfer.abort(in, errors.New("xmpp: udp bytestreams are not supported"))
		_ = p.send(errorText(el, "cancel", "not-acceptable", "udp mode is not supported"))
		return true
	}
	own := false
	for _, sh := range q.Elements() {
		own = own || (sh.Name.Local == "streamhost" && sh.AttrValue("jid") == a.proxyDomain())
	}
	if a.proxy == nil || !own {
		// The transfer stays open: the sender may fall back to IBB.
		_ = p.send(errorText(el, "cancel", "item-not-found", "no usable streamhost: the hub uses only "+a.proxyDomain()))
		return true
	}
	in.mu.Lock()
	opened := in.opened
	in.opened = true
	in.mu.Unlock()
	if opened {
		_ = p.send(errorText(el, "cancel", "unexpected-request", "the transfer's stream is open already"))
		return true
	}
	conn, err := a.proxy.localTarget(socks5Addr(sid, p.fullJID(), el.AttrValue("to")))
	if err != nil {
		a.xfer.abort(in, err)
		_ = p.send(errorText(el, "wait", "resource-constraint", err.Error()))
		return true
	}
	in.mu.Lock()
	in.method = nsBytestreams
	in.mu.Unlock()
	_ = p.send(resultOf(el).Add(newElement(nsBytestreams, "query", "sid", sid).Add(
		newElement(nsBytestreams, "streamhost-used", "jid", a.proxyDomain()))))
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer conn.Close()
		if err := a.xfer.copyFrom(in, conn); err != nil {
			a.log.Info("xmpp: socks5 file transfer failed", "from", in.from, "name", in.name, "err", err)
		}
	}()
	return true
}

// copyFrom feeds a transfer from a bytestream connection: exactly the
// declared size, then the store's outcome.
func (t *transfers) copyFrom(in *inbound, c net.Conn) error {
	buf := make([]byte, 32<<10)
	for {
		in.mu.Lock()
		left := in.size - in.received
		in.mu.Unlock()
		if left <= 0 {
			break
		}
		_ = c.SetReadDeadline(time.Now().Add(transferIdleTimeout))
		n, err := c.Read(buf[:min(int64(len(buf)), left)])
		if n > 0 {
			if werr := t.write(in, buf[:n]); werr != nil {
				return werr
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				break // finish reports the short stream
			}
			t.abort(in, err)
			return fmt.Errorf("xmpp: bytestream: %w", err)
		}
	}
	return t.finish(in)
}

// handleTransfer handles the iqs of a file sent to the hub's JID: the SI
// offer (target decides where it goes), then its IBB or SOCKS5 stream. It
// reports whether el was one of them.
func (a *Adapter) handleTransfer(p peer, el *element, target fileTarget) bool {
	if el.Name.Local != "iq" {
		return false
	}
	return a.handleSIOffer(p, el, target) || a.handleIBB(p, el) || a.handleBytestream(p, el)
}

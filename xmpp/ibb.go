package xmpp

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// XEP-0047 In-Band Bytestreams, the hub as the receiving side of a file a
// client offered it with XEP-0096 (see xfer.go): open, data (in iqs, or in
// messages with stanza='message'), close.
const nsIBB = "http://jabber.org/protocol/ibb"

// ibbFrame is one parsed IBB element.
type ibbFrame struct {
	op        string // "open", "data" or "close"
	sid       string
	blockSize int    // open
	stanza    string // open: "iq" or "message"
	seq       uint16 // data
	data      []byte // data
}

// errIBB is an IBB element the hub cannot take.
var errIBB = errors.New("xmpp: ibb")

// ibbChild returns the IBB element of a stanza, or nil.
func ibbChild(el *element) *element {
	for _, c := range el.Elements() {
		if c.Name.Space == nsIBB {
			return c
		}
	}
	return nil
}

// parseIBB parses an IBB open, data or close element; data is decoded
// (whitespace in the base64 is allowed, as RFC 4648 readers commonly do)
// and must fit maxBlock bytes when maxBlock > 0.
func parseIBB(c *element, maxBlock int) (ibbFrame, error) {
	f := ibbFrame{op: c.Name.Local, sid: c.AttrValue("sid")}
	if f.sid == "" {
		return f, fmt.Errorf("%w: %s without sid", errIBB, f.op)
	}
	switch f.op {
	case "open":
		n, err := strconv.Atoi(c.AttrValue("block-size"))
		if err != nil || n <= 0 {
			return f, fmt.Errorf("%w: block-size %q", errIBB, c.AttrValue("block-size"))
		}
		f.blockSize = n
		f.stanza = c.AttrValue("stanza")
		switch f.stanza {
		case "":
			f.stanza = "iq"
		case "iq", "message":
		default:
			return f, fmt.Errorf("%w: stanza %q, want iq or message", errIBB, f.stanza)
		}
	case "data":
		seq, err := strconv.ParseUint(c.AttrValue("seq"), 10, 16)
		if err != nil {
			return f, fmt.Errorf("%w: seq %q", errIBB, c.AttrValue("seq"))
		}
		f.seq = uint16(seq)
		text := strings.Map(func(r rune) rune {
			if r == ' ' || r == '\t' || r == '\n' || r == '\r' {
				return -1
			}
			return r
		}, c.Text())
		if maxBlock > 0 && base64.StdEncoding.DecodedLen(len(text)) > maxBlock+2 {
			return f, fmt.Errorf("%w: a block of %d base64 bytes is over the block size %d", errIBB, len(text), maxBlock)
		}
		b, err := base64.StdEncoding.DecodeString(text)
		if err != nil {
			return f, fmt.Errorf("%w: data is not base64: %w", errIBB, err)
		}
		if maxBlock > 0 && len(b) > maxBlock {
			return f, fmt.Errorf("%w: a block of %d bytes is over the block size %d", errIBB, len(b), maxBlock)
		}
		f.data = b
	case "close":
	default:
		return f, fmt.Errorf("%w: unknown element <%s/>", errIBB, f.op)
	}
	return f, nil
}

// handleIBB handles an IBB stanza from p to the hub's JID to (a topic,
// device or user JID the file was offered to). It reports whether el was
// an IBB stanza.
func (a *Adapter) handleIBB(p peer, el *element) bool {
	c := ibbChild(el)
	if c == nil {
		return false
	}
	isIQ := el.Name.Local == "iq"
	typ := el.AttrValue("type")
	if isIQ && typ != "set" {
		if typ == "get" {
			_ = p.send(errorReply(el, "modify", "bad-request"))
		}
		return true
	}
	fail := func(etype, cond string) {
		if isIQ {
			_ = p.send(errorReply(el, etype, cond))
		}
	}
	in := a.xfer.get(p.fullJID(), c.AttrValue("sid"))
	maxBlock := 0
	if in != nil {
		in.mu.Lock()
		maxBlock = in.blockSize
		in.mu.Unlock()
	}
	f, err := parseIBB(c, maxBlock)
	if err != nil {
		a.log.Info("xmpp: bad ibb element", "from", p.fullJID(), "err", err)
		if in != nil && c.Name.Local == "data" {
			a.xfer.abort(in, err)
		}
		fail("modify", "bad-request")
		return true
	}
	if in == nil {
		// No accepted offer has this sid: XEP-0047 §2.1 declines an open
		// with not-acceptable, §2.2 answers data for an unknown sid
		// with item-not-found.
		if f.op == "open" {
			fail("cancel", "not-acceptable")
		} else {
			fail("cancel", "item-not-found")
		}
		return true
	}
	switch f.op {
	case "open":
		if !isIQ {
			return true
		}
		in.mu.Lock()
		switch {
		case in.opened:
			in.mu.Unlock()
			fail("cancel", "unexpected-request")
			return true
		case f.blockSize > maxIBBBlock:
			in.mu.Unlock()
			// XEP-0047 §2.1: a smaller block size may be tried.
			fail("modify", "resource-constraint")
			return true
		}
		in.opened, in.blockSize, in.stanza, in.method = true, f.blockSize, f.stanza, nsIBB
		in.mu.Unlock()
		_ = p.send(resultOf(el))
	case "data":
		in.mu.Lock()
		ok := in.opened && in.method == nsIBB && f.seq == in.seq && (in.stanza == "message") == !isIQ
		in.seq++
		in.mu.Unlock()
		if !ok {
			// Out of order, or not opened: the stream is closed (§2.2).
			a.xfer.abort(in, fmt.Errorf("%w: unexpected data seq %d", errIBB, f.seq))
			fail("cancel", "unexpected-request")
			return true
		}
		if err := a.xfer.write(in, f.data); err != nil {
			etype, cond := storeCondition(err)
			fail(etype, cond)
			return true
		}
		if isIQ {
			a.ackIBB(p, in, resultOf(el), len(c.Text()))
		}
	case "close":
		reply := el.Copy()
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			if err := a.xfer.finish(in); err != nil {
				a.log.Info("xmpp: file not stored", "from", in.from, "name", in.name, "err", err)
				etype, cond := storeCondition(err)
				_ = p.send(errorText(reply, etype, cond, err.Error()))
				return
			}
			_ = p.send(resultOf(reply))
		}()
	}
	return true
}

// ibbPace is the share of the connection's rate limits (Config.RateBytes,
// RateStanzas) a sender is paced to: the limiter ends a stream that goes
// over them, so the hub answers each data iq only when the next block would
// keep the sender under them. XEP-0047 senders wait for the answer before
// the next block; IBB in messages has no answers and is not paced.
const ibbPace = 0.8

// ackIBB sends the answer to a data iq of n base64 bytes, delayed as
// ibbPace says.
func (a *Adapter) ackIBB(p peer, in *inbound, reply *element, n int) {
	var d time.Duration
	if r := a.cfg.RateBytes; r > 0 {
		d = time.Duration(float64(n+256) / (r * ibbPace) * float64(time.Second))
	}
	if r := a.cfg.RateStanzas; r > 0 {
		d = max(d, time.Duration(float64(time.Second)/(r*ibbPace)))
	}
	now := time.Now()
	in.mu.Lock()
	if in.pace.Before(now) {
		in.pace = now
	}
	in.pace = in.pace.Add(d)
	wait := in.pace.Sub(now) - d // the block just taken is paid by the next
	in.mu.Unlock()
	if wait <= 0 {
		_ = p.send(reply)
		return
	}
	a.timers.Add(1)
	time.AfterFunc(wait, func() {
		defer a.timers.Done()
		_ = p.send(reply)
	})
}

// errorText is errorReply with a human-readable <text/>.
func errorText(el *element, typ, condition, text string) *element {
	r := errorReply(el, typ, condition)
	if e := r.Child(nsClient, "error"); e != nil && text != "" {
		e.Add(newElement(nsStanzas, "text").AddText(text))
	}
	return r
}

package xmpp

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/store"
)

// XEP-0313 Message Archive Management at topic JIDs: a topic JID is an
// archive, queried as a MUC room's is (the iq addressed to it), holding
// the topic's recorded readings (package history). Paging is XEP-0059.
const (
	nsMAM     = "urn:xmpp:mam:2"
	nsForward = "urn:xmpp:forward:0"
	nsDelay   = "urn:xmpp:delay"
	nsRSM     = "http://jabber.org/protocol/rsm"
)

// Page sizes of a MAM query: without <max/>, defaultMAMPage; a larger
// <max/> is cut to maxMAMPage (XEP-0059 lets a server return fewer).
const (
	defaultMAMPage = 50
	maxMAMPage     = 250
)

// Archive is the archive of the topics' readings that XEP-0313 queries to
// topic JIDs read (*store.Store; see package history).
type Archive interface {
	QueryArchive(ctx context.Context, q store.ArchiveQuery) (store.ArchivePage, error)
}

var _ Archive = (*store.Store)(nil)

// stampLayout is XEP-0082's DateTime with microseconds, the precision of
// the archive's times; clients (slixmpp's parser, Python's %f) take no
// more digits.
const stampLayout = "2006-01-02T15:04:05.000000Z07:00"

// errMAMQuery is a query the hub cannot answer as asked (bad-request).
var errMAMQuery = errors.New("bad MAM query")

// mamQuery is the <query xmlns='urn:xmpp:mam:2'/> child of iq, or nil.
func mamQuery(iq *element) *element {
	for _, c := range iq.Elements() {
		if c.Name.Space == nsMAM && c.Name.Local == "query" {
			return c
		}
	}
	return nil
}

// parseMAMQuery reads the data form (start, end, with) and the RSM set of
// a query sent to the archive at tjid.
func parseMAMQuery(q *element, topic, tjid string) (store.ArchiveQuery, bool, error) {
	aq := store.ArchiveQuery{Topic: topic, Max: defaultMAMPage}
	empty := false
	if x := q.Child(nsData, "x"); x != nil {
		for _, f := range x.Elements() {
			if f.Name.Local != "field" {
				continue
			}
			v := strings.TrimSpace(f.childText(nsData, "value"))
			switch name := f.AttrValue("var"); name {
			case "FORM_TYPE":
				if v != nsMAM {
					return aq, false, fmt.Errorf("%w: FORM_TYPE %q: want %s", errMAMQuery, v, nsMAM)
				}
			case "start", "end":
				if v == "" {
					continue
				}
				t, err := time.Parse(time.RFC3339Nano, v)
				if err != nil {
					return aq, false, fmt.Errorf("%w: %s %q: want an XEP-0082 date and time", errMAMQuery, name, v)
				}
				if name == "start" {
					aq.Start = t
				} else {
					aq.End = t
				}
			case "with":
				// Every message of a topic's archive is from the topic
				// JID: with that JID all match, with another none.
				if v != "" && bareOf(v) != tjid {
					empty = true
				}
			default:
				return aq, false, fmt.Errorf("%w: field %q is not supported", errMAMQuery, name)
			}
		}
	}
	if set := q.Child(nsRSM, "set"); set != nil {
		if m := set.Child(nsRSM, "max"); m != nil {
			n, err := strconv.Atoi(strings.TrimSpace(m.Text()))
			if err != nil || n < 0 {
				return aq, false, fmt.Errorf("%w: max %q: want a number", errMAMQuery, m.Text())
			}
			aq.Max = min(n, maxMAMPage)
		}
		aq.After = strings.TrimSpace(set.childText(nsRSM, "after"))
		if b := set.Child(nsRSM, "before"); b != nil {
			aq.Before = strings.TrimSpace(b.Text())
			aq.Last = aq.Before == ""
		}
	}
	return aq, empty, nil
}

func bareOf(j string) string {
	if i := strings.IndexByte(j, '/'); i >= 0 {
		return j[:i]
	}
	return j
}

// mamForm is the answer to an iq get of the query: the form's fields.
func mamForm() *element {
	x := newElement(nsData, "x", "type", "form")
	x.Add(newElement(nsData, "field", "var", "FORM_TYPE", "type", "hidden").Add(newElement(nsData, "value").AddText(nsMAM)))
	for _, f := range []string{"with", "start", "end"} {
		typ := "text-single"
		if f == "with" {
			typ = "jid-single"
		}
		x.Add(newElement(nsData, "field", "var", f, "type", typ))
	}
	return newElement(nsMAM, "query").Add(x)
}

// handleMAM answers a MAM query iq from p to the topic JID tjid: each
// archived reading as a <result/> message, then the iq result with <fin/>.
func (a *Adapter) handleMAM(p peer, iq, q *element, topic, tjid string) {
	switch iq.AttrValue("type") {
	case "get":
		_ = p.send(resultOf(iq).Add(mamForm()))
		return
	case "set":
	default:
		_ = p.send(errorReply(iq, "modify", "bad-request"))
		return
	}
	ctx := context.WithoutCancel(a.ctx)
	if err := a.cfg.Auth.CanRead(ctx, p.principal(), topic); err != nil {
		if !errors.Is(err, adapters.ErrForbidden) {
			a.log.Warn("xmpp: MAM read check", "topic", topic, "err", err)
			_ = p.send(errorReply(iq, "wait", "internal-server-error"))
			return
		}
		a.metrics.denied.Inc()
		_ = p.send(errorReply(iq, "auth", "forbidden"))
		return
	}
	aq, empty, err := parseMAMQuery(q, topic, tjid)
	if err != nil {
		_ = p.send(withText(errorReply(iq, "modify", "bad-request"), err.Error()))
		return
	}
	page := store.ArchivePage{Complete: true}
	if !empty && aq.Max > 0 {
		page, err = a.cfg.Archive.QueryArchive(ctx, aq)
	} else if !empty {
		// <max>0</max> asks for the count only.
		aq.Max = 1
		page, err = a.cfg.Archive.QueryArchive(ctx, aq)
		page.Messages = nil
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		_ = p.send(errorReply(iq, "cancel", "item-not-found"))
		return
	case errors.Is(err, store.ErrInvalidArchiveID):
		_ = p.send(withText(errorReply(iq, "modify", "bad-request"), "not an id of this archive"))
		return
	case err != nil:
		a.log.Warn("xmpp: MAM query", "topic", topic, "err", err)
		_ = p.send(errorReply(iq, "wait", "internal-server-error"))
		return
	}
	queryID := q.AttrValue("queryid")
	for _, m := range page.Messages {
		e := &broker.Envelope{ID: m.ID, Topic: topic, Payload: m.Payload, ContentType: m.ContentType, Time: m.Time}
		inner := envelopeMessage(tjid, p.bareJID(), e)
		fwd := newElement(nsForward, "forwarded").Add(
			newElement(nsDelay, "delay", "stamp", m.Time.UTC().Format(stampLayout)), inner)
		_ = p.send(newElement(nsClient, "message", "from", tjid, "to", p.bareJID(), "id", randomID()).Add(
			newElement(nsMAM, "result", "queryid", queryID, "id", m.ArchiveID).Add(fwd)))
	}
	set := newElement(nsRSM, "set")
	if len(page.Messages) > 0 {
		set.Add(newElement(nsRSM, "first", "index", strconv.Itoa(page.FirstIndex)).AddText(page.Messages[0].ArchiveID),
			newElement(nsRSM, "last").AddText(page.Messages[len(page.Messages)-1].ArchiveID))
	}
	set.Add(newElement(nsRSM, "count").AddText(strconv.Itoa(page.Count)))
	fin := newElement(nsMAM, "fin", "queryid", queryID, "complete", strconv.FormatBool(page.Complete)).Add(set)
	_ = p.send(resultOf(iq).Add(fin))
}

// withText adds an RFC 6120 <text/> to an error reply.
func withText(reply *element, text string) *element {
	for _, c := range reply.Elements() {
		if c.Name.Local == "error" {
			c.Add(newElement(nsStanzas, "text").AddText(text))
		}
	}
	return reply
}

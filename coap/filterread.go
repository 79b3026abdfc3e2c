package coap

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
)

// Bounds of a filter read (GET of /ps/{filter} without Observe).
const (
	DefaultFilterReadLimit = 100
	MaxFilterReadLimit     = 1000
)

// RetainedJSON is one value in the answer to a GET of a filter: the
// shape of the REST API's envelopes, so one parser reads both.
type RetainedJSON struct {
	Topic string `json:"topic"`
	// Payload is the payload as text when it is UTF-8, else base64 with
	// PayloadEncoding "base64".
	Payload         string    `json:"payload"`
	PayloadEncoding string    `json:"payload_encoding,omitempty"`
	ContentType     string    `json:"content_type,omitempty"`
	QoS             byte      `json:"qos"`
	Time            time.Time `json:"time"`
}

// retainedJSON converts an envelope for a filter read.
func retainedJSON(e *broker.Envelope) RetainedJSON {
	j := RetainedJSON{Topic: e.Topic, ContentType: e.ContentType, QoS: e.QoS, Time: e.Time.UTC()}
	if utf8.Valid(e.Payload) {
		j.Payload = string(e.Payload)
	} else {
		j.Payload, j.PayloadEncoding = base64.StdEncoding.EncodeToString(e.Payload), "base64"
	}
	return j
}

// filterLimit reads ?limit= (1..MaxFilterReadLimit, default
// DefaultFilterReadLimit).
func (req *request) filterLimit() (int, error) {
	s, ok := req.query["limit"]
	if !ok {
		return DefaultFilterReadLimit, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > MaxFilterReadLimit {
		return 0, fmt.Errorf("%w: limit=%q: must be 1..%d", errBadQuery, s, MaxFilterReadLimit)
	}
	return n, nil
}

// readFilter serves GET of a filter without Observe: every retained value
// under it that the client may read, in topic order, at most ?limit= of
// them, as a JSON array (application/json; go-coap sends it block-wise
// when it is larger than a block). 4.04 when there is none.
func (a *Adapter) readFilter(w *responsewriter.ResponseWriter[*udpClient.Conn], req *request, filter string) codes.Code {
	limit, err := req.filterLimit()
	if err != nil {
		return a.fail(w, err)
	}
	if req.msg.HasOption(message.Accept) {
		if cf, err := req.msg.Accept(); err != nil || cf != message.AppJSON {
			return a.fail(w, fmt.Errorf("%w: a filter is read as application/json (50)", errNotAcceptable))
		}
	}
	ret, err := a.readableRetained(req.principal, filter)
	if err != nil {
		return a.fail(w, err)
	}
	if len(ret) == 0 {
		return a.fail(w, fmt.Errorf("%w under %q", errNoValue, filter))
	}
	sort.Slice(ret, func(i, j int) bool { return ret[i].Topic < ret[j].Topic })
	out := make([]RetainedJSON, 0, min(len(ret), limit))
	for _, e := range ret[:min(len(ret), limit)] {
		out = append(out, retainedJSON(e))
	}
	b, err := json.Marshal(out)
	if err != nil {
		return a.fail(w, fmt.Errorf("encode %q: %w", filter, err))
	}
	return a.respondRaw(w, codes.Content, message.AppJSON, b)
}

// readableRetained returns the retained values under filter that p may
// read.
func (a *Adapter) readableRetained(p adapters.Principal, filter string) ([]*broker.Envelope, error) {
	ctx, cancel := context.WithTimeout(a.ctx, reqTimeout)
	defer cancel()
	ret, err := a.cfg.Bus.Retained(ctx, filter)
	if err != nil {
		return nil, fmt.Errorf("retained %q: %w", filter, err)
	}
	out := ret[:0:0]
	for _, e := range ret {
		if len(e.Payload) > 0 && a.readable(p, e.Topic) {
			out = append(out, e)
		}
	}
	return out, nil
}

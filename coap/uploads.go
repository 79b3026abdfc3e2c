package coap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/hubsmith/hub/adapters"
)

// Block-wise uploads to /ps (RFC 7959 Block1) are reassembled by go-coap
// before the handler sees them, so they are checked here, in the request
// monitor, block by block before go-coap buffers anything:
//
//   - block 0 is authenticated and authorized (publish on the topic) as
//     the whole request would be: 4.01/4.03 and nothing kept;
//   - a later block with no upload of that path in progress from the
//     endpoint (never started, refused, or idle past
//     Config.BlockwiseTimeout) is 4.08 Request Entity Incomplete;
//   - what one endpoint has in reassembly is bounded by
//     MaxUploadBytesPerEndpoint (4.13) and what all of them have by
//     MaxUploadBytesTotal (5.03).

// DefaultBlockwiseTimeout is Config.BlockwiseTimeout's default.
const DefaultBlockwiseTimeout = 30 * time.Second

// Defaults of the reassembly bounds, as multiples of MaxPayload.
const (
	defaultUploadEndpointFactor = 2
	defaultUploadTotalFactor    = 64
)

// Errors of the upload guard.
var (
	errUploadBusy  = errors.New("too many block-wise uploads in reassembly")
	errUploadBlock = errors.New("block-wise upload")
)

// upload is one block-wise upload in reassembly.
type upload struct {
	bytes int64
	seen  time.Time
}

// uploadBytes is what the endpoint has in reassembly. Called with cs.mu.
func (cs *connState) uploadBytes() int64 {
	var n int64
	for _, u := range cs.uploads {
		n += u.bytes
	}
	return n
}

// expireUploads forgets uploads idle for BlockwiseTimeout. Called
// with cs.mu held.
func (a *Adapter) expireUploads(cs *connState, now time.Time) {
	for k, u := range cs.uploads {
		if now.Sub(u.seen) > a.cfg.BlockwiseTimeout {
			a.uploadTotal.Add(-u.bytes)
			delete(cs.uploads, k)
		}
	}
}

// dropUploads forgets every upload of a closed endpoint.
func (a *Adapter) dropUploads(cs *connState) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for k, u := range cs.uploads {
		a.uploadTotal.Add(-u.bytes)
		delete(cs.uploads, k)
	}
}

// guardBlock1 checks one Block1 request that is not for /files (see the
// comment above). It reports whether it refused r (the answer is written).
func (a *Adapter) guardBlock1(cc *udpClient.Conn, r *pool.Message) bool {
	v, err := r.GetOptionUint32(message.Block1)
	if err != nil || r.Code() < codes.GET || r.Code() > codes.DELETE {
		return false
	}
	cs := a.state(cc)
	if cs == nil {
		return false
	}
	szx, num, more, err := blockwise.DecodeBlockOption(v)
	if err != nil || szx > blockwise.SZX1024 {
		return a.refuse(cc, r, codes.BadRequest, fmt.Sprintf("%v: Block1 option %d", errUploadBlock, v))
	}
	req := &request{cs: cs, msg: r}
	for _, o := range r.Options() {
		if o.ID == message.URIPath {
			req.path = append(req.path, string(o.Value))
		}
	}
	key := strings.Join(req.path, "/")
	n, _ := r.BodySize()
	size := num*szx.Size() + n
	now := time.Now()
	if num == 0 {
		if code, err := a.checkUploadStart(req); err != nil {
			return a.refuse(cc, r, code, err.Error())
		}
	}
	cs.mu.Lock()
	a.expireUploads(cs, now)
	u := cs.uploads[key]
	if u == nil && num > 0 {
		cs.mu.Unlock()
		return a.refuse(cc, r, codes.RequestEntityIncomplete, fmt.Sprintf("%v: block %d of /%s, but no upload is in progress: start again at block 0", errUploadBlock, num, key))
	}
	if u == nil {
		u = &upload{}
		cs.uploads[key] = u
	}
	grow := max(size-u.bytes, 0)
	switch have := cs.uploadBytes(); {
	case size > int64(a.cfg.MaxPayload):
		a.uploadTotal.Add(-u.bytes)
		delete(cs.uploads, key)
		cs.mu.Unlock()
		return a.refuseTooLarge(cc, r, fmt.Sprintf("%v: %d bytes, the limit is %d", errTooLarge, size, a.cfg.MaxPayload))
	case have+grow > a.cfg.MaxUploadBytesPerEndpoint:
		a.uploadTotal.Add(-u.bytes)
		delete(cs.uploads, key)
		cs.mu.Unlock()
		return a.refuseTooLarge(cc, r, fmt.Sprintf("%v: this endpoint has %d bytes in reassembly, the limit is %d", errTooLarge, have, a.cfg.MaxUploadBytesPerEndpoint))
	case a.uploadTotal.Load()+grow > a.cfg.MaxUploadBytesTotal:
		a.uploadTotal.Add(-u.bytes)
		delete(cs.uploads, key)
		cs.mu.Unlock()
		return a.refuse(cc, r, codes.ServiceUnavailable, fmt.Sprintf("%v: %d bytes, the limit; try again later", errUploadBusy, a.cfg.MaxUploadBytesTotal))
	}
	u.bytes += grow
	a.uploadTotal.Add(grow)
	u.seen = now
	if !more {
		// The last block: go-coap hands the whole body to the handler now.
		a.uploadTotal.Add(-u.bytes)
		delete(cs.uploads, key)
	}
	cs.mu.Unlock()
	return false
}

// checkUploadStart authenticates and authorizes the first block of an
// upload as its whole request would be.
func (a *Adapter) checkUploadStart(req *request) (codes.Code, error) {
	if err := req.parseQuery(req.msg); err != nil {
		return errorCode(err), err
	}
	ctx, cancel := context.WithTimeout(a.ctx, reqTimeout)
	defer cancel()
	if err := a.authenticate(ctx, req); err != nil {
		return errorCode(err), err
	}
	if req.msg.Code() != codes.POST && req.msg.Code() != codes.PUT {
		err := fmt.Errorf("%w: a block-wise %v (upload with POST or PUT)", errMethod, req.msg.Code())
		return errorCode(err), err
	}
	topic, err := topicFromSegments(req.path, false)
	if err != nil {
		return errorCode(err), err
	}
	if err := a.authorize(req, adapters.ActionPublish, topic); err != nil {
		return errorCode(err), err
	}
	return 0, nil
}

// refuseTooLarge is refuse with 4.13 and Size1.
func (a *Adapter) refuseTooLarge(cc *udpClient.Conn, r *pool.Message, diag string) bool {
	return a.refuse(cc, r, codes.RequestEntityTooLarge, diag, message.Option{ID: message.Size1, Value: blockValue(uint32(a.cfg.MaxPayload))})
}

// refuse answers r with code and a diagnostic payload from the request
// monitor, before go-coap's block-wise layer has seen it; it reports true
// (r is dropped).
func (a *Adapter) refuse(cc *udpClient.Conn, r *pool.Message, code codes.Code, diag string, opts ...message.Option) bool {
	resp := cc.AcquireMessage(r.Context())
	defer cc.ReleaseMessage(resp)
	resp.SetCode(code)
	resp.SetToken(r.Token())
	for _, o := range opts {
		resp.AddOptionBytes(o.ID, o.Value)
	}
	resp.SetContentFormat(message.TextPlain)
	resp.SetBody(bytes.NewReader([]byte(diag)))
	if cs := a.state(cc); cs != nil {
		if limit := a.unverifiedLimit(cs, r); limit > 0 && a.responseSize(r, resp) > limit {
			resp.SetBody(nil)
			resp.Remove(message.ContentFormat)
		}
	}
	if r.Type() == message.Confirmable {
		resp.SetType(message.Acknowledgement)
		resp.SetMessageID(r.MessageID())
	} else {
		resp.SetType(message.NonConfirmable)
		resp.SetMessageID(cc.GetMessageID())
	}
	if err := cc.Session().WriteMessage(resp); err != nil {
		a.log.Debug("coap: write refusal", "code", codeLabel(code), "err", err)
	}
	a.metrics.requests.WithLabelValues(r.Code().String(), codeLabel(code)).Inc()
	return true
}

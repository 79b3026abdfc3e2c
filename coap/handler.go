package coap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
)

// reqTimeout bounds the bus and store work of one request.
const reqTimeout = 10 * time.Second

// errUnsupportedFormat marks a Content-Format number the hub cannot map.
var errUnsupportedFormat = errors.New("unsupported content format")

// errTooLarge marks a body over MaxPayload.
var errTooLarge = errors.New("payload too large")

// errBadQuery marks a malformed query option.
var errBadQuery = errors.New("bad query")

// errNotAcceptable marks a stored value whose format the Accept option refuses.
var errNotAcceptable = errors.New("not acceptable")

// errMethod marks a method the resource does not serve.
var errMethod = errors.New("method not allowed")

// errNoValue marks a topic without a retained value.
var errNoValue = errors.New("no value")

// errorCodes maps error sentinels to CoAP response codes, first match wins.
var errorCodes = []struct {
	err  error
	code codes.Code
}{
	{ErrBadPath, codes.BadRequest},
	{errBadQuery, codes.BadRequest},
	{broker.ErrInvalidTopic, codes.BadRequest},
	{broker.ErrWildcardTopic, codes.BadRequest},
	{broker.ErrInvalidFilter, codes.BadRequest},
	{adapters.ErrAuthRequired, codes.Unauthorized},
	{adapters.ErrTooManyAttempts, codes.TooManyRequests},
	{adapters.ErrTLSRequired, codes.Forbidden},
	{adapters.ErrBadCredentials, codes.Unauthorized},
	{adapters.ErrForbidden, codes.Forbidden},
	{errNoValue, codes.NotFound},
	{errMethod, codes.MethodNotAllowed},
	{errNotAcceptable, codes.NotAcceptable},
	{errTooLarge, codes.RequestEntityTooLarge},
	{errUnsupportedFormat, codes.UnsupportedMediaType},
	{broker.ErrStorage, codes.ServiceUnavailable},
	{broker.ErrClosed, codes.ServiceUnavailable},
	{context.DeadlineExceeded, codes.ServiceUnavailable},
}

// codeLabel writes a response code as RFC 7252 does: "2.05", "4.04".
func codeLabel(c codes.Code) string { return fmt.Sprintf("%d.%02d", c>>5, c&31) }

func errorCode(err error) codes.Code {
	for _, e := range errorCodes {
		if errors.Is(err, e.err) {
			return e.code
		}
	}
	return codes.InternalServerError
}

// request is one decoded CoAP request.
type request struct {
	cs        *connState
	msg       *pool.Message
	path      []string
	query     map[string]string
	principal adapters.Principal
	clientID  string
}

// handle is go-coap's handler for both listeners.
func (a *Adapter) handle(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message) {
	if r.Code() == codes.Empty || r.Code() >= codes.Created {
		return // a reset, an ACK or a stray response: nothing to answer
	}
	cs := a.state(w.Conn())
	if cs == nil {
		return
	}
	start := time.Now()
	a.checkEcho(cs, r)
	code := a.serve(w, r, cs)
	a.boundAmplification(w, r, cs)
	a.metrics.requests.WithLabelValues(r.Code().String(), codeLabel(code)).Inc()
	a.metrics.latency.Observe(time.Since(start).Seconds())
	if !cs.secure && cs.requests.Add(1)%recycleAfter == 0 {
		// go-coap (v3.8.0) scans an endpoint's whole response cache, which
		// keeps every response for EXCHANGE_LIFETIME (247 s), on each of its
		// datagrams: a chatty UDP client would slow the read loop of every
		// client quadratically. Once this response is out, the endpoint's
		// state is marked for recycling; the idle monitor drops it before
		// the next datagram is routed, which then starts afresh. Only a
		// retransmission of this very request could be taken for a new one.
		responsewriter.AfterWrite(r.Context(), func() { cs.recycle.Store(true) })
	}
}

// recycleAfter is how many requests a plain UDP endpoint's state serves
// before it is started afresh (see handle).
const recycleAfter = 2048

func (a *Adapter) serve(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message, cs *connState) codes.Code {
	req := &request{cs: cs, msg: r}
	for _, o := range r.Options() {
		if o.ID == message.URIPath {
			req.path = append(req.path, string(o.Value))
		}
	}
	if err := req.parseQuery(r); err != nil {
		return a.fail(w, err)
	}
	if err := a.authenticate(r.Context(), req); err != nil {
		return a.fail(w, err)
	}
	if len(req.path) == 2 && req.path[0] == ".well-known" && req.path[1] == "core" {
		if r.Code() != codes.GET {
			return a.fail(w, fmt.Errorf("%w: %v on /.well-known/core", errMethod, r.Code()))
		}
		return a.wellKnownCore(w, req)
	}
	if len(req.path) > 0 && req.path[0] == FilesRoot {
		return a.serveFiles(w, req)
	}
	switch r.Code() {
	case codes.POST:
		return a.publish(w, req, false)
	case codes.PUT:
		return a.publish(w, req, true)
	case codes.GET:
		if obs, err := r.Observe(); err == nil {
			switch obs {
			case 0:
				return a.observe(w, req)
			case 1:
				a.deregister(cs, r.Token())
			}
		}
		return a.read(w, req)
	case codes.DELETE:
		return a.clear(w, req)
	}
	return a.fail(w, fmt.Errorf("%w: %v (use POST, PUT, GET or DELETE)", errMethod, r.Code()))
}

func (req *request) parseQuery(r *pool.Message) error {
	for _, o := range r.Options() {
		if o.ID != message.URIQuery {
			continue
		}
		k, v, _ := strings.Cut(string(o.Value), "=")
		if req.query == nil {
			req.query = make(map[string]string)
		}
		if short, ok := queryAliases[k]; ok {
			k = short
		}
		req.query[k] = v
	}
	return nil
}

// queryAliases maps EMQX 5's long query names to the short ones of its
// CoAP gateway's first version, which the adapter reads.
var queryAliases = map[string]string{"clientid": "c", "username": "u", "password": "p"}

// qos is the publish QoS: ?qos= when given, else 1 for CON and 0 for NON.
func (req *request) qos() (byte, error) {
	if s, ok := req.query["qos"]; ok {
		q, err := strconv.ParseUint(strings.TrimPrefix(s, "qos"), 10, 8)
		if err != nil || q > 2 {
			return 0, fmt.Errorf("%w: qos=%q: must be 0, 1 or 2 (or qos0..qos2)", errBadQuery, s)
		}
		return byte(q), nil
	}
	if req.msg.Type() == message.Confirmable {
		return 1, nil
	}
	return 0, nil
}

// retain reads ?retain= (true/false, 1/0).
func (req *request) retain() (bool, error) {
	s, ok := req.query["retain"]
	if !ok {
		return false, nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, fmt.Errorf("%w: retain=%q: must be true or false", errBadQuery, s)
	}
	return b, nil
}

// authenticate sets the request's principal: the PSK identity on DTLS,
// else the ?u=&p= query credentials, else anonymous when the listener
// allows it.
func (a *Adapter) authenticate(ctx context.Context, req *request) error {
	cs := req.cs
	if cs.secure {
		if cs.device == "" {
			return fmt.Errorf("coap: dtls session without psk identity: %w", adapters.ErrAuthRequired)
		}
		req.principal = adapters.Principal{Name: cs.device, Role: adapters.RoleDevice}
		req.clientID = cs.device
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, reqTimeout)
	defer cancel()
	if a.cfg.RequireTLS && a.anonOK != adapters.AnonymousLocal && (req.query["u"] != "" || req.query["p"] != "") {
		return fmt.Errorf("coap: %w (coaps, DTLS with the device's PSK)", adapters.ErrTLSRequired)
	}
	ctx = adapters.WithLoginSource(ctx, adapters.LoginSource{Protocol: broker.ProtoCoAP, Remote: cs.remote})
	p, err := a.cfg.Auth.Authenticate(ctx, req.query["u"], req.query["p"], a.anonOK)
	if err != nil {
		return err
	}
	req.principal = p
	req.clientID = req.query["c"]
	if req.clientID == "" {
		req.clientID = cs.remote
	}
	return nil
}

func (a *Adapter) authorize(req *request, action adapters.Action, topic string) error {
	ctx, cancel := context.WithTimeout(context.Background(), reqTimeout)
	defer cancel()
	return a.cfg.Auth.Authorize(ctx, req.principal, action, topic)
}

// body reads the request body, refusing one over MaxPayload.
func (a *Adapter) body(r *pool.Message) ([]byte, error) {
	if r.Body() == nil {
		return nil, nil
	}
	if n, err := r.BodySize(); err == nil && n > int64(a.cfg.MaxPayload) {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", errTooLarge, n, a.cfg.MaxPayload)
	}
	b, err := r.ReadBody()
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	return b, nil
}

// contentType maps the Content-Format option to a MIME type ("" when absent).
func contentType(r *pool.Message) (string, error) {
	if !r.HasOption(message.ContentFormat) {
		return "", nil
	}
	cf, err := r.ContentFormat()
	if err != nil {
		return "", fmt.Errorf("%w: %v", errUnsupportedFormat, err)
	}
	t, ok := MIMEType(uint16(cf))
	if !ok {
		return "", fmt.Errorf("%w: content-format %d", errUnsupportedFormat, cf)
	}
	return t, nil
}

func (a *Adapter) envelope(req *request, topic string) *broker.Envelope {
	return &broker.Envelope{
		Topic: topic,
		Origin: broker.Origin{
			Protocol:  broker.ProtoCoAP,
			ClientID:  req.clientID,
			Remote:    req.cs.remote,
			Principal: req.principal.Name,
			Node:      a.node,
		},
	}
}

// publish serves POST (retain from ?retain=) and PUT (always retained).
func (a *Adapter) publish(w *responsewriter.ResponseWriter[*udpClient.Conn], req *request, put bool) codes.Code {
	topic, err := topicFromSegments(req.path, false)
	if err != nil {
		return a.fail(w, err)
	}
	if err := a.authorize(req, adapters.ActionPublish, topic); err != nil {
		return a.fail(w, err)
	}
	ct, err := contentType(req.msg)
	if err != nil {
		return a.fail(w, err)
	}
	payload, err := a.body(req.msg)
	if err != nil {
		return a.fail(w, err)
	}
	qos, err := req.qos()
	if err != nil {
		return a.fail(w, err)
	}
	retain := put
	if !put {
		if retain, err = req.retain(); err != nil {
			return a.fail(w, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), reqTimeout)
	defer cancel()
	created := false
	if put {
		old, err := a.cfg.Bus.Retained(ctx, topic)
		if err != nil {
			return a.fail(w, err)
		}
		created = len(old) == 0
	}
	e := a.envelope(req, topic)
	e.Payload, e.ContentType, e.QoS, e.Retain = payload, ct, qos, retain
	if err := a.cfg.Bus.Publish(ctx, e); err != nil {
		return a.fail(w, fmt.Errorf("publish %q: %w", topic, err))
	}
	a.metrics.published.Inc()
	if created {
		return a.respond(w, codes.Created, nil, nil)
	}
	return a.respond(w, codes.Changed, nil, nil)
}

// read serves GET without Observe: the topic's retained value, or of a
// filter every retained value the client may read (readFilter); a request
// for the further blocks of a large notification gets that notification
// (continuation).
func (a *Adapter) read(w *responsewriter.ResponseWriter[*udpClient.Conn], req *request) codes.Code {
	topic, err := topicFromSegments(req.path, true)
	if err != nil {
		return a.fail(w, err)
	}
	if err := a.authorize(req, adapters.ActionSubscribe, topic); err != nil {
		return a.fail(w, err)
	}
	if !broker.IsFilter(topic) {
		if err := a.canRead(req.principal, topic); err != nil {
			return a.fail(w, err)
		}
	}
	if e := a.continuation(req, topic); e != nil {
		if err := a.canRead(req.principal, e.Topic); err != nil {
			return a.fail(w, err)
		}
		return a.respond(w, codes.Content, e, nil)
	}
	if broker.IsFilter(topic) {
		return a.readFilter(w, req, topic)
	}
	e, err := a.retained(req.principal, topic)
	if err != nil {
		return a.fail(w, err)
	}
	if e == nil {
		return a.fail(w, fmt.Errorf("%w on %q", errNoValue, topic))
	}
	if err := acceptable(req.msg, e); err != nil {
		return a.fail(w, err)
	}
	return a.respond(w, codes.Content, e, nil)
}

// retained returns the bus's retained value of a topic (or the newest of
// those matching a filter) that p may read, or nil: the one answer to
// "read this topic", as in REST and XMPP.
func (a *Adapter) retained(p adapters.Principal, topic string) (*broker.Envelope, error) {
	ctx, cancel := context.WithTimeout(context.Background(), reqTimeout)
	defer cancel()
	ret, err := a.cfg.Bus.Retained(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("retained %q: %w", topic, err)
	}
	var best *broker.Envelope
	for _, e := range ret {
		if (best == nil || e.Time.After(best.Time)) && a.readable(p, e.Topic) {
			best = e
		}
	}
	return best, nil
}

// canRead is adapters.Auth.CanRead: whether p may receive an envelope of
// topic.
func (a *Adapter) canRead(p adapters.Principal, topic string) error {
	ctx, cancel := context.WithTimeout(a.ctx, reqTimeout)
	defer cancel()
	return a.cfg.Auth.CanRead(ctx, p, topic)
}

// readable reports whether an envelope of topic may go to p; one that may
// not is counted in hub_coap_denied_total and skipped, as is one the
// store could not decide on (logged).
func (a *Adapter) readable(p adapters.Principal, topic string) bool {
	err := a.canRead(p, topic)
	switch {
	case err == nil:
		return true
	case !errors.Is(err, adapters.ErrForbidden):
		a.log.Warn("coap: read check", "topic", topic, "principal", p.Name, "err", err)
	}
	a.metrics.denied.Inc()
	return false
}

// acceptable checks the Accept option against the value's format.
func acceptable(r *pool.Message, e *broker.Envelope) error {
	if !r.HasOption(message.Accept) {
		return nil
	}
	want, err := r.Accept()
	if err != nil {
		return fmt.Errorf("%w: %v", errNotAcceptable, err)
	}
	have, ok := ContentFormat(e.ContentType)
	if e.ContentType == "" || (ok && have == uint16(want)) {
		return nil
	}
	return fmt.Errorf("%w: value is %q, Accept is %d", errNotAcceptable, e.ContentType, want)
}

// clear serves DELETE: the retained value goes.
func (a *Adapter) clear(w *responsewriter.ResponseWriter[*udpClient.Conn], req *request) codes.Code {
	topic, err := topicFromSegments(req.path, false)
	if err != nil {
		return a.fail(w, err)
	}
	if err := a.authorize(req, adapters.ActionPublish, topic); err != nil {
		return a.fail(w, err)
	}
	qos, err := req.qos()
	if err != nil {
		return a.fail(w, err)
	}
	e := a.envelope(req, topic)
	e.Retain, e.QoS = true, qos
	ctx, cancel := context.WithTimeout(context.Background(), reqTimeout)
	defer cancel()
	if err := a.cfg.Bus.Publish(ctx, e); err != nil {
		return a.fail(w, fmt.Errorf("clear %q: %w", topic, err))
	}
	return a.respond(w, codes.Deleted, nil, nil)
}

// wellKnownCore serves RFC 6690 discovery: /ps and every retained topic
// the principal may read.
func (a *Adapter) wellKnownCore(w *responsewriter.ResponseWriter[*udpClient.Conn], req *request) codes.Code {
	ctx, cancel := context.WithTimeout(context.Background(), reqTimeout)
	defer cancel()
	ret, err := a.cfg.Bus.Retained(ctx, "#")
	if err != nil {
		return a.fail(w, err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `</%s>;rt="core.ps";ct=40`, PubSubRoot)
	for _, e := range ret {
		if !a.readable(req.principal, e.Topic) {
			continue
		}
		fmt.Fprintf(&b, `,<%s>;rt="core.ps.data";obs`, TopicToPath(e.Topic))
		if cf, ok := ContentFormat(e.ContentType); ok {
			fmt.Fprintf(&b, ";ct=%d", cf)
		}
	}
	return a.respondRaw(w, codes.Content, message.AppLinkFormat, []byte(b.String()))
}

// respond sets a response: with e, its payload and Content-Format.
func (a *Adapter) respond(w *responsewriter.ResponseWriter[*udpClient.Conn], code codes.Code, e *broker.Envelope, opts message.Options) codes.Code {
	var body io.ReadSeeker
	if e != nil {
		body = bytes.NewReader(e.Payload)
	}
	if err := w.SetResponse(code, message.TextPlain, body, opts...); err != nil {
		return code // suppressed by a No-Response option
	}
	w.Message().Remove(message.ContentFormat)
	if e != nil {
		if cf, ok := ContentFormat(e.ContentType); ok {
			w.Message().SetContentFormat(message.MediaType(cf))
		}
	}
	return code
}

func (a *Adapter) respondRaw(w *responsewriter.ResponseWriter[*udpClient.Conn], code codes.Code, cf message.MediaType, body []byte) codes.Code {
	if err := w.SetResponse(code, cf, bytes.NewReader(body)); err != nil {
		return code // suppressed by a No-Response option
	}
	return code
}

// fail answers with the code errorCode gives and the error as a
// diagnostic payload (RFC 7252 §5.5.2).
func (a *Adapter) fail(w *responsewriter.ResponseWriter[*udpClient.Conn], err error) codes.Code {
	code := errorCode(err)
	if code >= codes.InternalServerError {
		a.log.Warn("coap: request failed", "err", err)
	}
	a.respondRaw(w, code, message.TextPlain, []byte(err.Error()))
	if code == codes.RequestEntityTooLarge && w.Message().Code() == code {
		w.Message().SetOptionUint32(message.Size1, uint32(a.cfg.MaxPayload))
	}
	return code
}

// monitorRequest sees every datagram before go-coap handles it: a Reset
// ends the observation whose notification it answers, and a block-wise
// upload that would grow over MaxPayload is refused with 4.13 before it
// is buffered.
func (a *Adapter) monitorRequest(cc *udpClient.Conn, r *pool.Message) (bool, error) {
	if r.Type() == message.Reset {
		if cs := a.state(cc); cs != nil {
			cs.reset(r.MessageID())
		}
		return false, nil
	}
	if a.stashBlock1(r) {
		return false, nil // the file store bounds /files uploads
	}
	if a.guardBlock1(cc, r) {
		return true, nil
	}
	if !r.HasOption(message.Block1) && !r.HasOption(message.Size1) {
		return false, nil
	}
	size := int64(0)
	if v, err := r.GetOptionUint32(message.Size1); err == nil {
		size = int64(v)
	}
	if v, err := r.GetOptionUint32(message.Block1); err == nil {
		szx, num, _, err := blockwise.DecodeBlockOption(v)
		if err == nil && szx <= blockwise.SZX1024 {
			n, _ := r.BodySize()
			size = max(size, num*szx.Size()+n)
		}
	}
	if size <= int64(a.cfg.MaxPayload) {
		return false, nil
	}
	resp := cc.AcquireMessage(r.Context())
	defer cc.ReleaseMessage(resp)
	resp.SetCode(codes.RequestEntityTooLarge)
	resp.SetToken(r.Token())
	resp.SetOptionUint32(message.Size1, uint32(a.cfg.MaxPayload))
	resp.SetContentFormat(message.TextPlain)
	resp.SetBody(bytes.NewReader(fmt.Appendf(nil, "%v: %d bytes, the limit is %d", errTooLarge, size, a.cfg.MaxPayload)))
	if r.Type() == message.Confirmable {
		resp.SetType(message.Acknowledgement)
		resp.SetMessageID(r.MessageID())
	} else {
		resp.SetType(message.NonConfirmable)
		resp.SetMessageID(cc.GetMessageID())
	}
	if err := cc.Session().WriteMessage(resp); err != nil {
		a.log.Debug("coap: write 4.13", "err", err)
	}
	a.metrics.requests.WithLabelValues(r.Code().String(), codeLabel(codes.RequestEntityTooLarge)).Inc()
	return true, nil
}

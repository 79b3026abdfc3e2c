package rest

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
)

// Response headers of GET /api/v1/topics/{topic}.
const (
	HeaderID             = "X-Hub-Id"
	HeaderQoS            = "X-Hub-Qos"
	HeaderTime           = "X-Hub-Time"
	HeaderRetain         = "X-Hub-Retain"
	HeaderOriginProtocol = "X-Hub-Origin-Protocol"
	HeaderOriginClient   = "X-Hub-Origin-Client"
	HeaderOriginUser     = "X-Hub-Origin-Principal"
)

// topicFromPath turns the wildcard path parameter ("/a/b") into a topic
// ("a/b"). Only the one slash gin keeps is removed, so "//a" is the topic
// "/a", as in MQTT.
func topicFromPath(param string) string {
	return strings.TrimPrefix(param, "/")
}

// parseQoS reads the qos query parameter (def when absent).
func parseQoS(s string, def byte) (byte, error) {
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 2 {
		return 0, badRequest("qos %q: must be 0, 1 or 2", trunc(s))
	}
	return byte(n), nil
}

// parseBool reads a boolean query parameter (def when absent).
func parseBool(name, s string, def bool) (bool, error) {
	if s == "" {
		return def, nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, badRequest("%s %q: must be true or false", name, trunc(s))
	}
	return b, nil
}

// publishResult is the body of a successful publish.
type publishResult struct {
	ID string `json:"id"`
}

// publish handles POST /api/v1/topics/{topic}: the body is the payload, the
// Content-Type is kept. QoS 0 answers 202 once the bus took the envelope,
// QoS 1 and 2 answer 200 once it is durable.
func (a *Adapter) publish(c *gin.Context) {
	topic := topicFromPath(c.Param("topic"))
	if err := a.checkTopic(topic, broker.ValidateTopic); err != nil {
		a.fail(c, err)
		return
	}
	if strings.HasPrefix(topic, "$") {
		a.fail(c, fmt.Errorf("%w: %q", errReserved, trunc(topic)))
		return
	}
	qos, err := parseQoS(c.Query("qos"), 0)
	if err != nil {
		a.fail(c, err)
		return
	}
	retain, err := parseBool("retain", c.Query("retain"), false)
	if err != nil {
		a.fail(c, err)
		return
	}
	ctx := c.Request.Context()
	p := principal(c)
	if err := a.cfg.Auth.Authorize(ctx, p, adapters.ActionPublish, topic); err != nil {
		a.fail(c, err)
		return
	}
	payload, err := io.ReadAll(c.Request.Body)
	if err != nil {
		a.fail(c, fmt.Errorf("rest: read body: %w", err))
		return
	}
	e := &broker.Envelope{
		ID:          broker.NewID(),
		Topic:       topic,
		Payload:     payload,
		ContentType: c.GetHeader("Content-Type"),
		QoS:         qos,
		Retain:      retain,
		Time:        time.Now(),
		Origin:      a.origin(c, p),
	}
	if err := a.cfg.Bus.Publish(ctx, e); err != nil {
		a.fail(c, err)
		return
	}
	a.m.publish()
	status := http.StatusOK
	if qos == 0 {
		status = http.StatusAccepted
	}
	c.JSON(status, publishResult{ID: e.ID})
}

func (a *Adapter) origin(c *gin.Context, p adapters.Principal) broker.Origin {
	client := p.Name
	if client == "" {
		client = c.Request.RemoteAddr
	}
	return broker.Origin{
		Protocol:  broker.ProtoREST,
		ClientID:  client,
		Remote:    c.Request.RemoteAddr,
		Principal: p.Name,
		Node:      a.cfg.Node,
	}
}

// readTopic handles GET /api/v1/topics/{topic}: the retained payload with
// its Content-Type and X-Hub-* metadata headers, 404 when there is none. A
// filter ("a/+/c") answers a JSON array of the matching retained values
// instead, each as in the subscribe stream, one page at a time (see
// page.go: `limit` values, at most MaxPageBytes of payload, after the
// topic `after`).
func (a *Adapter) readTopic(c *gin.Context) {
	topic := topicFromPath(c.Param("topic"))
	ctx := c.Request.Context()
	if err := a.checkTopic(topic, broker.ValidateFilter); err != nil {
		a.fail(c, err)
		return
	}
	p := principal(c)
	var pg page
	if broker.IsFilter(topic) {
		var err error
		if pg, err = parsePage(c); err != nil {
			a.fail(c, err)
			return
		}
		if err := a.cfg.Auth.Authorize(ctx, p, adapters.ActionSubscribe, topic); err != nil {
			a.fail(c, err)
			return
		}
	} else if err := a.cfg.Auth.CanRead(ctx, p, topic); err != nil {
		a.fail(c, err)
		return
	}
	if pager, ok := a.cfg.Bus.(broker.RetainedPager); ok && broker.IsFilter(topic) {
		a.retainedPaged(c, p, pg, topic, pager)
		return
	}
	rs, err := a.cfg.Bus.Retained(ctx, topic)
	if err != nil {
		a.fail(c, err)
		return
	}
	if broker.IsFilter(topic) {
		c.JSON(http.StatusOK, a.retainedPage(c, p, pg, rs))
		return
	}
	var e *broker.Envelope
	for _, r := range rs {
		if r.Topic == topic {
			e = r
		}
	}
	if e == nil {
		a.fail(c, fmt.Errorf("%w on %q", errNoRetained, trunc(topic)))
		return
	}
	h := c.Writer.Header()
	h.Set(HeaderID, e.ID)
	h.Set(HeaderQoS, strconv.Itoa(int(e.QoS)))
	h.Set(HeaderTime, e.Time.UTC().Format(time.RFC3339Nano))
	h.Set(HeaderRetain, "true")
	h.Set(HeaderOriginProtocol, e.Origin.Protocol)
	if originShown(p, e) {
		if e.Origin.ClientID != "" {
			h.Set(HeaderOriginClient, e.Origin.ClientID)
		}
		if e.Origin.Principal != "" {
			h.Set(HeaderOriginUser, e.Origin.Principal)
		}
	}
	ct := e.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	c.Data(http.StatusOK, ct, e.Payload)
}

// readable is adapters.Auth.CanRead for one envelope of a filter read or
// a stream: a denied one is counted and left out, as is one the store could
// not decide on (logged).
func (a *Adapter) readable(ctx context.Context, p adapters.Principal, e *broker.Envelope) bool {
	err := a.cfg.Auth.CanRead(ctx, p, e.Topic)
	switch {
	case err == nil:
		return true
	case !errors.Is(err, adapters.ErrForbidden):
		a.log.Warn("rest: read check", "topic", e.Topic, "principal", p.Name, "err", err)
	}
	a.m.deny()
	return false
}

// clearTopic handles DELETE /api/v1/topics/{topic}: it clears the retained
// value (an empty retained publish at QoS 1, as in MQTT) and answers 204,
// or 404 when there was none.
func (a *Adapter) clearTopic(c *gin.Context) {
	topic := topicFromPath(c.Param("topic"))
	ctx := c.Request.Context()
	if err := a.checkTopic(topic, broker.ValidateTopic); err != nil {
		a.fail(c, err)
		return
	}
	if strings.HasPrefix(topic, "$") {
		a.fail(c, fmt.Errorf("%w: %q", errReserved, trunc(topic)))
		return
	}
	p := principal(c)
	if err := a.cfg.Auth.Authorize(ctx, p, adapters.ActionPublish, topic); err != nil {
		a.fail(c, err)
		return
	}
	rs, err := a.cfg.Bus.Retained(ctx, topic)
	if err != nil {
		a.fail(c, err)
		return
	}
	if len(rs) == 0 {
		a.fail(c, fmt.Errorf("%w on %q", errNoRetained, trunc(topic)))
		return
	}
	e := &broker.Envelope{ID: broker.NewID(), Topic: topic, QoS: 1, Retain: true, Time: time.Now(), Origin: a.origin(c, p)}
	if err := a.cfg.Bus.Publish(ctx, e); err != nil {
		a.fail(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

// EnvelopeJSON is how an envelope appears in the subscribe streams and in
// filter reads.
type EnvelopeJSON struct {
	ID      string `json:"id"`
	Topic   string `json:"topic"`
	Payload string `json:"payload"`
	// PayloadEncoding is "base64" when the payload is not text.
	PayloadEncoding string     `json:"payload_encoding,omitempty"`
	ContentType     string     `json:"content_type,omitempty"`
	QoS             byte       `json:"qos"`
	Retain          bool       `json:"retain"`
	Origin          OriginJSON `json:"origin"`
	Time            time.Time  `json:"time"`
	ResponseTopic   string     `json:"response_topic,omitempty"`
	// CorrelationData is base64.
	CorrelationData string         `json:"correlation_data,omitempty"`
	Properties      []PropertyJSON `json:"properties,omitempty"`
}

// PropertyJSON is one user property.
type PropertyJSON struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// OriginJSON is EnvelopeJSON's origin.
type OriginJSON struct {
	Protocol  string `json:"protocol"`
	ClientID  string `json:"client_id,omitempty"`
	Principal string `json:"principal,omitempty"`
}

// originShown says whether p may see who published e: an admin, or the
// publisher itself. Who published is nobody else's business: a client id
// is what a session takeover needs.
func originShown(p adapters.Principal, e *broker.Envelope) bool {
	return isAdmin(p) || p.Name != "" && !p.Anonymous && e.Origin.Principal == p.Name
}

// envelopeJSON renders e for a subscriber whose subscription QoS is subQoS
// (the delivery QoS is the lower of the two); the origin's client id and
// principal only with admin (originShown).
func envelopeJSON(e *broker.Envelope, subQoS byte, admin bool) EnvelopeJSON {
	j := EnvelopeJSON{
		ID:            e.ID,
		Topic:         e.Topic,
		ContentType:   e.ContentType,
		QoS:           min(e.QoS, subQoS),
		Retain:        e.Retain,
		Origin:        OriginJSON{Protocol: e.Origin.Protocol},
		Time:          e.Time.UTC(),
		ResponseTopic: e.ResponseTopic,
	}
	if admin {
		j.Origin.ClientID, j.Origin.Principal = e.Origin.ClientID, e.Origin.Principal
	}
	for _, p := range e.Properties {
		j.Properties = append(j.Properties, PropertyJSON{Key: p.Key, Value: p.Value})
	}
	if isText(e.ContentType, e.Payload) {
		j.Payload = string(e.Payload)
	} else {
		j.Payload = base64.StdEncoding.EncodeToString(e.Payload)
		j.PayloadEncoding = "base64"
	}
	if len(e.CorrelationData) > 0 {
		j.CorrelationData = base64.StdEncoding.EncodeToString(e.CorrelationData)
	}
	return j
}

// isText is adapters.IsText, plus form-urlencoded bodies (curl -d sends
// them with that type by default), which are ASCII text.
func isText(contentType string, payload []byte) bool {
	if adapters.IsText(contentType, payload) {
		return true
	}
	mt, ok := adapters.MediaType(contentType)
	return ok && mt == "application/x-www-form-urlencoded" && utf8.Valid(payload)
}

func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

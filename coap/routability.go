package coap

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/hubsmith/hub/broker"
)

// Return routability (RFC 9175 §2.4, RFC 7252 §11.3). A plain UDP
// endpoint is unverified until it has shown that it receives what is sent
// to its address: by acknowledging a confirmable notification, or by
// repeating a request with the Echo value of a 4.01 the hub sent it.
// Until then
//
//   - a response is at most amplificationFactor times the size of the
//     request: a larger error loses its diagnostic payload, a larger
//     success is answered 4.01 Unauthorized with an Echo option instead
//     (libcoap's coap-client repeats the request with it by itself);
//   - no notification goes to it: the first one waits for a CoAP ping
//     (an empty CON, 4 bytes, RFC 7252 §4.3) to be answered with a Reset
//     or an ACK, which every CoAP endpoint does (go-coap's client and
//     libcoap's too); a ping left unanswered after its retransmissions
//     ends every observation of the endpoint, so a spoofed observe costs
//     one small CON and its retransmissions, never a stream of NONs;
//     acknowledging a CON notification verifies an endpoint as well;
//   - the retained value of an observed topic too large for the
//     registration response follows it as the first notification.
//
// DTLS sessions are verified by their handshake, and loopback peers are
// trusted unless Config.VerifyLoopback is set (only a local process can
// send from a loopback address).

// amplificationFactor bounds a response to an unverified endpoint
// relative to its request (RFC 9175 §2.4 suggests three).
const amplificationFactor = 3

// echoLifetime is how long an Echo value the hub issued is accepted.
const echoLifetime = 5 * time.Minute

// echoLen is the length of the hub's Echo values: a 4-byte issue time in
// seconds and an 8-byte MAC over it and the endpoint's address.
const echoLen = 12

// errEcho marks an Echo option that is not one the hub issued to this
// endpoint, or one too old.
var errEcho = errors.New("coap: echo")

// echoKey is the MAC key of Echo values, fresh at each start: a value
// survives the recycling of an endpoint's state, not a restart.
type echoKey [32]byte

func newEchoKey() (echoKey, error) {
	var k echoKey
	if _, err := rand.Read(k[:]); err != nil {
		return k, fmt.Errorf("coap: echo key: %w", err)
	}
	return k, nil
}

func (k *echoKey) mac(issued uint32, remote string) []byte {
	m := hmac.New(sha256.New, k[:])
	var ts [4]byte
	binary.BigEndian.PutUint32(ts[:], issued)
	m.Write(ts[:])
	m.Write([]byte(remote))
	return m.Sum(nil)[:echoLen-4]
}

// issue returns a fresh Echo value for remote.
func (k *echoKey) issue(remote string, now time.Time) []byte {
	issued := uint32(now.Unix())
	v := make([]byte, 4, echoLen)
	binary.BigEndian.PutUint32(v, issued)
	return append(v, k.mac(issued, remote)...)
}

// check reports whether v is an Echo value issued to remote within
// echoLifetime of now.
func (k *echoKey) check(v []byte, remote string, now time.Time) error {
	if len(v) != echoLen {
		return fmt.Errorf("%w: %d bytes, want %d", errEcho, len(v), echoLen)
	}
	issued := binary.BigEndian.Uint32(v)
	age := now.Unix() - int64(issued)
	if age < 0 || age > int64(echoLifetime/time.Second) {
		return fmt.Errorf("%w: issued %d s ago", errEcho, age)
	}
	if !hmac.Equal(v[4:], k.mac(issued, remote)) {
		return fmt.Errorf("%w: not issued to %s", errEcho, remote)
	}
	return nil
}

// trusted reports whether an endpoint counts as verified from the start.
func (a *Adapter) trusted(secure bool, remote string) bool {
	if secure {
		return true
	}
	if a.cfg.VerifyLoopback {
		return false
	}
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkEcho verifies the endpoint when r carries a valid Echo.
func (a *Adapter) checkEcho(cs *connState, r *pool.Message) {
	if cs.verified.Load() {
		return
	}
	v, err := r.GetOptionBytes(message.Echo)
	if err != nil {
		return
	}
	if err := a.echo.check(v, cs.remote, time.Now()); err != nil {
		a.log.Debug("coap: echo refused", "remote", cs.remote, "err", err)
		return
	}
	a.verify(cs, "echo")
}

// verify marks an endpoint as verified.
func (a *Adapter) verify(cs *connState, how string) {
	if cs.verified.CompareAndSwap(false, true) {
		a.metrics.verified.WithLabelValues(how).Inc()
		a.log.Debug("coap: endpoint verified", "remote", cs.remote, "by", how)
	}
}

// optionsSize is the encoded size of opts (an upper bound: each option
// header is taken as 3 bytes).
func optionsSize(opts message.Options) int {
	n := 0
	for _, o := range opts {
		n += 3 + len(o.Value)
	}
	return n
}

// requestSize is the size of r's datagram, as far as it can be told from
// the decoded message (a reassembled block-wise body counts whole).
func requestSize(r *pool.Message) int {
	n := 4 + len(r.Token()) + optionsSize(r.Options())
	if b, err := r.BodySize(); err == nil && b > 0 {
		n += 1 + int(b)
	}
	return n
}

// responseSize estimates the datagram of a response before go-coap's
// block-wise layer cuts its body into the block the request asks for (or
// the adapter's block size).
func (a *Adapter) responseSize(r, resp *pool.Message) int {
	n := 4 + len(r.Token()) + optionsSize(resp.Options())
	b, err := resp.BodySize()
	if err != nil || b <= 0 {
		return n
	}
	block := int64(a.szx.Size())
	if v, err := r.GetOptionUint32(message.Block2); err == nil {
		if szx, _, _, err := blockwise.DecodeBlockOption(v); err == nil && szx <= blockwise.SZX1024 {
			block = min(block, szx.Size())
		}
	}
	if b > block {
		return n + 1 + int(block) + 8 // Block2 and Size2
	}
	return n + 1 + int(b)
}

// unverifiedLimit is how large a response to an unverified endpoint may
// be: 0 when the endpoint is verified (no limit).
func (a *Adapter) unverifiedLimit(cs *connState, r *pool.Message) int {
	if cs.verified.Load() {
		return 0
	}
	return amplificationFactor * requestSize(r)
}

// boundAmplification runs after the handler and before go-coap's
// block-wise layer and response cache: a response to an unverified
// endpoint larger than allowed is cut down (an error loses its
// diagnostic payload) or replaced by a 4.01 with an Echo option.
func (a *Adapter) boundAmplification(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message, cs *connState) {
	limit := a.unverifiedLimit(cs, r)
	resp := w.Message()
	if limit == 0 || !resp.IsModified() || a.responseSize(r, resp) <= limit {
		return
	}
	if resp.Code() >= codes.BadRequest {
		resp.SetBody(nil)
		resp.Remove(message.ContentFormat)
		if a.responseSize(r, resp) <= limit {
			return
		}
	}
	code := resp.Code()
	resp.ResetOptionsTo(nil)
	resp.SetBody(nil)
	resp.SetCode(codes.Unauthorized)
	resp.SetOptionBytes(message.Echo, a.echo.issue(cs.remote, time.Now()))
	a.metrics.echoChallenges.Inc()
	a.log.Debug("coap: echo challenge", "remote", cs.remote, "instead_of", codeLabel(code))
}

// checkRoutability reports whether the endpoint is verified, pinging it
// first if it is not yet (see above). Concurrent notifications of one
// endpoint share one ping; a failed one is not tried again.
func (a *Adapter) checkRoutability(ctx context.Context, cs *connState) bool {
	if cs.verified.Load() {
		return true
	}
	cs.pingMu.Lock()
	defer cs.pingMu.Unlock()
	if cs.verified.Load() {
		return true
	}
	if cs.unreachable {
		return false
	}
	pctx, cancel := context.WithTimeout(ctx, a.maxTransmitWait())
	defer cancel()
	stop := context.AfterFunc(a.ctx, cancel)
	defer stop()
	if err := cs.cc.Ping(pctx); err != nil {
		cs.unreachable = true
		a.log.Info("coap: unverified endpoint did not answer a ping", "remote", cs.remote, "err", err)
		return false
	}
	a.verify(cs, "ping")
	return true
}

// registrationSize estimates the response to an observe registration
// carrying e.
func (a *Adapter) registrationSize(r *pool.Message, e *broker.Envelope, opts message.Options) int {
	n := 4 + len(r.Token()) + optionsSize(opts) + 3
	if len(e.Payload) > 0 {
		n += 1 + min(len(e.Payload), int(a.szx.Size())+8)
	}
	return n
}

// endAll ends every observation of the endpoint (kept durable ones are
// detached, as when the endpoint closes).
func (cs *connState) endAll(reason string) {
	cs.mu.Lock()
	obs := make([]*observation, 0, len(cs.obs))
	for _, o := range cs.obs {
		obs = append(obs, o)
	}
	cs.mu.Unlock()
	for _, o := range obs {
		o.end(reason, true)
	}
}

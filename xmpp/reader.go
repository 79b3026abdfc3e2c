package xmpp

import (
	"bufio"
	"crypto/tls"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// Limits of the stanza reader.
const (
	// DefaultMaxStanza is the largest stanza accepted when Config.MaxStanza is 0.
	DefaultMaxStanza = 256 << 10
	// DefaultMaxDepth is the deepest element nesting inside a stanza.
	DefaultMaxDepth = 32
)

// streamError is an RFC 6120 stream error condition; sending it closes the
// stream.
type streamError struct {
	Condition string // e.g. "policy-violation"
	Text      string
}

func (e *streamError) Error() string {
	if e.Text == "" {
		return "xmpp: stream error " + e.Condition
	}
	return "xmpp: stream error " + e.Condition + ": " + e.Text
}

// bytes returns the <stream:error/> to send (the stream prefix is declared
// by the stream header).
func (e *streamError) bytes() []byte {
	b := "<stream:error>" + newElement(nsStreams, e.Condition).String()
	if e.Text != "" {
		b += newElement(nsStreams, "text").AddText(e.Text).String()
	}
	return []byte(b + "</stream:error>")
}

var errTooBig = errors.New("stanza too large")

// errStreamEnd is the peer's </stream:stream>: a clean end of the stream,
// as opposed to a broken connection (io.EOF and network errors).
var errStreamEnd = errors.New("xmpp: stream closed by peer")

// limitedReader counts the bytes the XML decoder takes since the current
// stanza began and fails once they pass the limit, so that neither a huge
// stanza nor an endless text node is ever buffered whole.
type limitedReader struct {
	r     *bufio.Reader
	n     int64
	limit int64
	err   error // the connection's error, if any
}

func (l *limitedReader) ReadByte() (byte, error) {
	if l.n >= l.limit {
		return 0, errTooBig
	}
	l.n++
	b, err := l.r.ReadByte()
	if err != nil {
		l.err = err
	}
	return b, err
}

func (l *limitedReader) Read(p []byte) (int, error) {
	// The decoder only uses ReadByte; Read exists for io.Reader.
	if len(p) == 0 {
		return 0, nil
	}
	b, err := l.ReadByte()
	if err != nil {
		return 0, err
	}
	p[0] = b
	return 1, nil
}

// rateLimiter is a token bucket on stanzas and bytes per connection.
type rateLimiter struct {
	mu            sync.Mutex
	rate, burst   float64 // stanzas
	brate, bburst float64 // bytes
	tokens, bytes float64
	last          time.Time
}

func newRateLimiter(stanzas, bytesPerSec float64) *rateLimiter {
	if stanzas <= 0 && bytesPerSec <= 0 {
		return nil
	}
	return &rateLimiter{rate: stanzas, burst: stanzas * 2, brate: bytesPerSec, bburst: bytesPerSec * 2,
		tokens: stanzas * 2, bytes: bytesPerSec * 2, last: time.Now()}
}

// take charges one stanza of n bytes and reports whether it was within the
// limits.
func (r *rateLimiter) take(n int64) bool {
	if r == nil {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	dt := now.Sub(r.last).Seconds()
	r.last = now
	ok := true
	if r.rate > 0 {
		r.tokens = min(r.burst, r.tokens+dt*r.rate) - 1
		ok = ok && r.tokens >= 0
	}
	if r.brate > 0 {
		r.bytes = min(r.bburst, r.bytes+dt*r.brate) - float64(n)
		ok = ok && r.bytes >= 0
	}
	return ok
}

// The read buffer of a stream. Over TLS the connection holds the whole
// decrypted record already, so a small buffer costs a copy per refill and
// no system call; a session keeps its buffer for as long as it lasts
// (4 KiB each was about a tenth of an idle c2s session's memory).
const (
	plainReadBuffer = 4096
	tlsReadBuffer   = 512
)

// stanzaReader reads an XMPP stream from a connection: the stream header,
// then one top-level element at a time, enforcing the size, depth and rate
// limits and refusing DTDs, comments and processing instructions.
type stanzaReader struct {
	lr       *limitedReader
	d        *xml.Decoder
	maxDepth int
	rate     *rateLimiter
	started  bool // the stream header was read
}

func newStanzaReader(r io.Reader, maxStanza int64, maxDepth int, rate *rateLimiter) *stanzaReader {
	size := plainReadBuffer
	if _, ok := r.(*tls.Conn); ok {
		size = tlsReadBuffer
	}
	lr := &limitedReader{r: bufio.NewReaderSize(r, size), limit: maxStanza}
	d := xml.NewDecoder(lr)
	d.Strict = true
	return &stanzaReader{lr: lr, d: d, maxDepth: maxDepth, rate: rate}
}

// token reads one token, mapping decoder errors to stream errors.
func (sr *stanzaReader) token() (xml.Token, error) {
	t, err := sr.d.Token()
	if err != nil {
		var se *xml.SyntaxError
		switch {
		case sr.lr.err != nil:
			return nil, sr.lr.err
		case errors.Is(err, errTooBig):
			return nil, &streamError{Condition: "policy-violation", Text: fmt.Sprintf("stanza larger than %d bytes", sr.lr.limit)}
		case errors.As(err, &se):
			return nil, &streamError{Condition: "not-well-formed", Text: se.Msg}
		}
		return nil, err
	}
	switch t := t.(type) {
	case xml.Directive:
		return nil, &streamError{Condition: "restricted-xml", Text: "DTDs and entity declarations are not allowed"}
	case xml.Comment:
		return nil, &streamError{Condition: "restricted-xml", Text: "comments are not allowed"}
	case xml.ProcInst:
		if t.Target != "xml" || sr.started {
			return nil, &streamError{Condition: "restricted-xml", Text: "processing instructions are not allowed"}
		}
	}
	return t, nil
}

// header reads up to the stream header and returns it.
func (sr *stanzaReader) header() (xml.StartElement, error) {
	for {
		t, err := sr.token()
		if err != nil {
			return xml.StartElement{}, err
		}
		switch t := t.(type) {
		case xml.StartElement:
			if t.Name.Space != nsStream || t.Name.Local != "stream" {
				return xml.StartElement{}, &streamError{Condition: "invalid-namespace", Text: "expected a stream header"}
			}
			sr.lr.n = 0
			sr.started = true
			return t.Copy(), nil
		case xml.CharData, xml.ProcInst:
		default:
			return xml.StartElement{}, &streamError{Condition: "not-well-formed", Text: "expected a stream header"}
		}
	}
}

// next returns the next top-level element; errStreamEnd at the end of the
// stream.
func (sr *stanzaReader) next() (*element, error) {
	sr.lr.n = 0
	for {
		t, err := sr.token()
		if err != nil {
			return nil, err
		}
		switch t := t.(type) {
		case xml.StartElement:
			el, err := sr.element(t)
			if err != nil {
				return nil, err
			}
			if !sr.rate.take(sr.lr.n) {
				return nil, &streamError{Condition: "policy-violation", Text: "rate limit exceeded"}
			}
			return el, nil
		case xml.EndElement:
			return nil, errStreamEnd
		case xml.CharData:
			// whitespace keepalives between stanzas
			sr.lr.n = 0
		}
	}
}

func (sr *stanzaReader) element(start xml.StartElement) (*element, error) {
	root := &element{Name: start.Name, Attr: cleanAttrs(start.Attr)}
	stack := []*element{root}
	for len(stack) > 0 {
		t, err := sr.token()
		if err != nil {
			return nil, err
		}
		cur := stack[len(stack)-1]
		switch t := t.(type) {
		case xml.StartElement:
			if len(stack) >= sr.maxDepth {
				return nil, &streamError{Condition: "policy-violation", Text: fmt.Sprintf("elements nested deeper than %d", sr.maxDepth)}
			}
			child := &element{Name: t.Name, Attr: cleanAttrs(t.Attr)}
			cur.Children = append(cur.Children, child)
			stack = append(stack, child)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			cur.Children = append(cur.Children, string(t))
		}
	}
	return root, nil
}

// cleanAttrs drops namespace declarations, which the serializer writes again
// as needed.
func cleanAttrs(attrs []xml.Attr) []xml.Attr {
	out := attrs[:0:0]
	for _, a := range attrs {
		if a.Name.Space == "xmlns" || (a.Name.Space == "" && a.Name.Local == "xmlns") {
			continue
		}
		out = append(out, a)
	}
	return out
}

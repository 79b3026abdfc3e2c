package coap

import (
	"bytes"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// TestResponseTypeFollowsRequest checks RFC 7252 §5.2.3 on a raw socket:
// a NON request is answered NON, a CON one with a piggybacked ACK, errors
// and block-wise responses included.
func TestResponseTypeFollowsRequest(t *testing.T) {
	e := start(t, nil)
	publish(t, e.bus, "non/small", "21.5", "text/plain", 0, true)
	publish(t, e.bus, "non/big", string(bytes.Repeat([]byte("x"), 3000)), "text/plain", 0, true)
	r := e.raw(t)
	cases := []struct {
		name string
		typ  message.Type
		code codes.Code
		path string
		want message.Type
		resp codes.Code
	}{
		{"NON GET", message.NonConfirmable, codes.GET, "/ps/non/small", message.NonConfirmable, codes.Content},
		{"CON GET", message.Confirmable, codes.GET, "/ps/non/small", message.Acknowledgement, codes.Content},
		{"NON GET no value", message.NonConfirmable, codes.GET, "/ps/non/none", message.NonConfirmable, codes.NotFound},
		{"NON POST", message.NonConfirmable, codes.POST, "/ps/non/post", message.NonConfirmable, codes.Changed},
		{"NON GET block-wise", message.NonConfirmable, codes.GET, "/ps/non/big", message.NonConfirmable, codes.Content},
		{"NON bad path", message.NonConfirmable, codes.GET, "/nope", message.NonConfirmable, codes.BadRequest},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mid := int32(100 + i)
			tok := []byte{9, byte(i)}
			r.t = t
			r.send(rawMsg{typ: c.typ, code: c.code, mid: mid, token: tok, path: c.path, observe: -1, cf: -1, payload: nil})
			m := r.mustRecv()
			if !bytes.Equal(m.Token(), tok) {
				t.Fatalf("token %x, want %x", m.Token(), tok)
			}
			if m.Type() != c.want || m.Code() != c.resp {
				t.Errorf("response %v %v, want %v %v", m.Type(), m.Code(), c.want, c.resp)
			}
			if c.want == message.Acknowledgement && m.MessageID() != mid {
				t.Errorf("ACK message id %d, want %d", m.MessageID(), mid)
			}
		})
	}
}

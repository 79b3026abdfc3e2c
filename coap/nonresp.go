package coap

import (
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	"github.com/plgd-dev/go-coap/v3/options/config"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"
)

// processReceived is go-coap's ProcessReceivedMessage with one change: the
// response to a NON request goes out NON (RFC 7252 §5.2.3). go-coap v3.8.0
// (udp/client/conn.go, processResponse, "send piggybacked response") makes
// it CON with a fresh message id after the handler, its block-wise layer
// and its response cache have run; the type is set back here, after all of
// them and before the write, so block-wise responses and the cache (whose
// copy is answered as NON to a repeated NON request anyway) keep working.
func processReceived(req *pool.Message, cc *udpClient.Conn, handler config.HandlerFunc[*udpClient.Conn]) {
	non := req.Type() == message.NonConfirmable
	cc.ProcessReceivedMessageWithHandler(req, func(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message) {
		handler(w, r)
		if non && w.Message().Type() == message.Confirmable {
			w.Message().SetType(message.NonConfirmable)
		}
	})
}

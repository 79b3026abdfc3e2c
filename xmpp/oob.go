package xmpp

import (
	"encoding/json"
	"strings"

	"github.com/hubsmith/hub/broker"
)

// XEP-0066 Out of Band Data: how files reach chat users. The message's
// body is the URL itself, so that clients (Conversations, Gajim, Dino)
// show a preview or a download button.
const nsOOB = "jabber:x:oob"

// oobMessage is a chat message from from to to linking url.
func oobMessage(from, to, url, desc string) *element {
	x := newElement(nsOOB, "x").Add(newElement(nsOOB, "url").AddText(url))
	if desc != "" {
		x.Add(newElement(nsOOB, "desc").AddText(desc))
	}
	return newElement(nsClient, "message", "type", "chat", "from", from, "to", to, "id", randomID()).Add(
		newElement(nsClient, "body").AddText(url), x)
}

// fileDescriptor returns the file descriptor e carries, if e is one: an
// envelope on files/... whose payload is a descriptor with a URL.
func fileDescriptor(e *broker.Envelope) (Descriptor, bool) {
	var d Descriptor
	if !strings.HasPrefix(e.Topic, "files/") || len(e.Payload) == 0 || e.Payload[0] != '{' {
		return d, false
	}
	if err := json.Unmarshal(e.Payload, &d); err != nil || d.URL == "" || d.Name == "" {
		return d, false
	}
	if !strings.HasPrefix(d.URL, "http://") && !strings.HasPrefix(d.URL, "https://") {
		return d, false
	}
	return d, true
}

// fileMessage is the out-of-band link message for a file descriptor
// delivered from a topic JID, or nil if e is no descriptor.
func fileMessage(from, to string, e *broker.Envelope) *element {
	d, ok := fileDescriptor(e)
	if !ok {
		return nil
	}
	m := oobMessage(from, to, d.URL, d.Name)
	m.SetAttr("id", e.ID)
	return m
}

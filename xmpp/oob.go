package xmpp

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/files"
)

// XEP-0066 Out of Band Data: how files reach chat users. The message's
// body is the URL itself, so that clients (Conversations, Gajim, Dino)
// show a preview or a download button. The URL is the file's shared link
// (files.Store.Share: unauthenticated, unguessable), since a chat client
// has no credentials for the REST API.
const nsOOB = "jabber:x:oob"

// shareTimeout bounds making a file's shared link.
const shareTimeout = 5 * time.Second

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
// envelope on files/{name} whose payload is that file's descriptor.
func fileDescriptor(e *broker.Envelope) (files.Descriptor, bool) {
	var d files.Descriptor
	name, ok := files.NameFromTopic(e.Topic)
	if !ok || len(e.Payload) == 0 || e.Payload[0] != '{' {
		return d, false
	}
	if err := json.Unmarshal(e.Payload, &d); err != nil || d.Name != name {
		return d, false
	}
	return d, true
}

// fileLink is the URL a chat user gets for a stored file: its shared
// link, or the descriptor's URL when none can be made.
func (a *Adapter) fileLink(ctx context.Context, d files.Descriptor) string {
	if a.cfg.Files != nil {
		ctx, cancel := context.WithTimeout(ctx, shareTimeout)
		defer cancel()
		u, err := a.cfg.Files.Share(ctx, d.Name)
		if err == nil {
			return u
		}
		a.log.Info("xmpp: shared link of a file", "name", d.Name, "err", err)
	}
	return d.URL
}

// fileMessage is the out-of-band link message for a file descriptor
// delivered from a topic JID, or nil if e is no descriptor.
func (a *Adapter) fileMessage(from, to string, e *broker.Envelope) *element {
	d, ok := fileDescriptor(e)
	if !ok {
		return nil
	}
	url := a.fileLink(context.WithoutCancel(a.ctx), d)
	if !strings.HasPrefix(url, "http://") && !strings.HasPrefix(url, "https://") {
		return nil
	}
	m := oobMessage(from, to, url, d.Name)
	m.SetAttr("id", e.ID)
	return m
}

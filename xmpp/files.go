package xmpp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/files"
)

// The file store as the adapter sees it. Where files sent over XMPP go:
//   - XEP-0363 upload slots: "uploads/{user}/{random}/{filename}";
//   - an XEP-0096 offer to a topic JID (topic a/b): "a/b/{filename}";
//   - an offer to a device JID ({id}@devices.{domain}):
//     "devices/{id}/{filename}", then the device gets the command "file"
//     with the descriptor as its parameters;
//   - an offer to a local user's bare JID (or a resource that is not
//     there): "users/{user}/{random}/{filename}", then the user gets an
//     XEP-0066 link from the sender.
//
// Each name is also the topic suffix its descriptor is retained on
// (files/{name}), whose ACL decides who may write (publish) and read
// (subscribe) the file.

// FileStore is the blob store files sent over XMPP are kept in.
// *files.Store implements it.
type FileStore interface {
	// Begin starts storing a file under name, block by block (IBB,
	// SOCKS5): it checks the name, the declared size and the quota.
	Begin(ctx context.Context, name string, o files.PutOptions) (*files.Upload, error)
	// NewSlot makes an XEP-0363 upload slot.
	NewSlot(ctx context.Context, o files.SlotOptions) (files.Slot, error)
	// Share returns the unauthenticated link to a stored file handed to
	// chat users (XEP-0066).
	Share(ctx context.Context, name string) (string, error)
	// MaxFileSize is the size limit of one file (< 0: none).
	MaxFileSize() int64
}

var _ FileStore = (*files.Store)(nil)

// fileInfo is a stored file's descriptor.
type fileInfo = files.Descriptor

// filesTopic is the topic a file's descriptor is retained on, whose ACL
// rules the file.
func filesTopic(name string) string { return "files/" + name }

// storeCondition maps an error of a transfer or of the store to a stanza
// error type and condition.
func storeCondition(err error) (etype, cond string) {
	switch {
	case errors.Is(err, adapters.ErrForbidden):
		return "auth", "forbidden"
	case errors.Is(err, files.ErrTooLarge), errors.Is(err, errLong):
		return "modify", "not-acceptable"
	case errors.Is(err, files.ErrQuota), errors.Is(err, errTooMany):
		return "wait", "resource-constraint"
	case errors.Is(err, files.ErrInvalidName), errors.Is(err, files.ErrInvalidContentType):
		return "modify", "bad-request"
	case errors.Is(err, files.ErrChecksum), errors.Is(err, files.ErrIncomplete), errors.Is(err, errShort), errors.Is(err, errIBB):
		return "modify", "not-acceptable"
	case errors.Is(err, errInterrupted), errors.Is(err, errIdle):
		return "cancel", "not-acceptable"
	}
	return "wait", "internal-server-error"
}

// mayWrite checks p's right to store a file under name.
func (a *Adapter) mayWrite(ctx context.Context, p peer, name string) error {
	if err := a.cfg.Auth.Authorize(ctx, p.principal(), adapters.ActionUpload, filesTopic(name)); err != nil {
		if errors.Is(err, adapters.ErrForbidden) {
			return &siError{etype: "auth", cond: "forbidden", msg: fmt.Sprintf("%s may not write %s", p.principal().Name, filesTopic(name))}
		}
		return fmt.Errorf("xmpp: file access check: %w", err)
	}
	return nil
}

// maxFileSize is the store's size limit (0: none).
func (a *Adapter) maxFileSize() int64 {
	if a.cfg.Files == nil {
		return 0
	}
	return max(a.cfg.Files.MaxFileSize(), 0)
}

// topicFileTarget stores a file offered to the topic JID of topic.
func (a *Adapter) topicFileTarget(topic string) fileTarget {
	return func(ctx context.Context, p peer, o siOffer) (string, func(context.Context, fileInfo), error) {
		name := topic + "/" + o.name
		return name, nil, a.mayWrite(ctx, p, name)
	}
}

// deviceFileTarget stores a file offered to a device JID and sends the
// device the command "file" with the descriptor; the sender needs the
// command right on the device as well.
func (a *Adapter) deviceFileTarget(device string) fileTarget {
	return func(ctx context.Context, p peer, o siOffer) (string, func(context.Context, fileInfo), error) {
		if err := a.cfg.Auth.Authorize(ctx, p.principal(), adapters.ActionCommand, device); err != nil {
			return "", nil, &siError{etype: "auth", cond: "forbidden", msg: fmt.Sprintf("%s may not send commands to %s", p.principal().Name, device)}
		}
		name := "devices/" + device + "/" + o.name
		stored := func(ctx context.Context, d fileInfo) {
			// The descriptor, as REST's device file command sends it,
			// plus the shared link: a device's default rules do not
			// cover files/devices/{id}/..., the link needs none.
			params, _ := json.Marshal(struct {
				fileInfo
				SharedURL string `json:"shared_url,omitempty"`
			}{d, a.fileLink(ctx, d)})
			ctx, cancel := context.WithTimeout(ctx, deviceCommandTimeout)
			defer cancel()
			if _, err := a.cfg.DeviceCommand(ctx, adapters.Command{ID: randomID(), DeviceID: device, Name: "file", Params: params}); err != nil {
				a.log.Info("xmpp: file command to device", "device", device, "name", d.Name, "err", err)
			}
		}
		return name, stored, a.mayWrite(ctx, p, name)
	}
}

// userFileTarget stores a file offered to a local user's bare JID (or to
// a resource that is not connected) and sends the user a link to it.
func (a *Adapter) userFileTarget(s *session, bare string) fileTarget {
	return func(ctx context.Context, p peer, o siOffer) (string, func(context.Context, fileInfo), error) {
		user, _, _ := strings.Cut(bare, "@")
		if _, err := a.cfg.Store.GetUser(ctx, user); err != nil {
			return "", nil, &siError{etype: "cancel", cond: "service-unavailable", msg: "no such user"}
		}
		name := "users/" + user + "/" + randomID()[:16] + "/" + o.name
		stored := func(ctx context.Context, d fileInfo) {
			m := oobMessage(s.bare, bare, a.fileLink(ctx, d), o.name)
			a.routeLocal(s, m, bare, "")
		}
		return name, stored, a.mayWrite(ctx, p, name)
	}
}

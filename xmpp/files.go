package xmpp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/hubsmith/hub/adapters"
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
type FileStore interface {
	// Put stores the file read from r under name; nothing is visible
	// unless it completes.
	Put(ctx context.Context, name string, r io.Reader, o PutOptions) (Descriptor, error)
	// NewSlot makes an XEP-0363 upload slot.
	NewSlot(ctx context.Context, o SlotOptions) (Slot, error)
}

// PutOptions describe a file given to FileStore.Put.
type PutOptions struct {
	ContentType string
	SHA256      string
	Size        int64
	Uploader    string
	TTL         time.Duration
}

// Descriptor is what the store publishes for a file on files/{name}.
type Descriptor struct {
	Name        string    `json:"name"`
	Size        int64     `json:"size"`
	ContentType string    `json:"content_type"`
	SHA256      string    `json:"sha256"`
	URL         string    `json:"url"`
	CoAPPath    string    `json:"coap_path"`
	Uploader    string    `json:"uploader"`
	Time        time.Time `json:"time"`
	Expires     time.Time `json:"expires,omitzero"`
}

// SlotOptions ask FileStore.NewSlot for an upload slot.
type SlotOptions struct {
	Name        string
	Size        int64
	ContentType string
	Uploader    string
}

// Slot is an XEP-0363 upload slot.
type Slot struct {
	PutURL, GetURL string
	Header         map[string]string
	Expires        time.Time
}

// The store's refusals, mapped to stanza errors by storeCondition.
var (
	ErrFileTooLarge   = errors.New("files: file too large")
	ErrFileQuota      = errors.New("files: quota exceeded")
	ErrFileName       = errors.New("files: invalid name")
	ErrFileChecksum   = errors.New("files: checksum mismatch")
	ErrFileNotAllowed = adapters.ErrForbidden
)

// fileInfo is a stored file's descriptor.
type fileInfo = Descriptor

// filesTopic is the topic a file's descriptor is retained on, whose ACL
// rules the file.
func filesTopic(name string) string { return "files/" + name }

// storeCondition maps an error of a transfer or of the store to a stanza
// error type and condition.
func storeCondition(err error) (etype, cond string) {
	switch {
	case errors.Is(err, adapters.ErrForbidden):
		return "auth", "forbidden"
	case errors.Is(err, ErrFileTooLarge), errors.Is(err, errLong):
		return "modify", "not-acceptable"
	case errors.Is(err, ErrFileQuota), errors.Is(err, errTooMany):
		return "wait", "resource-constraint"
	case errors.Is(err, ErrFileName):
		return "modify", "bad-request"
	case errors.Is(err, ErrFileChecksum), errors.Is(err, errShort), errors.Is(err, errIBB):
		return "modify", "not-acceptable"
	case errors.Is(err, errInterrupted), errors.Is(err, errIdle):
		return "cancel", "not-acceptable"
	}
	return "wait", "internal-server-error"
}

// mayWrite checks p's right to store a file under name.
func (a *Adapter) mayWrite(ctx context.Context, p peer, name string) error {
	if err := a.cfg.Auth.Authorize(ctx, p.principal(), adapters.ActionPublish, filesTopic(name)); err != nil {
		if errors.Is(err, adapters.ErrForbidden) {
			return &siError{etype: "auth", cond: "forbidden", msg: fmt.Sprintf("%s may not write %s", p.principal().Name, filesTopic(name))}
		}
		return fmt.Errorf("xmpp: file access check: %w", err)
	}
	return nil
}

// putFile stores an offered file.
func (a *Adapter) putFile(ctx context.Context, name string, r io.Reader, o siOffer, uploader string) (fileInfo, error) {
	d, err := a.cfg.Files.Put(ctx, name, r, PutOptions{ContentType: o.mimeType, Size: o.size, Uploader: uploader})
	if err != nil {
		return d, fmt.Errorf("xmpp: store %s: %w", name, err)
	}
	return d, nil
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
			params, _ := json.Marshal(d)
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
			m := oobMessage(s.bare, bare, d.URL, o.name)
			a.routeLocal(s, m, bare, "")
		}
		return name, stored, a.mayWrite(ctx, p, name)
	}
}

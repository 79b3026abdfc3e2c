package xmpp

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/devices"
)

const nsData = "jabber:x:data"

// commands correlates XEP-0050 ad-hoc commands sent to devices with their
// replies.
type commands struct {
	a       *Adapter
	mu      sync.Mutex
	pending map[string]pendingCommand // iq id → waiter
	forms   map[string]formSession    // command session id → form waiting (adhoc.go)
}

// pendingCommand waits for the answer of one device.
type pendingCommand struct {
	from  string // the device's full JID: answers from anyone else are ignored
	reply chan *element
}

func newCommands(a *Adapter) *commands {
	return &commands{a: a, pending: map[string]pendingCommand{}, forms: map[string]formSession{}}
}

// handleReply routes an iq result or error to the command waiting for it;
// it reports whether one was.
func (c *commands) handleReply(iq *element) bool {
	c.mu.Lock()
	p, ok := c.pending[iq.AttrValue("id")]
	if ok && p.from == iq.AttrValue("from") {
		delete(c.pending, iq.AttrValue("id"))
	} else {
		ok = false
	}
	c.mu.Unlock()
	if ok {
		p.reply <- iq
	}
	return ok
}

// Protocol returns "xmpp": the adapter delivers commands to XMPP devices.
func (a *Adapter) Protocol() string { return "xmpp" }

// SendCommand sends cmd as an XEP-0050 ad-hoc command (node = command
// name, the JSON params in a data form field "params", and each simple
// value of a params object in a field of its own, as a submitted command
// form has them) to the device's JID
// {device}@{domain} and returns the reply: the "result" field of the
// completed command's form when it holds JSON, or its text as a JSON
// string. A device with no session is ErrDeviceOffline at once; in a
// cluster, a device with no session here gets the command from the hub
// it is on (see Cluster).
func (a *Adapter) SendCommand(ctx context.Context, cmd adapters.Command) (json.RawMessage, error) {
	bare := cmd.DeviceID + "@" + a.cfg.Domain
	if a.cl != nil && len(a.sessionsOf(bare)) == 0 {
		return a.cl.command(ctx, cmd, bare)
	}
	return a.sendCommandLocal(ctx, cmd)
}

// sendCommandLocal sends cmd to a device with a session on this hub.
func (a *Adapter) sendCommandLocal(ctx context.Context, cmd adapters.Command) (json.RawMessage, error) {
	sessions := a.sessionsOf(cmd.DeviceID + "@" + a.cfg.Domain)
	if len(sessions) == 0 {
		return nil, adapters.ErrDeviceOffline
	}
	s := sessions[0]
	for _, c := range sessions {
		if c.isAvailable() {
			s = c
			break
		}
	}
	id := "cmd-" + cmd.ID
	if cmd.ID == "" {
		id = "cmd-" + randomID()
	}
	params := string(cmd.Params)
	if params == "" {
		params = "null"
	}
	form := newElement(nsData, "x", "type", "submit").Add(
		newElement(nsData, "field", "var", "params").Add(newElement(nsData, "value").AddText(params)))
	paramFields(form, cmd.Params)
	iq := newElement(nsClient, "iq", "type", "set", "id", id, "from", a.cfg.Domain, "to", s.jid).Add(
		newElement(nsCommands, "command", "node", cmd.Name, "action", "execute").Add(form))
	ch := make(chan *element, 1)
	a.cmds.mu.Lock()
	a.cmds.pending[id] = pendingCommand{from: s.jid, reply: ch}
	a.cmds.mu.Unlock()
	defer func() {
		a.cmds.mu.Lock()
		delete(a.cmds.pending, id)
		a.cmds.mu.Unlock()
	}()
	if _, err := s.send(iq); err != nil {
		return nil, adapters.ErrDeviceOffline
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.closed:
		return nil, adapters.ErrDeviceOffline
	case reply := <-ch:
		return commandResult(reply)
	}
}

// commandResult turns a device's answer into the command's JSON reply.
func commandResult(iq *element) (json.RawMessage, error) {
	if iq.AttrValue("type") == "error" {
		return nil, deviceRefusal(iq)
	}
	cmd := iq.Child(nsCommands, "command")
	if cmd == nil {
		return json.RawMessage("null"), nil
	}
	for _, n := range cmd.Elements() {
		if n.Name.Local == "note" && n.AttrValue("type") == "error" {
			return nil, &devices.RefusedError{Code: http.StatusUnprocessableEntity, Reason: strings.TrimSpace(n.Text())}
		}
	}
	text := ""
	if x := cmd.Child(nsData, "x"); x != nil {
		for _, f := range x.Elements() {
			if f.AttrValue("var") == "result" {
				text = f.childText("", "value")
			}
		}
	}
	if text == "" {
		if n := cmd.Child(nsCommands, "note"); n != nil {
			text = n.Text()
		}
	}
	text = strings.TrimSpace(text)
	if text == "" {
		return json.RawMessage("null"), nil
	}
	if json.Valid([]byte(text)) {
		return json.RawMessage(text), nil
	}
	b, _ := json.Marshal(text)
	return b, nil
}

// paramFields adds a field per string, number or boolean member of a JSON
// params object to a submitted form (besides "params"), so that an XMPP
// device reads its parameters as the form a chat user filled in.
func paramFields(form *element, params json.RawMessage) {
	var obj map[string]any
	if json.Unmarshal(params, &obj) != nil {
		return
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		switch obj[k].(type) {
		case string, float64, bool:
			if k != "params" && k != "FORM_TYPE" {
				form.Add(newElement(nsData, "field", "var", k).Add(newElement(nsData, "value").AddText(devices.FormatValue(obj[k]))))
			}
		}
	}
}

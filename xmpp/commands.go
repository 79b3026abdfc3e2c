package xmpp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hubsmith/hub/adapters"
)

const nsData = "jabber:x:data"

// commands correlates XEP-0050 ad-hoc commands sent to devices with their
// replies.
type commands struct {
	a       *Adapter
	mu      sync.Mutex
	pending map[string]pendingCommand // iq id → waiter
}

// pendingCommand waits for the answer of one device.
type pendingCommand struct {
	from  string // the device's full JID: answers from anyone else are ignored
	reply chan *element
}

func newCommands(a *Adapter) *commands {
	return &commands{a: a, pending: map[string]pendingCommand{}}
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
// name, the JSON params in a data form field "params") to the device's JID
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
	iq := newElement(nsClient, "iq", "type", "set", "id", id, "from", a.cfg.Domain, "to", s.jid).Add(
		newElement(nsCommands, "command", "node", cmd.Name, "action", "execute").Add(
			newElement(nsData, "x", "type", "submit").Add(
				newElement(nsData, "field", "var", "params").Add(newElement(nsData, "value").AddText(params)))))
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
		cond := "error"
		if e := iq.Child("", "error"); e != nil {
			if els := e.Elements(); len(els) > 0 {
				cond = els[0].Name.Local
			}
		}
		return nil, fmt.Errorf("xmpp: device answered the command with %s", cond)
	}
	cmd := iq.Child(nsCommands, "command")
	if cmd == nil {
		return json.RawMessage("null"), nil
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

// deviceCommandTimeout bounds a command a chat user runs on a device JID.
const deviceCommandTimeout = 30 * time.Second

// handleDeviceJID lets a chat user run a device's commands (XEP-0050) on
// {device}@devices.{domain}: node = command name, the JSON parameters in a
// data form field "params"; the reply comes back in the field "result". The
// user needs a command rule for the device (adapters.ActionCommand), as for
// the REST command; admins always may.
func (a *Adapter) handleDeviceJID(p peer, iq *element, device string) {
	typ := iq.AttrValue("type")
	if iq.Name.Local != "iq" || typ == "result" || typ == "error" {
		return
	}
	if device != "" && a.handleTransfer(p, iq, a.deviceFileTarget(device)) {
		return
	}
	cmd := iq.Child(nsCommands, "command")
	if device == "" || cmd == nil || typ != "set" {
		if device != "" && iq.Child(nsDiscoInfo, "query") != nil {
			_ = p.send(resultOf(iq).Add(newElement(nsDiscoInfo, "query").Add(
				newElement(nsDiscoInfo, "identity", "category", "client", "type", "bot", "name", device),
				newElement(nsDiscoInfo, "feature", "var", nsCommands))))
			return
		}
		a.handleServiceIQ(p, iq, "devices")
		return
	}
	name := cmd.AttrValue("node")
	if action := cmd.AttrValue("action"); name == "" || (action != "" && action != "execute" && action != "complete") {
		_ = p.send(errorReply(iq, "modify", "bad-request"))
		return
	}
	params := json.RawMessage("null")
	if x := cmd.Child(nsData, "x"); x != nil {
		for _, f := range x.Elements() {
			if f.AttrValue("var") == "params" {
				v := strings.TrimSpace(f.childText("", "value"))
				if v != "" {
					params = json.RawMessage(v)
				}
			}
		}
	}
	if !json.Valid(params) {
		_ = p.send(errorReply(iq, "modify", "bad-request"))
		return
	}
	if err := a.cfg.Auth.Authorize(a.ctx, p.principal(), adapters.ActionCommand, device); err != nil {
		_ = p.send(errorReply(iq, "auth", "forbidden"))
		return
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		ctx, cancel := context.WithTimeout(a.ctx, deviceCommandTimeout)
		defer cancel()
		reply, err := a.cfg.DeviceCommand(ctx, adapters.Command{ID: randomID(), DeviceID: device, Name: name, Params: params})
		if err != nil {
			cond, etype := "undefined-condition", "cancel"
			switch {
			case errors.Is(err, adapters.ErrDeviceOffline):
				cond, etype = "recipient-unavailable", "wait"
			case errors.Is(err, context.DeadlineExceeded):
				cond, etype = "remote-server-timeout", "wait"
			}
			a.log.Info("xmpp: device command from chat", "device", device, "command", name, "err", err)
			_ = p.send(errorReply(iq, etype, cond))
			return
		}
		_ = p.send(resultOf(iq).Add(newElement(nsCommands, "command", "node", name, "sessionid", randomID()[:8], "status", "completed").Add(
			newElement(nsData, "x", "type", "result").Add(
				newElement(nsData, "field", "var", "result").Add(newElement(nsData, "value").AddText(string(reply)))))))
	}()
}

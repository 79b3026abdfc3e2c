package xmpp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/devices"
)

// XEP-0050 ad-hoc commands on device JIDs, as a chat user runs them: the
// device's declared commands are its command list (disco#items, node
// http://jabber.org/protocol/commands); executing one with declared
// parameters answers with an XEP-0004 form, a field per parameter, and
// submitting the form runs it with the typed values; the device's reply is
// the completed result. A command without declared parameters runs at
// once; a submitted form with a field "params" holding JSON still works
// for scripts written before declarations.

const (
	nsXDataValidate = "http://jabber.org/protocol/xdata-validate"
	// CommandFormType is the FORM_TYPE (XEP-0068) of the hub's device
	// command forms.
	CommandFormType = "urn:hub:command:0"

	// deviceCommandTimeout bounds a command a chat user runs on a device JID.
	deviceCommandTimeout = 30 * time.Second
	// formSessionTTL is how long a form waits to be submitted.
	formSessionTTL = 10 * time.Minute
	// maxFormSessions bounds the forms waiting, over all users.
	maxFormSessions = 1024
)

// formSession is a command form sent to a user, waiting for submission.
type formSession struct {
	owner, device, command string
	expires                time.Time
}

// openForm records a form session and returns its id, evicting expired
// ones (and the oldest when full).
func (c *commands) openForm(owner, device, command string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	var oldest string
	for id, f := range c.forms {
		if now.After(f.expires) {
			delete(c.forms, id)
			continue
		}
		if oldest == "" || f.expires.Before(c.forms[oldest].expires) {
			oldest = id
		}
	}
	if len(c.forms) >= maxFormSessions {
		delete(c.forms, oldest)
	}
	id := randomID()[:16]
	c.forms[id] = formSession{owner: owner, device: device, command: command, expires: now.Add(formSessionTTL)}
	return id
}

// takeForm ends form session id when owner opened it for device and
// command; it reports whether one was.
func (c *commands) takeForm(id, owner, device, command string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, ok := c.forms[id]
	if !ok || f.owner != owner || f.device != device || f.command != command || time.Now().After(f.expires) {
		return false
	}
	delete(c.forms, id)
	return true
}

// handleDeviceJID serves {device}@devices.{domain} to chat users: disco,
// the command list, ad-hoc commands with their forms, and file transfers.
// The user needs a command rule for the device (adapters.ActionCommand),
// as for the REST command; admins always may.
func (a *Adapter) handleDeviceJID(p peer, iq *element, device string) {
	typ := iq.AttrValue("type")
	if iq.Name.Local != "iq" || typ == "result" || typ == "error" {
		return
	}
	if device != "" && a.handleTransfer(p, iq, a.deviceFileTarget(device)) {
		return
	}
	if device != "" && typ == "get" {
		if q := iq.Child(nsDiscoItem, "query"); q != nil && q.AttrValue("node") == nsCommands {
			a.commandItems(p, iq, device)
			return
		}
		if q := iq.Child(nsDiscoInfo, "query"); q != nil {
			a.deviceDiscoInfo(p, iq, device, q.AttrValue("node"))
			return
		}
	}
	cmd := iq.Child(nsCommands, "command")
	if device == "" || cmd == nil || typ != "set" {
		a.handleServiceIQ(p, iq, "devices")
		return
	}
	a.runCommand(p, iq, device, cmd)
}

// declared returns device's declared commands (none without a
// DeviceCommands function).
func (a *Adapter) declared(device string) ([]devices.Command, error) {
	if a.cfg.DeviceCommands == nil {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(a.ctx, 5*time.Second)
	defer cancel()
	return a.cfg.DeviceCommands(ctx, device)
}

// deviceDiscoInfo answers disco#info on a device JID: a bot with ad-hoc
// commands, or for a command's node the command itself (XEP-0050 3.2).
func (a *Adapter) deviceDiscoInfo(p peer, iq *element, device, node string) {
	q := newElement(nsDiscoInfo, "query")
	if node == "" || node == nsCommands {
		if node != "" {
			q.SetAttr("node", node)
		}
		_ = p.send(resultOf(iq).Add(q.Add(
			newElement(nsDiscoInfo, "identity", "category", "client", "type", "bot", "name", device),
			newElement(nsDiscoInfo, "feature", "var", nsCommands))))
		return
	}
	cs, err := a.declared(device)
	if err != nil {
		a.sendCommandError(p, iq, err)
		return
	}
	c, ok := devices.FindCommand(cs, node)
	if !ok {
		_ = p.send(errorReply(iq, "cancel", "item-not-found"))
		return
	}
	_ = p.send(resultOf(iq).Add(q.Add(
		newElement(nsDiscoInfo, "identity", "category", "automation", "type", "command-node", "name", commandLabel(c)),
		newElement(nsDiscoInfo, "feature", "var", nsCommands),
		newElement(nsDiscoInfo, "feature", "var", nsData))))
	q.SetAttr("node", node)
}

func commandLabel(c devices.Command) string {
	if c.Description != "" {
		return c.Description
	}
	return c.Name
}

// commandItems answers the device's command list: its declared commands,
// or none for a user who may not command it.
func (a *Adapter) commandItems(p peer, iq *element, device string) {
	q := newElement(nsDiscoItem, "query", "node", nsCommands)
	if err := a.cfg.Auth.Authorize(a.ctx, p.principal(), adapters.ActionCommand, device); err != nil {
		_ = p.send(resultOf(iq).Add(q))
		return
	}
	cs, err := a.declared(device)
	if err != nil {
		a.sendCommandError(p, iq, err)
		return
	}
	jid := iq.AttrValue("to")
	for _, c := range cs {
		q.Add(newElement(nsDiscoItem, "item", "jid", jid, "node", c.Name, "name", commandLabel(c)))
	}
	_ = p.send(resultOf(iq).Add(q))
}

// runCommand executes, continues or cancels an ad-hoc command.
func (a *Adapter) runCommand(p peer, iq *element, device string, cmd *element) {
	name, action, sid := cmd.AttrValue("node"), cmd.AttrValue("action"), cmd.AttrValue("sessionid")
	switch action {
	case "", "execute", "complete", "next", "cancel":
	default:
		_ = p.send(errorReply(iq, "modify", "bad-request"))
		return
	}
	if name == "" {
		_ = p.send(errorReplyText(iq, "modify", "bad-request", "the command has no node"))
		return
	}
	if err := a.cfg.Auth.Authorize(a.ctx, p.principal(), adapters.ActionCommand, device); err != nil {
		_ = p.send(errorReply(iq, "auth", "forbidden"))
		return
	}
	owner := p.fullJID()
	x := cmd.Child(nsData, "x")
	if action == "cancel" || (x != nil && x.AttrValue("type") == "cancel") {
		if sid != "" {
			a.cmds.takeForm(sid, owner, device, name)
		}
		_ = p.send(resultOf(iq).Add(newElement(nsCommands, "command", "node", name, "sessionid", sid, "status", "canceled")))
		return
	}
	if sid != "" && !a.cmds.takeForm(sid, owner, device, name) {
		_ = p.send(errorReplyText(iq, "modify", "bad-request", "unknown or expired command session "+sid))
		return
	}
	cs, err := a.declared(device)
	if err != nil {
		a.sendCommandError(p, iq, err)
		return
	}
	decl, isDeclared := devices.FindCommand(cs, name)
	withForm := isDeclared && decl.Params != nil && len(decl.Params.Properties) > 0
	params := json.RawMessage("null")
	switch {
	case x != nil && legacyParams(x, decl) != "":
		params = json.RawMessage(legacyParams(x, decl))
		if !json.Valid(params) {
			_ = p.send(errorReplyText(iq, "modify", "bad-request", `field "params": not JSON`))
			return
		}
	case x != nil || (withForm && sid != ""):
		if params, err = formParams(decl, x); err != nil {
			a.sendCommandError(p, iq, err)
			return
		}
	case withForm:
		sid := a.cmds.openForm(owner, device, name)
		_ = p.send(resultOf(iq).Add(newElement(nsCommands, "command", "node", name, "sessionid", sid, "status", "executing").Add(
			newElement(nsCommands, "actions", "execute", "complete").Add(newElement(nsCommands, "complete")),
			commandForm(device, decl))))
		return
	}
	if sid == "" {
		sid = randomID()[:16]
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		ctx, cancel := context.WithTimeout(a.ctx, deviceCommandTimeout)
		defer cancel()
		reply, err := a.cfg.DeviceCommand(ctx, adapters.Command{ID: randomID(), DeviceID: device, Name: name, Params: params})
		if err != nil {
			a.log.Info("xmpp: device command from chat", "device", device, "command", name, "err", err)
			a.sendCommandError(p, iq, err)
			return
		}
		_ = p.send(resultOf(iq).Add(newElement(nsCommands, "command", "node", name, "sessionid", sid, "status", "completed").Add(
			newElement(nsData, "x", "type", "result").Add(
				newElement(nsData, "title").AddText(name+" on "+device),
				newElement(nsData, "field", "type", "text-single", "var", "result", "label", "reply").Add(newElement(nsData, "value").AddText(string(reply)))))))
	}()
}

// legacyParams returns the JSON of a submitted form's "params" field when
// the command does not declare a parameter of that name.
func legacyParams(x *element, decl devices.Command) string {
	if decl.Params != nil {
		if _, ok := decl.Params.Param("params"); ok {
			return ""
		}
	}
	for _, f := range x.Elements() {
		if f.Name.Local == "field" && f.AttrValue("var") == "params" {
			return strings.TrimSpace(f.childText("", "value"))
		}
	}
	return ""
}

// commandForm is the XEP-0004 form of a declared command: a field per
// parameter (list-single for an enum, boolean, text-single with an
// XEP-0122 datatype for numbers), required, desc and default value.
func commandForm(device string, c devices.Command) *element {
	x := newElement(nsData, "x", "type", "form").Add(newElement(nsData, "title").AddText(commandLabel(c)))
	x.Add(newElement(nsData, "instructions").AddText("Parameters of " + c.Name + " on " + device))
	x.Add(newElement(nsData, "field", "var", "FORM_TYPE", "type", "hidden").Add(newElement(nsData, "value").AddText(CommandFormType)))
	for _, p := range c.Params.Properties {
		f := newElement(nsData, "field", "var", p.Name, "label", p.Name)
		switch {
		case len(p.Enum) > 0:
			f.SetAttr("type", "list-single")
		case p.Type == devices.TypeBoolean:
			f.SetAttr("type", "boolean")
		default:
			f.SetAttr("type", "text-single")
		}
		if p.Description != "" {
			f.Add(newElement(nsData, "desc").AddText(p.Description))
		}
		if c.Params.IsRequired(p.Name) {
			f.Add(newElement(nsData, "required"))
		}
		if p.Default != nil {
			f.Add(newElement(nsData, "value").AddText(devices.FormatValue(p.Default)))
		}
		for _, v := range p.Enum {
			t := devices.FormatValue(v)
			f.Add(newElement(nsData, "option", "label", t).Add(newElement(nsData, "value").AddText(t)))
		}
		switch p.Type {
		case devices.TypeInteger:
			f.Add(newElement(nsXDataValidate, "validate", "datatype", "xs:integer").Add(newElement(nsXDataValidate, "basic")))
		case devices.TypeNumber:
			f.Add(newElement(nsXDataValidate, "validate", "datatype", "xs:decimal").Add(newElement(nsXDataValidate, "basic")))
		}
		x.Add(f)
	}
	return x
}

// formParams turns a submitted form into the command's JSON params: each
// field's value parsed by its parameter's type; an empty text value is an
// absent parameter (its default, if any, applies). A command without
// declared parameters gets the fields as strings.
func formParams(c devices.Command, x *element) (json.RawMessage, error) {
	obj := map[string]any{}
	if x != nil {
		for _, f := range x.Elements() {
			v := f.AttrValue("var")
			if f.Name.Local != "field" || v == "" || v == "FORM_TYPE" {
				continue
			}
			text := f.childText("", "value")
			if c.Params == nil {
				obj[v] = text
				continue
			}
			p, ok := c.Params.Param(v)
			if !ok {
				return nil, &devices.ParamError{Command: c.Name, Param: v, Reason: "not a parameter of this command"}
			}
			if strings.TrimSpace(text) == "" {
				continue
			}
			val, err := p.ParseValue(text)
			if err != nil {
				return nil, &devices.ParamError{Command: c.Name, Param: v, Reason: err.Error()}
			}
			obj[v] = val
		}
	}
	if len(obj) == 0 && c.Params == nil {
		return json.RawMessage("null"), nil
	}
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("xmpp: command %q: encode params: %w", c.Name, err)
	}
	if c.Params != nil {
		// Required parameters and defaults, checked here so that the
		// user sees the form's error before anything is sent.
		return c.CheckParams(b)
	}
	return b, nil
}

// errorReplyText is errorReply with a human-readable <text/>.
func errorReplyText(el *element, typ, condition, text string) *element {
	r := errorReply(el, typ, condition)
	if text == "" {
		return r
	}
	for _, c := range r.Elements() {
		if c.Name.Local == "error" && c.AttrValue("type") == typ && c.Child(nsStanzas, condition) != nil {
			c.Add(newElement(nsStanzas, "text").AddText(text))
		}
	}
	return r
}

// conditionStatus maps a device's stanza error condition to the HTTP-like
// code of its refusal; conditions of a failure are absent (502).
var conditionStatus = map[string]int{
	"bad-request":             http.StatusBadRequest,
	"not-acceptable":          http.StatusBadRequest,
	"jid-malformed":           http.StatusBadRequest,
	"forbidden":               http.StatusForbidden,
	"not-allowed":             http.StatusForbidden,
	"not-authorized":          http.StatusForbidden,
	"conflict":                http.StatusConflict,
	"item-not-found":          http.StatusUnprocessableEntity,
	"feature-not-implemented": http.StatusUnprocessableEntity,
	"policy-violation":        http.StatusUnprocessableEntity,
	"resource-constraint":     http.StatusConflict,
}

// deviceRefusal reads an XMPP device's error answer to a command.
func deviceRefusal(iq *element) *devices.RefusedError {
	re := &devices.RefusedError{Failed: true}
	e := iq.Child("", "error")
	if e == nil {
		return re
	}
	for _, c := range e.Elements() {
		if c.Name.Space != nsStanzas {
			continue
		}
		if c.Name.Local == "text" {
			re.Reason = strings.TrimSpace(c.Text())
			continue
		}
		if code, ok := conditionStatus[c.Name.Local]; ok {
			re.Code, re.Failed = code, false
		}
		if re.Reason == "" {
			re.Reason = c.Name.Local
		}
	}
	return re
}

// sendCommandError answers iq with the stanza error matching err: a
// device's refusal by its status (bad-request, not-allowed, conflict, or
// undefined-condition for a failure) with the device's reason as text,
// bad parameters as bad-request naming the parameter, an offline device
// recipient-unavailable, a timeout remote-server-timeout.
func (a *Adapter) sendCommandError(p peer, iq *element, err error) {
	var re *devices.RefusedError
	typ, cond, text := "cancel", "undefined-condition", ""
	switch {
	case errors.As(err, &re):
		text = re.Reason
		switch re.HTTPStatus() {
		case http.StatusBadRequest, http.StatusUnprocessableEntity:
			typ, cond = "modify", "bad-request"
		case http.StatusForbidden:
			cond = "not-allowed"
		case http.StatusConflict:
			cond = "conflict"
		}
	case errors.Is(err, devices.ErrUnknownDevice):
		cond = "item-not-found"
	case errors.Is(err, devices.ErrInvalid):
		typ, cond, text = "modify", "bad-request", strings.TrimPrefix(err.Error(), "devices: ")
	case errors.Is(err, adapters.ErrDeviceOffline):
		typ, cond = "wait", "recipient-unavailable"
	case errors.Is(err, context.DeadlineExceeded):
		typ, cond = "wait", "remote-server-timeout"
	}
	_ = p.send(errorReplyText(iq, typ, cond, text))
}

package adapters

import (
	"fmt"
	"strings"

	"github.com/hubsmith/hub/broker"
)

// The ACL semantics every protocol shares (DESIGN.md, "Users, devices and
// access"), in the order decide applies them:
//
//  1. Admins, and anonymous clients of a loopback-only listener with no
//     anonymous rules configured (Principal.Local), may do anything.
//  2. Device topics are the device's business, whatever a rule says (a
//     rule cannot grant these, only the device's own principal passes):
//     devices/{id}/commands/# is read only by device {id}; a publish there
//     is a command to {id} and needs a command rule (step 4) unless it is
//     the device's own; devices/{id}/responses/# and devices/{id}/state
//     (and below) are written only by device {id}. Anonymous clients never
//     touch $-topics.
//  3. A topic action (publish, subscribe, read) is decided by the first
//     rule of that action or "all" whose filter covers the topic. A
//     principal with topic rules is denied what none of them covers, as
//     in Mosquitto; one without gets its role's default: a user any topic
//     but $-topics and device command topics, a device its own
//     devices/{id}/#.
//  4. A command to device {id} is decided by the first rule of action
//     "command" whose filter (a device id, or + or # for any) matches
//     {id}; without one it is refused. "all" does not cover commands, and
//     command rules do not count as topic rules in step 3, so giving a
//     user one device to command leaves the rest of their access as it
//     was.

// ActionCommand is the action of sending a command to a device: the
// "topic" Authorize is given is then the device id.
const ActionCommand Action = "command"

// ActionUpload is storing, replacing or deleting the file a topic
// files/{name} names: decided as a publish on that topic. A plain publish
// on a files/ topic is refused to everyone, admins included: those topics
// carry the file store's descriptors, which the store alone publishes, so
// no client can forge one. ActionUpload is not a rule action.
const ActionUpload Action = "upload"

// FilesTopic reports whether topic is one of the file store's (files, or
// files/...).
func FilesTopic(topic string) bool { return topic == "files" || strings.HasPrefix(topic, "files/") }

// ActionAll in a rule covers ActionPublish and ActionSubscribe (not
// ActionCommand).
const ActionAll = "all"

// AnonymousName is the key of the configured rules (YAML acl.anonymous)
// that apply to anonymous clients; they never apply to a user of that name.
const AnonymousName = "anonymous"

// DefaultAnonymousRules are the rules of anonymous clients when the
// configuration names none: publish and subscribe to anything but device
// topics ($-topics are never theirs), no commands.
var DefaultAnonymousRules = []ACLRule{
	{Action: ActionAll, Filter: "devices/#", Allow: false},
	{Action: string(ActionPublish), Filter: "#", Allow: true},
	{Action: string(ActionSubscribe), Filter: "#", Allow: true},
}

// ValidateRule checks one ACL rule: its action, and its filter ("%u"
// standing for the principal's name): a topic filter, or for a command
// rule a device id, "+" or "#".
func ValidateRule(r ACLRule) error {
	f := strings.ReplaceAll(r.Filter, "%u", "u")
	switch Action(r.Action) {
	case ActionPublish, ActionSubscribe, ActionAll:
		if err := broker.ValidateFilter(f); err != nil {
			return fmt.Errorf("filter: %w", err)
		}
	case ActionCommand:
		if f == "" || strings.Contains(f, "/") || (strings.ContainsAny(f, "+#") && len(f) > 1) {
			return fmt.Errorf("filter %q: a command rule names a device id, + or #", trunc(r.Filter))
		}
	default:
		return fmt.Errorf("action %q: must be publish, subscribe, command or all", trunc(r.Action))
	}
	return nil
}

// ValidateAnonymousRule is ValidateRule for the rules of anonymous
// clients, which may not name $-topics either.
func ValidateAnonymousRule(r ACLRule) error {
	if err := ValidateRule(r); err != nil {
		return err
	}
	if strings.HasPrefix(r.Filter, "$") {
		return fmt.Errorf("filter %q: anonymous clients never touch $ topics", trunc(r.Filter))
	}
	return nil
}

// decide applies the steps above to p (whose role is current) with its
// rules. It looks nothing up.
func decide(p Principal, rules []ACLRule, action Action, topic string) error {
	switch {
	case action == ActionPublish && FilesTopic(topic):
		return deny(p, action, topic, "files/ topics carry the file store's descriptors: upload the file instead (POST /api/v1/files, CoAP PUT /files/..., XEP-0363)")
	case action == ActionUpload:
		action = ActionPublish
	}
	if p.Role == RoleAdmin || p.Anonymous && p.Local {
		return nil
	}
	if action == ActionCommand {
		return decideCommand(p, rules, topic)
	}
	if p.Anonymous && strings.HasPrefix(topic, "$") {
		return deny(p, action, topic, "anonymous clients never touch $ topics")
	}
	if dev, kind, ok := deviceTopic(topic); ok && !(p.Role == RoleDevice && dev == p.Name) {
		switch {
		case action == ActionSubscribe && kind == "commands":
			return deny(p, action, topic, "only the device reads its commands")
		case action == ActionPublish && kind == "commands":
			if dev == "+" || dev == "#" {
				return deny(p, action, topic, "a command goes to one device")
			}
			return decideCommand(p, rules, dev)
		case action == ActionPublish && (kind == "responses" || kind == "state"):
			return deny(p, action, topic, "only the device writes its "+kind)
		}
	}
	topical := false
	for _, r := range rules {
		if r.Action == string(ActionCommand) {
			continue
		}
		topical = true
		if r.Action != ActionAll && r.Action != string(action) {
			continue
		}
		if ruleCovers(expand(r.Filter, p), topic, action) {
			if r.Allow {
				return nil
			}
			return deny(p, action, topic, "denied by rule "+r.Filter)
		}
	}
	if topical || p.Anonymous {
		return deny(p, action, topic, "no rule allows it")
	}
	switch p.Role {
	case RoleDevice:
		if ruleCovers("devices/"+p.Name+"/#", topic, action) {
			return nil
		}
	case RoleUser:
		// Other devices' command topics are refused in step 2 already.
		if !strings.HasPrefix(topic, "$") {
			return nil
		}
	}
	return deny(p, action, topic, "not in the "+roleName(p)+" default")
}

// decideCommand applies p's command rules to a command for device id.
func decideCommand(p Principal, rules []ACLRule, id string) error {
	for _, r := range rules {
		if r.Action != string(ActionCommand) {
			continue
		}
		if broker.Match(expand(r.Filter, p), id) {
			if r.Allow {
				return nil
			}
			return deny(p, ActionCommand, id, "denied by rule "+r.Filter)
		}
	}
	return deny(p, ActionCommand, id, "no command rule allows it")
}

// deviceTopic reports whether topic (or filter) lies under devices/{id}/
// {kind} for one of the kinds reserved to device {id} ("commands",
// "responses", "state"), and returns id (possibly "+") and kind. A filter
// that only overlaps those trees (devices/#, +/+/commands/x) is not one:
// the read check of every delivered envelope keeps what it must not see
// from its subscriber.
func deviceTopic(topic string) (id, kind string, ok bool) {
	rest, found := strings.CutPrefix(topic, "devices/")
	if !found {
		return "", "", false
	}
	id, rest, found = strings.Cut(rest, "/")
	if !found || id == "#" {
		return "", "", false
	}
	kind, _, _ = strings.Cut(rest, "/")
	switch kind {
	case "commands", "responses", "state":
		return id, kind, true
	}
	return "", "", false
}

func expand(filter string, p Principal) string {
	return strings.ReplaceAll(filter, "%u", p.Name)
}

func roleName(p Principal) string {
	if p.Anonymous {
		return "anonymous"
	}
	return p.Role
}

func deny(p Principal, action Action, topic, why string) error {
	who := p.Name
	if p.Anonymous {
		who = "anonymous"
	}
	return fmt.Errorf("%w: %s %q by %q: %s", ErrForbidden, action, topic, who, why)
}

// ruleCovers reports whether rule filter f covers topic; for a subscribe,
// topic is itself a filter and must be no wider than f.
func ruleCovers(f, topic string, action Action) bool {
	if action == ActionSubscribe && broker.IsFilter(topic) {
		return filterWithin(topic, f)
	}
	return broker.Match(f, topic)
}

// filterWithin reports whether every topic matched by sub is matched by f.
func filterWithin(sub, f string) bool {
	if strings.HasPrefix(sub, "$") && f != "" && (f[0] == '+' || f[0] == '#') {
		return false // as broker.Match: a leading wildcard never covers $-topics
	}
	sl := strings.Split(sub, "/")
	fl := strings.Split(f, "/")
	for i, l := range fl {
		if l == "#" {
			return true
		}
		if i >= len(sl) {
			return false
		}
		switch {
		case sl[i] == "#":
			return false
		case l == "+":
		case sl[i] == "+" || sl[i] != l:
			return false
		}
	}
	return len(sl) == len(fl)
}

func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

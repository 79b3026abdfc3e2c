package xmpp

import (
	"fmt"
	"strings"
	"sync"

	"github.com/hubsmith/hub/broker"
)

// JIDRule is a template rule mapping a family of topics to JIDs besides the
// default rule (DESIGN.md), e.g. Topic "sensors/{room}/temp" with JID
// "{room}-temp@sensors.{domain}".
//
// Each {name} of Topic fills exactly one whole level, and each is used
// exactly once in the localpart of JID, with literal text (a-z, 0-9 and
// "-_.~=") around them; two placeholders in the localpart are separated by
// text holding at least one character that is not a hex digit. The domain
// of JID is one or more labels followed by ".{domain}", where {domain} is
// the XMPP domain (or the component domain for users of the server the hub
// is a component of). Values are escaped as in TopicToJID, so every value
// round-trips; a topic matches a rule only with a non-empty value for each
// placeholder. The default rule keeps applying to every topic.
type JIDRule struct {
	// Topic is the topic template, e.g. "sensors/{room}/temp".
	Topic string `yaml:"topic"`
	// JID is the JID template, e.g. "{room}-temp@sensors.{domain}".
	JID string `yaml:"jid"`
}

// rulePart is a piece of a localpart template: literal text, or the value
// of the placeholder whose topic level is level.
type rulePart struct {
	lit   string
	level int // -1 for literal text
}

// rule is a compiled JIDRule.
type rule struct {
	index  int      // position in Config.JIDRules, for messages
	levels []string // topic template levels; "" marks a placeholder level
	names  []string // placeholder name per level ("" for literal levels)
	parts  []rulePart
	domain string
	// extra marks bytes escaped in values besides those of the default
	// rule: the key character of each separator between placeholders.
	extra [256]bool
	// keys holds, per separator part index, the offset of its key byte.
	keys map[int]int
}

// ruleSet is the compiled template rules for one base domain.
type ruleSet struct {
	// mu guards rules and domains, which a reload replaces (swap).
	mu      sync.RWMutex
	rules   []*rule
	domains map[string]bool
}

// swap replaces rs's rules with those of next (a reload of the JID rules:
// sessions keep running and new requests see the new rules).
func (rs *ruleSet) swap(next *ruleSet) {
	if rs == nil || next == nil {
		return
	}
	rs.mu.Lock()
	rs.rules, rs.domains = next.rules, next.domains
	rs.mu.Unlock()
}

// ruleLitChars are the bytes allowed in the literal text of a localpart
// template.
const ruleLitChars = "abcdefghijklmnopqrstuvwxyz0123456789-_.~="

// compileRules checks rules and resolves {domain} to base. reserved holds
// domains a rule must not use (the topic, pubsub and devices services).
func compileRules(rules []JIDRule, base string, reserved ...string) (*ruleSet, error) {
	rs := &ruleSet{domains: map[string]bool{}}
	for i, jr := range rules {
		r, err := compileRule(i, jr, base)
		if err != nil {
			return nil, fmt.Errorf("xmpp: JIDRules[%d] (topic %q, jid %q): %w", i, jr.Topic, jr.JID, err)
		}
		for _, d := range reserved {
			if r.domain == d {
				return nil, fmt.Errorf("xmpp: JIDRules[%d] (topic %q, jid %q): domain %s is taken by a hub service", i, jr.Topic, jr.JID, d)
			}
		}
		for _, o := range rs.rules {
			if o.domain == r.domain && mayOverlap(o, r) {
				return nil, fmt.Errorf("xmpp: JIDRules[%d] (jid %q) and JIDRules[%d] may give the same JID: rules at one domain need localparts that differ in their fixed prefix or suffix", i, jr.JID, o.index)
			}
		}
		rs.rules = append(rs.rules, r)
		rs.domains[r.domain] = true
	}
	return rs, nil
}

func compileRule(index int, jr JIDRule, base string) (*rule, error) {
	r := &rule{index: index, keys: map[int]int{}}
	if jr.Topic == "" {
		return nil, fmt.Errorf("topic is empty")
	}
	byName := map[string]int{}
	r.levels = strings.Split(jr.Topic, "/")
	r.names = make([]string, len(r.levels))
	sample := make([]string, len(r.levels))
	for i, l := range r.levels {
		if strings.HasPrefix(l, "{") && strings.HasSuffix(l, "}") {
			name := l[1 : len(l)-1]
			if !validName(name) {
				return nil, fmt.Errorf("topic level %d %q: a placeholder name is letters, digits and _", i+1, l)
			}
			if _, dup := byName[name]; dup {
				return nil, fmt.Errorf("topic placeholder {%s} is used twice", name)
			}
			byName[name] = i
			r.levels[i], r.names[i], sample[i] = "", name, "x"
			continue
		}
		if strings.ContainsAny(l, "{}") {
			return nil, fmt.Errorf("topic level %d %q: a placeholder must fill a whole level", i+1, l)
		}
		sample[i] = l
	}
	if len(byName) == 0 {
		return nil, fmt.Errorf("topic has no {placeholder}")
	}
	if err := broker.ValidateTopic(strings.Join(sample, "/")); err != nil {
		return nil, fmt.Errorf("topic: %w (wildcards are not allowed in templates)", err)
	}
	local, dom, ok := strings.Cut(jr.JID, "@")
	if !ok || local == "" {
		return nil, fmt.Errorf("jid: want localpart-template@domain-template")
	}
	// Domain: labels + ".{domain}".
	sub, ok := strings.CutSuffix(dom, ".{domain}")
	if !ok || sub == "" {
		return nil, fmt.Errorf("jid domain %q: must be a subdomain of {domain} such as sensors.{domain} ({domain} itself holds the users)", dom)
	}
	for _, label := range strings.Split(sub, ".") {
		if label == "" || strings.Trim(label, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" || label[0] == '-' || label[len(label)-1] == '-' {
			return nil, fmt.Errorf("jid domain %q: label %q: lowercase letters, digits and inner hyphens only", dom, label)
		}
	}
	r.domain = sub + "." + base
	// Localpart: literal text and placeholders.
	used := map[string]bool{}
	rest := local
	for rest != "" {
		open := strings.IndexByte(rest, '{')
		if open < 0 {
			open = len(rest)
		}
		if lit := rest[:open]; lit != "" {
			if strings.Trim(lit, ruleLitChars) != "" || strings.ContainsRune(lit, '}') {
				return nil, fmt.Errorf("jid localpart %q: literal text %q: only %q are allowed", local, lit, ruleLitChars)
			}
			r.parts = append(r.parts, rulePart{lit: lit, level: -1})
		}
		rest = rest[open:]
		if rest == "" {
			break
		}
		end := strings.IndexByte(rest, '}')
		if end < 0 {
			return nil, fmt.Errorf("jid localpart %q: unclosed {", local)
		}
		name := rest[1:end]
		level, ok := byName[name]
		if !ok {
			return nil, fmt.Errorf("jid placeholder {%s} is not in the topic", name)
		}
		if used[name] {
			return nil, fmt.Errorf("jid placeholder {%s} is used twice", name)
		}
		used[name] = true
		if n := len(r.parts); n > 0 && r.parts[n-1].level >= 0 {
			return nil, fmt.Errorf("jid localpart %q: placeholders need literal text between them", local)
		}
		r.parts = append(r.parts, rulePart{level: level})
		rest = rest[end+1:]
	}
	for name := range byName {
		if !used[name] {
			return nil, fmt.Errorf("topic placeholder {%s} is not in the jid", name)
		}
	}
	// A separator between two placeholders is found by its first byte that
	// is not a hex digit (the escapes are made of '\' and hex digits);
	// values escape that byte.
	for i := 1; i+1 < len(r.parts); i++ {
		if r.parts[i].level >= 0 || r.parts[i-1].level < 0 || r.parts[i+1].level < 0 {
			continue
		}
		lit := r.parts[i].lit
		k := strings.IndexFunc(lit, func(c rune) bool { return c > 0x7f || !isLowerHex(byte(c)) })
		if k < 0 {
			return nil, fmt.Errorf("jid localpart %q: the text %q between placeholders needs a character other than 0-9 and a-f", local, lit)
		}
		r.keys[i] = k
		r.extra[lit[k]] = true
	}
	return r, nil
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// mayOverlap reports whether two rules might produce the same localpart:
// unless their fixed prefixes or their fixed suffixes differ, they may.
func mayOverlap(a, b *rule) bool {
	pa, pb := a.prefix(), b.prefix()
	n := min(len(pa), len(pb))
	if pa[:n] != pb[:n] {
		return false
	}
	sa, sb := a.suffix(), b.suffix()
	n = min(len(sa), len(sb))
	return sa[len(sa)-n:] == sb[len(sb)-n:]
}

func (r *rule) prefix() string {
	if r.parts[0].level < 0 {
		return r.parts[0].lit
	}
	return ""
}

func (r *rule) suffix() string {
	if p := r.parts[len(r.parts)-1]; p.level < 0 {
		return p.lit
	}
	return ""
}

// localOf returns the localpart of topic under r (ok false when the topic
// does not match).
func (r *rule) localOf(topic string) (string, bool) {
	levels := strings.Split(topic, "/")
	if len(levels) != len(r.levels) {
		return "", false
	}
	for i, l := range levels {
		if r.names[i] == "" {
			if l != r.levels[i] {
				return "", false
			}
		} else if l == "" {
			return "", false
		}
	}
	var b strings.Builder
	for _, p := range r.parts {
		if p.level < 0 {
			b.WriteString(p.lit)
		} else {
			escapeValue(&b, levels[p.level], &r.extra)
		}
	}
	return b.String(), true
}

// topicOf returns the topic whose localpart under r is local.
func (r *rule) topicOf(local string) (string, bool) {
	values := make([]string, len(r.levels))
	rest := local
	for i, p := range r.parts {
		if p.level < 0 {
			if i > 0 && r.parts[i-1].level >= 0 {
				continue // consumed with the value before it
			}
			var ok bool
			if rest, ok = strings.CutPrefix(rest, p.lit); !ok {
				return "", false
			}
			continue
		}
		var raw string
		switch {
		case i == len(r.parts)-1:
			raw, rest = rest, ""
		case i == len(r.parts)-2:
			sfx := r.parts[i+1].lit
			v, ok := strings.CutSuffix(rest, sfx)
			if !ok {
				return "", false
			}
			raw, rest = v, ""
		default:
			sep := r.parts[i+1].lit
			k := r.keys[i+1]
			at := strings.IndexByte(rest, sep[k]) - k
			if at < 0 || !strings.HasPrefix(rest[at:], sep) {
				return "", false
			}
			raw, rest = rest[:at], rest[at+len(sep):]
		}
		v, ok := unescapeValue(raw, &r.extra)
		if !ok {
			return "", false
		}
		values[p.level] = v
	}
	if rest != "" {
		return "", false
	}
	for i, l := range r.levels {
		if r.names[i] == "" {
			values[i] = l
		}
	}
	topic := strings.Join(values, "/")
	if broker.ValidateTopic(topic) != nil {
		return "", false
	}
	if back, ok := r.localOf(topic); !ok || back != local {
		return "", false
	}
	return topic, true
}

// toJID returns the bare JID of topic under the first rule it matches.
func (rs *ruleSet) toJID(topic string) (string, bool) {
	if rs == nil {
		return "", false
	}
	rs.mu.RLock()
	defer rs.mu.RUnlock()
	for _, r := range rs.rules {
		if local, ok := r.localOf(topic); ok {
			return local + "@" + r.domain, true
		}
	}
	return "", false
}

// fromJID returns the topic of the JID local@domain under the rules of
// that domain.
func (rs *ruleSet) fromJID(local, domain string) (string, bool) {
	if rs == nil || local == "" {
		return "", false
	}
	rs.mu.RLock()
	defer rs.mu.RUnlock()
	for _, r := range rs.rules {
		if r.domain != domain {
			continue
		}
		if topic, ok := r.topicOf(local); ok {
			return topic, true
		}
	}
	return "", false
}

// jidAt returns the JID of topic under the first rule at domain it matches.
func (rs *ruleSet) jidAt(topic, domain string) (string, bool) {
	if rs == nil {
		return "", false
	}
	rs.mu.RLock()
	defer rs.mu.RUnlock()
	for _, r := range rs.rules {
		if r.domain != domain {
			continue
		}
		if local, ok := r.localOf(topic); ok {
			return local + "@" + r.domain, true
		}
	}
	return "", false
}

// hasDomain reports whether a rule lives at domain.
func (rs *ruleSet) hasDomain(domain string) bool {
	if rs == nil {
		return false
	}
	rs.mu.RLock()
	defer rs.mu.RUnlock()
	return rs.domains[domain]
}

// domainList returns the rule domains in rule order.
func (rs *ruleSet) domainList() []string {
	if rs == nil {
		return nil
	}
	rs.mu.RLock()
	defer rs.mu.RUnlock()
	var out []string
	seen := map[string]bool{}
	for _, r := range rs.rules {
		if !seen[r.domain] {
			seen[r.domain] = true
			out = append(out, r.domain)
		}
	}
	return out
}

// escapeValue writes a placeholder value as TopicToLocal writes a level,
// also escaping the bytes marked in extra.
func escapeValue(b *strings.Builder, v string, extra *[256]bool) {
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '\\':
			if isValueCode(v[i+1:], extra) {
				b.WriteString(`\5c`)
			} else {
				b.WriteByte('\\')
			}
		case mustEscape(c) || extra[c]:
			b.WriteByte('\\')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&0xf])
		default:
			b.WriteByte(c)
		}
	}
}

// unescapeValue inverts escapeValue; a value must not hold '/'.
func unescapeValue(s string, extra *[256]bool) (string, bool) {
	if s == "" {
		return "", false
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\\' && isValueCode(s[i+1:], extra) {
			c = unhex(s[i+1])<<4 | unhex(s[i+2])
			i += 2
		}
		if c == '/' {
			return "", false
		}
		b.WriteByte(c)
	}
	return b.String(), true
}

// isValueCode is isCode with the extra escaped bytes.
func isValueCode(s string, extra *[256]bool) bool {
	if isCode(s) {
		return true
	}
	if len(s) < 2 || !isLowerHex(s[0]) || !isLowerHex(s[1]) {
		return false
	}
	return extra[unhex(s[0])<<4|unhex(s[1])]
}

package gateway

import (
	"reflect"

	"github.com/hubsmith/hub/xmpp"
)

// jidRuler is the XMPP adapter's reload of its JID rules.
type jidRuler interface {
	PrepareJIDRules(rules []xmpp.JIDRule) (apply func(), err error)
}

// prepareJIDRules compiles cfg's JID rules in the running XMPP adapter when
// they changed, returning what applies them (nil: nothing to do).
func (h *Hub) prepareJIDRules(old, cfg Config) (func(), error) {
	if reflect.DeepEqual(old.XMPP.JIDRules, cfg.XMPP.JIDRules) {
		return nil, nil
	}
	h.mu.Lock()
	var r jidRuler
	for _, a := range h.adapters {
		if x, ok := a.(jidRuler); ok {
			r = x
		}
	}
	h.mu.Unlock()
	if r == nil {
		return func() {}, nil // no XMPP listener: the rules are only recorded
	}
	return r.PrepareJIDRules(cfg.XMPP.JIDRules)
}

package adapters

// CanReadCached is CanRead answered from the read cache alone, without a
// context: ok is false when the cache holds no fresh decision, and the
// caller asks CanRead. A delivery path calls it first so that the common
// case, a decision already made, costs no context and no timer.
func (a *Auth) CanReadCached(p Principal, topic string) (err error, ok bool) {
	return a.reads.decision(readKey{p: p, topic: topic})
}

// AuthorizeCached is Authorize answered from the cache of p's role and
// rules alone: ok is false when they are not cached fresh, and the caller
// asks Authorize.
func (a *Auth) AuthorizeCached(p Principal, action Action, topic string) (err error, ok bool) {
	if p.Anonymous && p.Local {
		return nil, true
	}
	st, ok := a.reads.principal(p)
	if !ok {
		return nil, false
	}
	return authorizeState(st, p, action, topic), true
}

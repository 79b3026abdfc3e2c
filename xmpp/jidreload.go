package xmpp

// PrepareJIDRules compiles rules as New would (for the c2s domain and,
// with a component, the component domain) and returns what swaps them in:
// a reload checks every part of a new configuration before applying any.
// Connected sessions stay; the new rules apply to the next stanza, so a
// topic JID that no longer matches a rule answers item-not-found, and
// subscriptions made through a removed rule's JID are skipped at the
// user's next login.
func (a *Adapter) PrepareJIDRules(rules []JIDRule) (apply func(), err error) {
	next, err := compileRules(rules, a.cfg.Domain, a.topicDomain(), a.pubsubDomain(), a.devicesDomain(),
		"proxy."+a.cfg.Domain, "upload."+a.cfg.Domain)
	if err != nil {
		return nil, err
	}
	var nextComp *ruleSet
	if a.compRules != nil {
		if nextComp, err = compileRules(rules, a.cfg.ComponentDomain); err != nil {
			return nil, err
		}
	}
	return func() {
		a.rules.swap(next)
		a.compRules.swap(nextComp)
	}, nil
}

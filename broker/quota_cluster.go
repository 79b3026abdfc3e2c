package broker

import "fmt"

// What a clustered bus that keeps retained values and queues elsewhere
// (MemoryConfig.ExternalRetained) needs of the in-process part's quota
// accounting and cold values.

// CheckRetained says whether e may become its topic's retained value
// under the quotas, as a retained publish on this bus would be checked:
// nil, or an error that carries ErrQuota (and ErrStorage), counted as
// refused. The usage is that of the values SetRetained has applied.
func (m *Memory) CheckRetained(e *Envelope) error {
	m.rmu.RLock()
	err := m.quota.checkRetained(m.retained[e.Topic], m.sizeLocked(e.Topic), e)
	m.rmu.RUnlock()
	if err != nil {
		m.quota.refused.Add(1)
		return fmt.Errorf("broker: retain %q: %w", e.Topic, err)
	}
	return nil
}

// CountRefused counts a publish a clustered bus refused with ErrQuota
// for a quota it checks itself, in QuotaStats.
func (m *Memory) CountRefused() { m.quota.refused.Add(1) }

// QuotaExempt reports whether e is the hub's own (a $ topic, the hub's or
// a bridge's publish), which no quota refuses.
func QuotaExempt(e *Envelope) bool { return exempt(e) }

// SetColdReader makes SetRetained keep the payloads of values larger than
// above bytes out of memory, read back from r when asked for (a clustered
// bus whose retained values live in a KV bucket); above <= 0 keeps every
// payload in memory. Call it before the first SetRetained.
func (m *Memory) SetColdReader(r ColdSpool, above int) {
	m.rmu.Lock()
	defer m.rmu.Unlock()
	if above <= 0 {
		m.coldStore, m.coldAbove = nil, 0
		return
	}
	m.coldStore, m.coldAbove = r, above
}

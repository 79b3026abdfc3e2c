package broker

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// ColdSpool is implemented by a Spool that can keep the payloads of large
// retained values on disk only: the bus then holds a stub (the envelope
// without its payload) and reads the value back when it is asked for, so
// that hundreds of megabytes of retained values cost neither memory while
// the hub runs nor a full read at every start.
type ColdSpool interface {
	// LoadRetainedHeads is LoadRetained with the payload of every value
	// whose payload is larger than above left out (Cold set, Size its
	// Envelope.Size with the payload).
	LoadRetainedHeads(ctx context.Context, above int) ([]RetainedHead, error)
	// ReadRetained returns topic's stored retained envelope (nil when
	// there is none).
	ReadRetained(ctx context.Context, topic string) (*Envelope, error)
}

// RetainedHead is one retained value as LoadRetainedHeads returns it.
type RetainedHead struct {
	Envelope *Envelope
	Size     int
	Cold     bool
}

// loadRetained fills the retained values from the spool, leaving the
// payloads above `above` bytes there when the spool can (m.spool set).
func (m *Memory) loadRetained(ctx context.Context, above int) error {
	cs, ok := m.spool.(ColdSpool)
	if !ok || above <= 0 || m.extRetained {
		rs, err := m.spool.LoadRetained(ctx)
		if err != nil {
			return fmt.Errorf("broker: load retained: %w", err)
		}
		for _, e := range rs {
			m.quota.retainedAccount(m.retained[e.Topic], m.sizeLocked(e.Topic), e, e.Size())
			m.retained[e.Topic] = e
		}
		return nil
	}
	m.coldStore, m.coldAbove = cs, above
	hs, err := cs.LoadRetainedHeads(ctx, above)
	if err != nil {
		return fmt.Errorf("broker: load retained: %w", err)
	}
	for _, h := range hs {
		e := h.Envelope
		m.quota.retainedAccount(m.retained[e.Topic], m.sizeLocked(e.Topic), e, h.Size)
		m.retained[e.Topic] = e
		delete(m.coldSize, e.Topic)
		if h.Cold {
			m.coldSize[e.Topic] = h.Size
		}
	}
	return nil
}

// sizeLocked is the Size of topic's retained value, cold or not (0: none;
// m.rmu held).
func (m *Memory) sizeLocked(topic string) int {
	if n, ok := m.coldSize[topic]; ok {
		return n
	}
	if e := m.retained[topic]; e != nil {
		return e.Size()
	}
	return 0
}

// stub keeps e as a cold value: the envelope without its payload, whose
// Size is remembered (m.rmu held).
func (m *Memory) stub(e *Envelope) *Envelope {
	s := *e
	s.Payload = nil
	m.coldSize[e.Topic] = e.Size()
	return &s
}

// readCold reads the named cold values back from the spool; one that is
// gone or does not read is left out (and logged).
func (m *Memory) readCold(ctx context.Context, topics []string) []*Envelope {
	var out []*Envelope
	for _, t := range topics {
		e, err := m.coldStore.ReadRetained(ctx, t)
		if err != nil {
			m.log.Warn("broker: read a retained value back", "topic", t, "err", err)
			continue
		}
		if e != nil {
			out = append(out, e)
		}
	}
	return out
}

// RetainedPager is implemented by a bus that reads a filter's retained
// values a page at a time, so that a read of many large (cold) values
// holds one page of them at once.
type RetainedPager interface {
	// RetainedPage returns, sorted by topic, the retained envelopes whose
	// topics match filter and sort after `after`: at most limit of them,
	// and no more once their payloads pass maxBytes (at least one). more
	// says whether others follow.
	RetainedPage(ctx context.Context, filter, after string, limit, maxBytes int) (page []*Envelope, more bool, err error)
}

// RetainedPage implements RetainedPager.
func (m *Memory) RetainedPage(ctx context.Context, filter, after string, limit, maxBytes int) ([]*Envelope, bool, error) {
	if err := ValidateFilter(filter); err != nil {
		return nil, false, fmt.Errorf("broker: retained: %w", err)
	}
	type head struct {
		e    *Envelope
		size int
		cold bool
	}
	now := time.Now()
	var hs []head
	m.rmu.RLock()
	for t, e := range m.retained {
		if t > after && Match(filter, t) && !e.Expired(now) {
			n, cold := m.coldSize[t]
			if !cold {
				n = e.Size()
			}
			hs = append(hs, head{e, n, cold})
		}
	}
	m.rmu.RUnlock()
	slices.SortFunc(hs, func(a, b head) int { return strings.Compare(a.e.Topic, b.e.Topic) })
	var out []*Envelope
	bytes := 0
	for _, h := range hs {
		if len(out) == limit || len(out) > 0 && bytes+h.size-len(h.e.Topic) > maxBytes {
			return out, true, nil
		}
		bytes += h.size - len(h.e.Topic)
		if !h.cold {
			out = append(out, h.e)
			continue
		}
		out = append(out, m.readCold(ctx, []string{h.e.Topic})...)
	}
	return out, false, nil
}

var _ RetainedPager = (*Memory)(nil)

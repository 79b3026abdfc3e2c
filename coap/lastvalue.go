package coap

import (
	"container/list"
	"context"
	"sync"

	"github.com/hubsmith/hub/broker"
)

// lastValues remembers the newest envelope of recently used topics, so
// that GET can read a topic's last value even when it was not retained.
// It is bounded by entry count and payload bytes, least recently
// updated first out.
type lastValues struct {
	mu       sync.Mutex
	max      int
	maxBytes int
	bytes    int
	m        map[string]*list.Element
	l        *list.List // of *broker.Envelope, most recent at the front
}

func newLastValues(maxEntries, maxBytes int) *lastValues {
	return &lastValues{max: maxEntries, maxBytes: maxBytes, m: make(map[string]*list.Element), l: list.New()}
}

// handle is the bus handler of the adapter's "#" subscription.
func (lv *lastValues) handle(_ context.Context, e *broker.Envelope) error {
	lv.put(e)
	return nil
}

// put records e as its topic's last value unless a newer one is known; a
// retained envelope with an empty payload (a clear) forgets the topic.
func (lv *lastValues) put(e *broker.Envelope) {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	if el, ok := lv.m[e.Topic]; ok {
		old := el.Value.(*broker.Envelope)
		if old.Time.After(e.Time) {
			return
		}
		lv.remove(el)
	}
	if e.Retain && len(e.Payload) == 0 {
		return
	}
	if len(e.Payload) > lv.maxBytes {
		return
	}
	lv.m[e.Topic] = lv.l.PushFront(e)
	lv.bytes += len(e.Payload)
	for lv.l.Len() > lv.max || lv.bytes > lv.maxBytes {
		lv.remove(lv.l.Back())
	}
}

func (lv *lastValues) remove(el *list.Element) {
	e := lv.l.Remove(el).(*broker.Envelope)
	delete(lv.m, e.Topic)
	lv.bytes -= len(e.Payload)
}

// get returns the last value of a topic, or the newest of the topics a
// filter matches; nil when there is none.
func (lv *lastValues) get(topic string) *broker.Envelope {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	if !broker.IsFilter(topic) {
		if el, ok := lv.m[topic]; ok {
			return el.Value.(*broker.Envelope)
		}
		return nil
	}
	var best *broker.Envelope
	for el := lv.l.Front(); el != nil; el = el.Next() {
		e := el.Value.(*broker.Envelope)
		if broker.Match(topic, e.Topic) && (best == nil || e.Time.After(best.Time)) {
			best = e
		}
	}
	return best
}

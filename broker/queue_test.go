package broker

import "testing"

// TestMemQueueReusesItsArray: a subscription's in-memory queue that is
// read as it fills moves back to the start of its array instead of
// growing new ones, keeps its order, and an emptied queue keeps at most
// keptQueueCap slots.
func TestMemQueueReusesItsArray(t *testing.T) {
	s := &memSub{window: 1 << 30}
	var arrays []*[]*item
	seen := func() {
		if len(arrays) == 0 || cap(*arrays[len(arrays)-1]) != cap(s.memBuf) {
			b := s.memBuf
			arrays = append(arrays, &b)
		}
	}
	next, want := 0, 0
	for round := range 1000 {
		// Three in, two out: the queue grows slowly while it is read.
		for range 3 {
			s.mu.Lock()
			s.push(&item{ready: true, order: uint64(next)})
			s.mu.Unlock()
			next++
			seen()
		}
		for range 2 {
			it, _ := s.next(0)
			if it == nil || it.order != uint64(want) {
				t.Fatalf("round %d: got %v, want item %d", round, it, want)
			}
			want++
			s.pending--
		}
	}
	// 1,000 items left: arrays of 8, 16, ... 2,048 at most.
	if len(arrays) > 9 {
		t.Errorf("%d arrays made for a queue of %d, want at most 9", len(arrays), len(s.mem))
	}
	for len(s.mem) > 0 {
		if it, _ := s.next(0); it == nil || it.order != uint64(want) {
			t.Fatalf("draining: got %v, want item %d", it, want)
		}
		want++
		s.pending--
	}
	if it, _ := s.next(0); it != nil {
		t.Fatalf("empty queue gave %v", it)
	}
	if cap(s.memBuf) > keptQueueCap || cap(s.mem) > keptQueueCap {
		t.Errorf("an emptied queue keeps %d slots, want at most %d", cap(s.memBuf), keptQueueCap)
	}
}

package mqtt

import "testing"

// TestQueueOrderOldest: oldest follows numbering across completions,
// renumbering and messages loaded out of order, and skips keep.
func TestQueueOrderOldest(t *testing.T) {
	o := newQueueOrder()
	for pid := uint16(1); pid <= 5; pid++ {
		o.add("c", pid, "", 10)
	}
	steps := []struct {
		do   func()
		keep uint16
		want uint16
		ok   bool
	}{
		{func() {}, 0, 1, true},
		{func() {}, 1, 2, true},
		{func() { o.done("c", 1) }, 0, 2, true},
		{func() { o.add("c", 2, "", 10) }, 0, 3, true}, // 2 renumbered: now the newest
		{func() { o.done("c", 3); o.done("c", 4); o.done("c", 5) }, 0, 2, true},
		{func() {}, 2, 0, false},
		{func() { o.done("c", 2) }, 0, 0, false},
		// Loaded from the store in another order.
		{func() { o.set("d", 7, 30, "", 1); o.set("d", 8, 10, "", 1); o.set("d", 9, 20, "", 1) }, 0, 0, false},
	}
	for i, st := range steps {
		st.do()
		if got, ok := o.oldest("c", st.keep); got != st.want || ok != st.ok {
			t.Errorf("step %d: oldest(c, keep %d) = %d %v, want %d %v", i, st.keep, got, ok, st.want, st.ok)
		}
	}
	if got, ok := o.oldest("d", 0); !ok || got != 8 {
		t.Errorf("oldest of loaded d = %d %v, want 8", got, ok)
	}
	if o.bytes("c") != 0 || o.bytes("d") != 3 {
		t.Errorf("bytes c %d, d %d; want 0, 3", o.bytes("c"), o.bytes("d"))
	}
	// Many completions behind one message that stays keep the fifo small.
	o.add("e", 1, "", 1)
	for i := range 10000 {
		pid := uint16(2 + i%1000)
		o.add("e", pid, "", 1)
		o.done("e", pid)
	}
	o.mu.Lock()
	n := len(o.fifo["e"])
	o.mu.Unlock()
	if n > 200 {
		t.Errorf("fifo of e holds %d entries for 1 message", n)
	}
	if got, _ := o.oldest("e", 0); got != 1 {
		t.Errorf("oldest of e = %d, want 1", got)
	}
}

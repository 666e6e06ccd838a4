package producer

import "testing"

func TestIDWindowForgetsOldest(t *testing.T) {
	w := newIDWindow(3)
	for _, id := range []int64{1, 2, 3} {
		if !w.add(id) {
			t.Fatalf("add(%d) reported a duplicate in an empty window", id)
		}
	}
	if w.add(2) {
		t.Errorf("add(2) again: want duplicate")
	}
	if !w.add(4) { // evicts 1
		t.Errorf("add(4): want new")
	}
	if !w.add(1) { // 1 was forgotten; evicts 2
		t.Errorf("add(1) after eviction: want new")
	}
	if !w.add(2) {
		t.Errorf("add(2) after eviction: want new")
	}
	if w.len() != 3 {
		t.Errorf("len = %d, want 3", w.len())
	}
}

// An id removed after a failed produce and added again must stay
// remembered when its old slot is reused.
func TestIDWindowRemoveThenAdd(t *testing.T) {
	w := newIDWindow(3)
	w.add(1)
	w.add(2)
	w.remove(1)
	if !w.add(1) { // new slot 2; slot 0 still says 1
		t.Fatalf("add(1) after remove: want new")
	}
	w.add(3) // reuses slot 0, whose stale 1 must not evict the live 1
	if w.add(1) {
		t.Errorf("1 was forgotten when its stale slot was reused")
	}
}

package producer

import "sync"

// idWindow remembers the last n killmail ids added, so a killmail a source
// delivers again is dropped. Memory is bounded: a ring of n ids plus a map
// from id to its slot, about 40 bytes per id (40 MB for a million).
type idWindow struct {
	mu   sync.Mutex
	ring []int64
	next int           // slot the next id goes in
	slot map[int64]int // id -> its slot in ring
}

func newIDWindow(n int) *idWindow {
	return &idWindow{ring: make([]int64, 0, n), slot: make(map[int64]int)}
}

// add records id and reports whether it was new. When the window is full,
// the oldest id is forgotten.
func (w *idWindow) add(id int64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.slot[id]; ok {
		return false
	}
	if len(w.ring) < cap(w.ring) {
		w.ring = append(w.ring, id)
		w.slot[id] = len(w.ring) - 1
		return true
	}
	old := w.ring[w.next]
	// A removed id may have been added again into a newer slot; only forget
	// it if this slot is the one the map points at.
	if s, ok := w.slot[old]; ok && s == w.next {
		delete(w.slot, old)
	}
	w.ring[w.next] = id
	w.slot[id] = w.next
	w.next = (w.next + 1) % len(w.ring)
	return true
}

// remove forgets id, so a killmail that failed to be produced is not
// dropped as a duplicate when a source delivers it again.
func (w *idWindow) remove(id int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.slot, id)
}

// len returns how many ids the window remembers.
func (w *idWindow) len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.slot)
}

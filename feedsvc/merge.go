package feedsvc

import "math"

// merge takes events from t, oldest first, up to limit of them and about
// maxBytes of killmail JSON (always at least one), and records the position
// after each source's last one taken.
//
// Its cost is the batch's, not the merge's width: it visits only the
// sources the batch takes from. Walking all of a 1,000-system stream's
// sources twice per 500-event batch was four visits per event, each a
// cache miss once sending the batch had streamed its killmails through
// the cache.
func (res *readResult) merge(t *mergeTree, limit, maxBytes int) {
	for _, si := range t.taken {
		t.took[si].next = 0
	}
	t.taken = t.taken[:0]
	// Sized once: growing the result event by event was a tenth of a long
	// read.
	res.events = make([]*event, 0, min(t.left, limit))
	size := 0
	for !t.empty() {
		w := t.losers[0]
		l := &t.leaves[w]
		e := l.events[l.next]
		if len(res.events) >= limit || (len(res.events) > 0 && size+len(e.json) > maxBytes) {
			res.more = true
			res.rest = t
			break
		}
		res.events = append(res.events, e)
		size += len(e.json)
		si := l.source()
		took := &t.took[si]
		if took.next == 0 {
			t.taken = append(t.taken, si)
		}
		took.next = e.offset + 1
		t.advance(w)
	}
	// One position per source rather than one per event, which was a
	// quarter of a long read.
	res.next = make([]position, 0, len(t.taken))
	for _, si := range t.taken {
		took := &t.took[si]
		took.done = took.next
		res.next = append(res.next, position{t.srcs[si].key, took.next})
	}
	if !res.more {
		res.cursor = t.final()
	}
}

const (
	// minRunSources is how many of a merge's sources one partition must
	// hold for them to be merged as a run (see partRun): below it, a few
	// more levels of the tree cost less than placing.
	minRunSources = 16
	// maxRunSpan bounds the offsets a run places at a time: a merge's
	// slots take 32 B each.
	maxRunSpan = 8192
)

// runSpan returns how many offsets at a time a run of k sources should
// place, which hold n events between offsets lo and hi; or 0 if the tree
// merges them for less.
//
// A span visits each of the run's sources once and reads each of its slots
// once: it is sized to place about eight events per source, and a run is
// not worth it when a span would place fewer than two per source or the
// events are so sparse that slots outnumber them 64 to one.
func runSpan(k, n int, lo, hi int64) int {
	width := hi - lo + 1
	if k < minRunSources || width > 64*int64(n) {
		return 0
	}
	span := min(int64(8*k)*width/int64(n), maxRunSpan)
	if int64(n)*span/width < int64(2*k) {
		return 0
	}
	return int(span)
}

// mergeTree merges sources by delivery order (event.before): a tournament
// tree of losers whose leaves are the sources, except that the sources on
// one partition whose events are in delivery order by offset share one leaf,
// a run (see partRun).
//
// Taking an event replays one path from a leaf to the root, one comparison
// per level, where a binary heap's sift makes two; and each leaf carries
// its first event's order key, so comparisons read the tree's own arrays
// rather than following pointers into events spread over memory.
type mergeTree struct {
	srcs []source
	// took[i] is what the merge's batches took from srcs[i]; taken lists
	// the sources the current batch took from, in the order first taken.
	// A batch then costs what it takes, not the merge's width.
	took  []took
	taken []int32
	// left counts the events not yet taken.
	left int
	// skips holds the position past the records retention removed ahead
	// of a client (rare), a gap or not: a system-partition the merge
	// delivers from is past it anyway.
	skips  map[sysPart]int64
	leaves []leaf
	// heads[i] is leaves[i]'s first event's key, or exhausted once the
	// leaf is.
	heads []orderKey
	// losers[n], for an internal node n ≥ 1, is the leaf that lost the
	// match played there; losers[0] is the overall winner. Node n's
	// children are 2n and 2n+1; leaf i is node len(leaves)+i.
	losers []int
	// slots is where runs place events by offset, one run at a time.
	slots []placed
}

// took is what a merge took from one source: the position after the last
// event the current batch took (0 while it took none), and the same over
// every batch.
type took struct {
	next, done int64
}

// leaf is what the tree merges: one source's events, or a run's next
// events in delivery order.
type leaf struct {
	events []*event
	keys   []orderKey // keys[i] is events[i].orderKey()
	// next is the index of the leaf's first event not yet taken. An index,
	// not a reslice: writing a slice's pointer is a write barrier while
	// the collector runs, which taking each event paid.
	next int
	// src is the index in mergeTree.srcs of every event's source, for a
	// leaf of one source; a run's leaf's events are its placed events,
	// whose sources it keeps.
	src int32
	run *partRun
}

// source returns the index of the leaf's first event's source.
func (l *leaf) source() int32 {
	if r := l.run; r != nil {
		return r.srcOf[l.next]
	}
	return l.src
}

// partRun merges the sources of one partition whose events are in delivery
// order by offset: memory saw the partition's timestamps never go back over
// them (partState.orderedFrom), and their arrival order is offset order. It
// places each source's events with offsets in the next span at their
// offset, then reads the placed ones in order: its cost per event does not
// grow with its sources, where the tree's replay costs a comparison per
// level. A stream of 1,000 systems on 16 partitions merges 16 runs, not
// 1,000 sources.
type partRun struct {
	// srcs lists the indices of the run's sources with events not yet
	// placed.
	srcs []int32
	// base is the lowest offset not yet placed; span is how many it
	// places at a time (runSpan).
	base int64
	span int
	// The placed events, their keys and sources, reused from one span to
	// the next.
	events []*event
	keys   []orderKey
	srcOf  []int32
}

// placed is a slot of a run's span: the event at its offset, if any, its
// key and its source.
type placed struct {
	e   *event
	key orderKey
	src int32
}

// exhausted is the head of a leaf with no events left: it sorts after
// every event's key, so the tree's matches need no test for it but the
// rare one between two exhausted leaves. An event's arrival number never
// reaches it.
var exhausted = orderKey{timeMS: math.MaxInt64, seq: math.MaxUint64}

// newMergeTree starts a merge of srcs; skips holds the positions the read
// moved past removed records (nil for none).
func newMergeTree(srcs []source, skips map[sysPart]int64) *mergeTree {
	t := &mergeTree{srcs: srcs, skips: skips, took: make([]took, len(srcs)), taken: make([]int32, 0, len(srcs)), leaves: make([]leaf, 0, len(srcs))}
	for i := range srcs {
		t.left += len(srcs[i].events)
	}
	// Only a merge of many sources can hold enough of one partition for a
	// run; a Poll of a few systems skips grouping them, which cost it a
	// map and a slice per partition.
	var inOrder map[int32][]int32 // partition → its sources in offset order
	if len(srcs) >= minRunSources {
		inOrder = map[int32][]int32{}
		for i := range srcs {
			if srcs[i].inOrder {
				inOrder[srcs[i].key.partition] = append(inOrder[srcs[i].key.partition], int32(i))
			}
		}
	}
	for i := range srcs {
		if inOrder == nil || !srcs[i].inOrder {
			t.leaves = append(t.leaves, t.sourceLeaf(int32(i)))
		}
	}
	for _, ps := range inOrder {
		n, lo, hi := 0, srcs[ps[0]].offsets[0], int64(0)
		for _, si := range ps {
			offs := srcs[si].offsets
			n += len(offs)
			lo, hi = min(lo, offs[0]), max(hi, offs[len(offs)-1])
		}
		span := runSpan(len(ps), n, lo, hi)
		if span == 0 {
			for _, si := range ps {
				t.leaves = append(t.leaves, t.sourceLeaf(si))
			}
			continue
		}
		if len(t.slots) < span {
			t.slots = make([]placed, span)
		}
		t.leaves = append(t.leaves, leaf{run: &partRun{srcs: ps, base: lo, span: span}})
		t.place(&t.leaves[len(t.leaves)-1])
	}

	k := len(t.leaves)
	t.heads, t.losers = make([]orderKey, k), make([]int, max(k, 1))
	if k == 0 {
		return t
	}
	for i := range t.leaves {
		t.heads[i] = t.leaves[i].head()
	}
	// Play every match bottom-up, keeping each one's winner to play on.
	winners := make([]int, 2*k)
	for i := range k {
		winners[k+i] = i
	}
	for n := k - 1; n >= 1; n-- {
		a, b := winners[2*n], winners[2*n+1]
		if t.less(b, a) {
			a, b = b, a
		}
		winners[n], t.losers[n] = a, b
	}
	t.losers[0] = winners[1]
	return t
}

// sourceLeaf returns the leaf of srcs[si] alone.
func (t *mergeTree) sourceLeaf(si int32) leaf {
	return leaf{events: t.srcs[si].events, keys: t.srcs[si].keys, src: si}
}

// head returns the leaf's first event's key, or exhausted.
func (l *leaf) head() orderKey {
	if l.next == len(l.keys) {
		return exhausted
	}
	return l.keys[l.next]
}

// place fills a run's leaf with its next placed events, spans on until it
// places one or its sources are exhausted.
//
// It reads the sources' offsets and keys, not their events: a run's events
// are spread over memory, and loading each to learn its offset was a cache
// miss an event.
func (t *mergeTree) place(l *leaf) {
	r := l.run
	evs, keys, srcOf := r.events[:0], r.keys[:0], r.srcOf[:0]
	for len(evs) == 0 && len(r.srcs) > 0 {
		end := r.base + int64(r.span)
		next := int64(-1) // the lowest offset left after this span
		live := r.srcs[:0]
		for _, si := range r.srcs {
			src := &t.srcs[si]
			i := 0
			for ; i < len(src.offsets) && src.offsets[i] < end; i++ {
				t.slots[src.offsets[i]-r.base] = placed{src.events[i], src.keys[i], si}
			}
			if src.entries = src.from(i); len(src.offsets) > 0 {
				live = append(live, si)
				if o := src.offsets[0]; next < 0 || o < next {
					next = o
				}
			}
		}
		r.srcs = live
		for i, p := range t.slots[:r.span] {
			if p.e != nil {
				evs, keys, srcOf = append(evs, p.e), append(keys, p.key), append(srcOf, p.src)
				t.slots[i] = placed{}
			}
		}
		// Skip offsets none of the run's sources has.
		r.base = max(end, next)
	}
	r.events, r.keys, r.srcOf = evs, keys, srcOf
	l.events, l.keys, l.next = evs, keys, 0
}

// skipPositions returns the positions past removed records of the system-
// partitions the merge has delivered nothing from yet.
func (t *mergeTree) skipPositions() []position {
	if len(t.skips) == 0 {
		return nil
	}
	delivered := make(map[sysPart]bool, len(t.srcs))
	for i, src := range t.srcs {
		if t.took[i].done > 0 {
			delivered[src.key] = true
		}
	}
	var out []position
	for k, o := range t.skips {
		if !delivered[k] {
			out = append(out, position{k, o})
		}
	}
	return out
}

// final returns the positions after everything the merge delivered, over
// all its batches, and past the removed records it skipped.
func (t *mergeTree) final() []position {
	out := make([]position, 0, len(t.srcs)+len(t.skips))
	for i, src := range t.srcs {
		if done := t.took[i].done; done > 0 {
			out = append(out, position{src.key, done})
		}
	}
	return append(out, t.skipPositions()...)
}

// empty reports whether every source is exhausted.
func (t *mergeTree) empty() bool {
	return len(t.heads) == 0 || t.heads[t.losers[0]] == exhausted
}

// less orders leaves i and j by their first events, exhausted ones last.
func (t *mergeTree) less(i, j int) bool {
	a, b := &t.heads[i], &t.heads[j]
	// orderKey.less, written out: its equality test first cost a tenth of
	// a 1,000-system merge.
	switch {
	case a.timeMS != b.timeMS:
		return a.timeMS < b.timeMS
	case a.seq != b.seq:
		return a.seq < b.seq
	case *a == exhausted:
		return false
	}
	li, lj := &t.leaves[i], &t.leaves[j]
	return li.events[li.next].before(lj.events[lj.next])
}

// advance drops leaf w's first event, w having won, and replays its path.
func (t *mergeTree) advance(w int) {
	t.left--
	l := &t.leaves[w]
	l.next++
	if l.run != nil && l.next == len(l.events) {
		t.place(l)
	}
	t.heads[w] = l.head()
	for n := (w + len(t.leaves)) / 2; n >= 1; n /= 2 {
		if o := t.losers[n]; t.less(o, w) {
			t.losers[n], w = w, o
		}
	}
	t.losers[0] = w
}

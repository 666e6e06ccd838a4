package feedsvc

import (
	"sync"

	"github.com/killfeed/killfeed/offsets"
)

// positionSet is where a client stands in the systems a read asks for: a
// stream's cursor (a map), or a Poll's few positions, searched in turn.
// Up to a dozen or so, a search costs less than hashing into a map, and a
// Poll need not build one: filling, searching and clearing a map was half of
// a caught-up Poll's own work.
type positionSet struct {
	// byKey indexes the positions; when it is nil they are few.
	byKey map[sysPart]int64
	few   []offsets.Position
}

// maxSearchedPositions is the most positions a positionSet searches in
// turn rather than indexing them in a map.
const maxSearchedPositions = 16

// positionsIn returns a set of the positions in m.
func positionsIn(m map[sysPart]int64) positionSet { return positionSet{byKey: m} }

// at returns the client's position on k, if it has one.
func (p positionSet) at(k sysPart) (int64, bool) {
	if p.byKey != nil {
		o, ok := p.byKey[k]
		return o, ok
	}
	for i := range p.few {
		if q := &p.few[i]; q.SystemID == k.system && q.Partition == k.partition {
			return q.Offset, true
		}
	}
	return 0, false
}

// count returns how many positions the set holds.
func (p positionSet) count() int {
	if p.byKey != nil {
		return len(p.byKey)
	}
	return len(p.few)
}

// keys calls fn with each position's system-partition.
func (p positionSet) keys(fn func(k sysPart)) {
	if p.byKey != nil {
		for k := range p.byKey {
			fn(k)
		}
		return
	}
	for _, q := range p.few {
		fn(sysPart{q.SystemID, q.Partition})
	}
}

// positionsMap indexes ps by system-partition into m, or a new map if m is
// nil.
func positionsMap(ps []offsets.Position, m map[sysPart]int64) map[sysPart]int64 {
	if m == nil {
		m = make(map[sysPart]int64, len(ps))
	}
	for _, p := range ps {
		m[sysPart{p.SystemID, p.Partition}] = p.Offset
	}
	return m
}

// positionLookups reuses the positions a Poll or Next reads with, which it
// drops once its read returns: a caught-up Poll is little more than this
// lookup, and its slice and map were a third of the bytes it allocated.
// A stream keeps its positions as its cursor, so it does not use these.
type positionLookups struct{ pool sync.Pool }

// positionLookup is one read's positions: ps, and m indexing them when
// they are too many to search.
type positionLookup struct {
	ps []offsets.Position
	m  map[sysPart]int64
}

// maxPooledPositions bounds the positions a pooled lookup keeps: clearing
// a map costs its capacity, which a rare 1,000-system Poll would leave
// behind for every Poll after it.
const maxPooledPositions = 64

// get returns the client's positions in systems.
func (l *positionLookups) get(store *offsets.Store, client string, systems []int64) *positionLookup {
	pl, _ := l.pool.Get().(*positionLookup)
	if pl == nil {
		pl = &positionLookup{}
	}
	pl.ps = store.AppendPositionsIn(pl.ps[:0], client, systems)
	if len(pl.ps) > maxSearchedPositions {
		pl.m = positionsMap(pl.ps, pl.m)
	}
	return pl
}

// set returns the lookup's positions as a set, valid until put.
func (pl *positionLookup) set() positionSet {
	if len(pl.ps) > maxSearchedPositions {
		return positionSet{byKey: pl.m}
	}
	return positionSet{few: pl.ps}
}

// put returns pl for reuse; nothing may use it after.
func (l *positionLookups) put(pl *positionLookup) {
	if len(pl.ps) > maxPooledPositions {
		return
	}
	clear(pl.m)
	l.pool.Put(pl)
}

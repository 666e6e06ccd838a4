package feedsvc

import (
	"slices"
	"sync"
)

// sysPart names one system's records on one partition: the unit of ordering
// and of positions.
type sysPart struct {
	system    int64
	partition int32
}

// sysLog is what memory knows of one system on one partition.
type sysLog struct {
	// entries, ascending by offset, all at or above floor.
	entries
	// floor: memory holds every event of the system at or above this
	// offset. Below it, events may still be in Kafka (evicted from memory
	// by the per-system bound) or gone (retention).
	floor int64
	// removed lists offsets of the system's events that retention (or the
	// consumed-records trim) deleted, ascending, so a client behind them is
	// told how many it lost. It is exact for offsets at or above
	// removedKnownFrom.
	removed          []int64
	removedKnownFrom int64
}

// partState is what memory knows of one partition.
type partState struct {
	// loadStart is the log start when this process began reading: events
	// below it were never seen.
	loadStart int64
	// logStart is the partition's current log start offset.
	logStart int64
	// next is the offset after the last record applied: memory is complete
	// up to (not including) next.
	next int64
	// orderedFrom is the lowest offset from which the partition's events
	// in memory have timestamps that never go back, so that their delivery
	// order (time, then arrival) is offset order; lastTimeMS is the last
	// event's timestamp. A merge of many systems relies on it (partRun).
	orderedFrom, lastTimeMS int64
}

// onPartition is a system's log on one partition, and the partition's
// state.
type onPartition struct {
	partition int32
	state     *partState
	log       *sysLog
}

// memory is the bounded in-memory index of the killmails topic.
//
// Event slices are only ever appended to or resliced from the front, never
// overwritten, so a reader may keep a slice it took under the read lock.
type memory struct {
	maxPerSystem int

	mu    sync.RWMutex
	logs  map[sysPart]*sysLog
	parts map[int32]*partState
	// bySystem lists the partitions a system has records on (almost always
	// one) with its log there, so a read of a system costs one lookup: it
	// need not scan every partition, nor look up each log and partition.
	bySystem map[int64][]onPartition
	// seq numbers events in the order they were read.
	seq uint64
}

func newMemory(maxPerSystem int) *memory {
	return &memory{
		maxPerSystem: maxPerSystem,
		logs:         map[sysPart]*sysLog{},
		parts:        map[int32]*partState{},
		bySystem:     map[int64][]onPartition{},
	}
}

// startPartition records where reading a partition begins. mu must be held.
func (m *memory) startPartitionLocked(p int32, logStart int64) *partState {
	ps := m.parts[p]
	if ps == nil {
		ps = &partState{loadStart: logStart, logStart: logStart, next: logStart}
		m.parts[p] = ps
	}
	return ps
}

// appendLocked stores an event read from the tail. mu must be held.
func (m *memory) appendLocked(e *event) {
	ps := m.startPartitionLocked(e.partition, e.offset)
	ps.next = e.offset + 1
	if e.timeMS < ps.lastTimeMS {
		ps.orderedFrom = e.offset
	}
	ps.lastTimeMS = e.timeMS
	m.seq++
	e.seq = m.seq
	k := sysPart{e.system, e.partition}
	l := m.logs[k]
	if l == nil {
		l = &sysLog{floor: ps.loadStart, removedKnownFrom: ps.loadStart}
		m.logs[k] = l
		m.bySystem[e.system] = append(m.bySystem[e.system], onPartition{e.partition, ps, l})
	}
	l.add(e)
	if over := len(l.events) - m.maxPerSystem; over > 0 {
		// The evicted events are still in Kafka: a client that needs them
		// is served from there. Retention of them can no longer be
		// counted, so the loss count becomes unknown below the new floor.
		l.floor = l.events[over].offset
		l.removedKnownFrom = max(l.removedKnownFrom, l.floor)
		l.entries = l.from(over)
	}
}

// advanceLogStart applies a new log start of a partition (retention or
// DeleteRecords): events below it leave memory and are remembered as
// removed. It returns how many events were removed.
func (m *memory) advanceLogStart(p int32, logStart int64) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	ps := m.parts[p]
	if ps == nil {
		m.startPartitionLocked(p, logStart)
		return 0
	}
	if logStart <= ps.logStart {
		return 0
	}
	ps.logStart = logStart
	if ps.next < logStart {
		ps.next = logStart
	}
	removed := 0
	for k, l := range m.logs {
		if k.partition != p {
			continue
		}
		n := l.search(logStart)
		l.removed = append(l.removed, l.offsets[:n]...)
		removed += n
		l.entries = l.from(n)
		l.floor = max(l.floor, logStart)
		if over := len(l.removed) - m.maxPerSystem; over > 0 {
			l.removedKnownFrom = l.removed[over-1] + 1
			l.removed = l.removed[over:]
		}
	}
	return removed
}

// lostBetween counts the system's events that were removed in [from, to),
// and says whether the count is exact. l is nil when memory has never seen
// the system on ps's partition, which had none of its events from
// ps.loadStart on.
func (l *sysLog) lostBetween(ps *partState, from, to int64) (lost int64, exact bool) {
	if l == nil {
		return 0, from >= ps.loadStart
	}
	if from < l.removedKnownFrom {
		return 0, false
	}
	lo, _ := slices.BinarySearch(l.removed, from)
	hi, _ := slices.BinarySearch(l.removed, to)
	return int64(hi - lo), true
}

// after returns the entries of l at or above offset from.
func (l *sysLog) after(from int64) entries {
	if l == nil || len(l.offsets) == 0 || from > l.offsets[len(l.offsets)-1] {
		// Nothing new, as for nearly every Poll: no search.
		return entries{}
	}
	return l.from(l.search(from))
}

// entries are events in offset order with their order keys and offsets
// beside them, in arrays of their own: a stream merging a thousand systems
// reads the next key of each, and places events by offset (see mergeTree),
// from these arrays, densely, rather than from each event.
//
// Like the events, they are only appended to or resliced from the front,
// never overwritten, so a reader may keep them.
type entries struct {
	events  []*event
	keys    []orderKey // keys[i] is events[i].orderKey()
	offsets []int64    // offsets[i] is events[i].offset
}

// entriesOf returns evs's entries.
func entriesOf(evs []*event) entries {
	x := entries{events: evs, keys: make([]orderKey, len(evs)), offsets: make([]int64, len(evs))}
	for i, e := range evs {
		x.keys[i], x.offsets[i] = e.orderKey(), e.offset
	}
	return x
}

// add appends e.
func (x *entries) add(e *event) {
	x.events = append(x.events, e)
	x.keys = append(x.keys, e.orderKey())
	x.offsets = append(x.offsets, e.offset)
}

// from returns the entries from the i-th on.
func (x entries) from(i int) entries {
	return entries{x.events[i:], x.keys[i:], x.offsets[i:]}
}

// search returns the index of the first entry at or above offset.
func (x entries) search(offset int64) int {
	i, _ := slices.BinarySearch(x.offsets, offset)
	return i
}

// then returns x followed by y, in new arrays.
func (x entries) then(y entries) entries {
	return entries{
		events:  append(x.events[:len(x.events):len(x.events)], y.events...),
		keys:    append(x.keys[:len(x.keys):len(x.keys)], y.keys...),
		offsets: append(x.offsets[:len(x.offsets):len(x.offsets)], y.offsets...),
	}
}

// stats reports how many events and systems memory holds.
func (m *memory) stats() (events, systems int) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, l := range m.logs {
		events += len(l.events)
	}
	return events, len(m.bySystem)
}

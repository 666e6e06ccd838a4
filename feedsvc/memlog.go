package feedsvc

import (
	"sort"
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
	// events, ascending by offset, all at or above floor.
	events []*event
	// keys[i] is events[i].orderKey(). A stream merging a thousand
	// systems compares the next event of each; it reads the keys here,
	// densely, rather than from each event (see mergeTree).
	keys []orderKey
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
	// one), so reads need not scan every partition.
	bySystem map[int64][]int32
	// seq numbers events in the order they were read.
	seq uint64
}

func newMemory(maxPerSystem int) *memory {
	return &memory{
		maxPerSystem: maxPerSystem,
		logs:         map[sysPart]*sysLog{},
		parts:        map[int32]*partState{},
		bySystem:     map[int64][]int32{},
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
	m.seq++
	e.seq = m.seq
	k := sysPart{e.system, e.partition}
	l := m.logs[k]
	if l == nil {
		l = &sysLog{floor: ps.loadStart, removedKnownFrom: ps.loadStart}
		m.logs[k] = l
		m.bySystem[e.system] = append(m.bySystem[e.system], e.partition)
	}
	l.events = append(l.events, e)
	l.keys = append(l.keys, e.orderKey())
	if over := len(l.events) - m.maxPerSystem; over > 0 {
		// The evicted events are still in Kafka: a client that needs them
		// is served from there. Retention of them can no longer be
		// counted, so the loss count becomes unknown below the new floor.
		l.floor = l.events[over].offset
		l.removedKnownFrom = max(l.removedKnownFrom, l.floor)
		l.events, l.keys = l.events[over:], l.keys[over:]
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
		n := sort.Search(len(l.events), func(i int) bool { return l.events[i].offset >= logStart })
		for _, e := range l.events[:n] {
			l.removed = append(l.removed, e.offset)
		}
		removed += n
		l.events, l.keys = l.events[n:], l.keys[n:]
		l.floor = max(l.floor, logStart)
		if over := len(l.removed) - m.maxPerSystem; over > 0 {
			l.removedKnownFrom = l.removed[over-1] + 1
			l.removed = l.removed[over:]
		}
	}
	return removed
}

// lostBetween counts the system's events that were removed in [from, to),
// or returns 0 when memory cannot know.
func (l *sysLog) lostBetween(from, to int64) int64 {
	if l == nil || from < l.removedKnownFrom {
		return 0
	}
	lo := sort.Search(len(l.removed), func(i int) bool { return l.removed[i] >= from })
	hi := sort.Search(len(l.removed), func(i int) bool { return l.removed[i] >= to })
	return int64(hi - lo)
}

// after returns the events of l at or above offset from, and their keys.
func (l *sysLog) after(from int64) ([]*event, []orderKey) {
	if l == nil {
		return nil, nil
	}
	i := sort.Search(len(l.events), func(i int) bool { return l.events[i].offset >= from })
	return l.events[i:], l.keys[i:]
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

package feedsvc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// gap is a loss report for one system on one partition: records in
// [from, to) were removed before the client read them.
type gap struct {
	system    int64
	partition int32
	from, to  int64
	lost      int64
}

// readResult is what a read found for a client.
type readResult struct {
	events []*event
	gaps   []gap
	// more is true when events remained beyond the limit.
	more bool
	// next holds, per system and partition, the position after the last
	// event delivered, or after a gap; committing it records the read.
	next map[sysPart]int64
	// rest, when more is true, is the merge of what remained: readMore
	// continues it.
	rest mergeHeap
}

// source is one system-partition's events to merge, oldest first.
type source struct {
	key    sysPart
	events []*event
	// next is the position after the last event the merge took from this
	// source, 0 while it took none.
	next int64
}

// backlog is a piece of a read memory cannot serve: the system's events in
// [from, to) are below memory's floor but still in Kafka.
type backlog struct {
	key      sysPart
	from, to int64
}

// read finds the events after a client's positions in the given systems,
// oldest first, at most limit of them and about maxBytes of killmail JSON
// (always at least one). Its cost grows with the systems asked and the
// events returned, not with what memory holds.
func (s *Service) read(ctx context.Context, systems []int64, pos map[sysPart]int64, limit, maxBytes int) (readResult, error) {
	res := readResult{next: map[sysPart]int64{}}
	var srcs []*source
	var backlogs []backlog

	m := s.mem
	m.mu.RLock()
	m.eachSysPartLocked(systems, pos, func(k sysPart, ps *partState, l *sysLog) {
		sys, p := k.system, k.partition
		from, has := pos[k]
		if !has {
			// A client new to the system gets everything retained.
			from = ps.logStart
		}
		if from < ps.logStart {
			res.gaps = append(res.gaps, gap{system: sys, partition: p, from: from, to: ps.logStart, lost: l.lostBetween(from, ps.logStart)})
			from = ps.logStart
			res.next[k] = from
		}
		floor := ps.loadStart
		if l != nil {
			floor = l.floor
		}
		if from < floor {
			backlogs = append(backlogs, backlog{key: k, from: from, to: floor})
		}
		if evs := l.after(max(from, floor)); len(evs) > 0 {
			srcs = append(srcs, &source{key: k, events: evs})
		}
	})
	m.mu.RUnlock()

	for _, b := range backlogs {
		evs, err := s.readKafka(ctx, b, limit)
		if err != nil {
			return readResult{}, err
		}
		if len(evs) == 0 {
			continue
		}
		merged := false
		for _, src := range srcs {
			if src.key == b.key {
				src.events = append(evs, src.events...)
				merged = true
			}
		}
		if !merged {
			srcs = append(srcs, &source{key: b.key, events: evs})
		}
	}

	h := mergeHeap(srcs)
	h.init()
	res.merge(h, limit, maxBytes)
	return res, nil
}

// readMore continues a read that stopped at its limit (res.more) from the
// merge it left (res.rest), without visiting the systems again: a stream
// catching up in batches costs what it sends, where a new read per batch
// cost the stream's systems per batch, which made a 1,000-system stream
// catch up at a third of a 1-system one's rate. Events stored since the
// first read are not in rest; they reach the stream as live events.
func readMore(rest mergeHeap, limit, maxBytes int) readResult {
	res := readResult{next: make(map[sysPart]int64, min(len(rest), limit))}
	res.merge(rest, limit, maxBytes)
	return res
}

// merge takes events from h, oldest first, up to limit of them and about
// maxBytes of killmail JSON (always at least one), and records the position
// after each source's last one taken.
func (res *readResult) merge(h mergeHeap, limit, maxBytes int) {
	// The heap reorders and shrinks h, but every source of this merge stays
	// in all's array, for the positions written below.
	all := h
	avail := 0
	for _, src := range all {
		src.next = 0
		avail += len(src.events)
	}
	// Sized once: growing the result event by event was a tenth of a long
	// read.
	res.events = make([]*event, 0, min(avail, limit))
	size := 0
	for len(h) > 0 {
		if len(res.events) >= limit || (len(res.events) > 0 && size+len(h[0].events[0].json) > maxBytes) {
			res.more = true
			res.rest = h
			break
		}
		src := h[0]
		e := src.events[0]
		res.events = append(res.events, e)
		size += len(e.json)
		src.next = e.offset + 1
		if src.events = src.events[1:]; len(src.events) == 0 {
			h.pop()
		} else {
			h.down(0)
		}
	}
	// One position per source rather than a map write per event, which
	// was a quarter of a long read.
	for _, src := range all {
		if src.next > 0 {
			res.next[src.key] = src.next
		}
	}
}

// eachSysPartLocked calls fn for every partition of each system that memory
// knows the partition of: those memory has seen the system on, plus those
// the client holds a position on. m.mu must be held.
func (m *memory) eachSysPartLocked(systems []int64, pos map[sysPart]int64, fn func(k sysPart, ps *partState, l *sysLog)) {
	extra := m.unseenLocked(systems, pos)
	for _, sys := range systems {
		for _, p := range partitionsOf(m.bySystem[sys], extra[sys]) {
			if ps := m.parts[p]; ps != nil {
				k := sysPart{sys, p}
				fn(k, ps, m.logs[k])
			}
		}
	}
}

// partitionsOf lists the partitions to read for a system: those memory has
// seen it on, plus those the client holds a position on that memory has not
// (extra, from unseenLocked).
func partitionsOf(seen, extra []int32) []int32 {
	if len(extra) == 0 {
		return seen
	}
	return append(seen[:len(seen):len(seen)], extra...)
}

// unseenLocked indexes, by system, the partitions of the positions in pos
// of the given systems that memory has not seen the system on (rare: nearly
// always nil).
//
// It costs the smaller of len(pos) and systems × partitions: one pass over
// pos suits a read of all of a stream's systems (searching pos once per
// system made that cost systems × len(pos)), while probing pos suits a
// stream's wake-up, which reads a few systems with a cursor over all of
// them. m.mu must be held.
func (m *memory) unseenLocked(systems []int64, pos map[sysPart]int64) map[int64][]int32 {
	var out map[int64][]int32
	add := func(k sysPart) {
		if !slices.Contains(m.bySystem[k.system], k.partition) {
			if out == nil {
				out = map[int64][]int32{}
			}
			out[k.system] = append(out[k.system], k.partition)
		}
	}
	if len(pos) <= len(systems)*len(m.parts) {
		// Positions of other systems may be indexed too; no read asks
		// for them.
		for k := range pos {
			add(k)
		}
		return out
	}
	for _, sys := range systems {
		for p := range m.parts {
			if _, ok := pos[sysPart{sys, p}]; ok {
				add(sysPart{sys, p})
			}
		}
	}
	return out
}

// mergeHeap merges sources by delivery order: a binary min-heap on each
// source's first event. It is written out rather than built on
// container/heap, whose interface calls and swaps were most of a merge over
// a thousand sources; sifting moves a hole instead of swapping.
type mergeHeap []*source

// init orders the heap.
func (h mergeHeap) init() {
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

// down moves h[i] down to its place.
func (h mergeHeap) down(i int) {
	x := h[i]
	first := x.events[0]
	for {
		c := 2*i + 1
		if c >= len(h) {
			break
		}
		if r := c + 1; r < len(h) && h[r].events[0].before(h[c].events[0]) {
			c = r
		}
		if !h[c].events[0].before(first) {
			break
		}
		h[i] = h[c]
		i = c
	}
	h[i] = x
}

// pop removes the first source. It stays in the array just past the
// heap's end, where merge finds it to record its position.
func (h *mergeHeap) pop() {
	old := *h
	n := len(old) - 1
	old[0], old[n] = old[n], old[0]
	*h = old[:n]
	if n > 0 {
		h.down(0)
	}
}

// readKafka reads a system's events in [b.from, b.to) from Kafka: the rare
// client so far behind that memory's bound no longer holds its events. It
// stops after limit events, as a read never returns more.
func (s *Service) readKafka(ctx context.Context, b backlog, limit int) ([]*event, error) {
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(s.opts.Brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{
			s.opts.Topic: {b.key.partition: kgo.NewOffset().At(b.from)},
		}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// b.from below the log start means retention removed the events
		// since memory last learned the log start (see below): reading on
		// from the new start would skip them without a loss report.
		kgo.ConsumeResetOffset(kgo.NoResetOffset()),
	}, s.opts.KafkaOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("reading backlog of system %d from Kafka: %w", b.key.system, err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var out []*event
	for {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			if errors.Is(err, kerr.OffsetOutOfRange) {
				// Learn the new log start now, so the client's retry is
				// told what it lost instead of failing again until the
				// next maintenance.
				if rerr := s.tail.refreshLogStarts(ctx); rerr != nil {
					s.log.Warn("refreshing log start offsets", "err", rerr)
				}
			}
			return nil, fmt.Errorf("reading backlog of system %d from Kafka: %w", b.key.system, err)
		}
		done := false
		fs.EachRecord(func(r *kgo.Record) {
			if done || r.Offset >= b.to {
				done = true
				return
			}
			if e, err := parseRecord(r); err == nil && e.system == b.key.system {
				out = append(out, e)
				done = len(out) >= limit
			}
		})
		if done {
			return out, nil
		}
	}
}

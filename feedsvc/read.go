package feedsvc

import (
	"container/heap"
	"context"
	"fmt"
	"slices"
	"time"

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
}

// source is one system-partition's events to merge, oldest first.
type source struct {
	key    sysPart
	events []*event
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
	heap.Init(&h)
	size := 0
	for h.Len() > 0 {
		if len(res.events) >= limit || (len(res.events) > 0 && size+len(h[0].events[0].json) > maxBytes) {
			res.more = true
			break
		}
		src := h[0]
		e := src.events[0]
		res.events = append(res.events, e)
		size += len(e.json)
		res.next[src.key] = e.offset + 1
		if src.events = src.events[1:]; len(src.events) == 0 {
			heap.Pop(&h)
		} else {
			heap.Fix(&h, 0)
		}
	}
	return res, nil
}

// eachSysPartLocked calls fn for every partition of each system that memory
// knows the partition of: those memory has seen the system on, plus those
// the client holds a position on. m.mu must be held.
func (m *memory) eachSysPartLocked(systems []int64, pos map[sysPart]int64, fn func(k sysPart, ps *partState, l *sysLog)) {
	extra := m.unseenLocked(pos)
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

// unseenLocked indexes, by system, the partitions of positions in pos that
// memory has not seen the system on (rare: nearly always nil). One pass over
// pos serves a whole read: searching pos once per system instead made a read
// of n systems cost n×len(pos), which dominated streams of many systems.
// m.mu must be held.
func (m *memory) unseenLocked(pos map[sysPart]int64) map[int64][]int32 {
	var out map[int64][]int32
	for k := range pos {
		if !slices.Contains(m.bySystem[k.system], k.partition) {
			if out == nil {
				out = map[int64][]int32{}
			}
			out[k.system] = append(out[k.system], k.partition)
		}
	}
	return out
}

// mergeHeap merges sources by delivery order.
type mergeHeap []*source

func (h mergeHeap) Len() int           { return len(h) }
func (h mergeHeap) Less(i, j int) bool { return h[i].events[0].before(h[j].events[0]) }
func (h mergeHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *mergeHeap) Push(x any)        { *h = append(*h, x.(*source)) }
func (h *mergeHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
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

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
	// next holds, once per system and partition, the position after the
	// last event delivered, or after a gap; committing it records the
	// read. A slice, not a map: a 1,000-system stream catching up moves
	// hundreds of positions per batch, and map writes were a third of its
	// read.
	next []position
	// rest, when more is true, is the merge of what remained: readMore
	// continues it.
	rest *mergeTree
	// cursor, once a merge is done (more is false), holds the positions
	// after everything its batches delivered or skipped, once per system
	// and partition: a stream moves its cursor then, not after every
	// batch, which wrote hundreds of positions per batch for a stream of
	// a thousand systems.
	cursor []position
}

// position is where a read left one system-partition: the offset after
// the last event delivered or lost.
type position struct {
	key  sysPart
	next int64
}

// advanceCursor moves a stream's cursor to the positions a read left.
func advanceCursor(cursor map[sysPart]int64, next []position) {
	for _, p := range next {
		cursor[p.key] = p.next
	}
}

// source is one system-partition's events to merge, oldest first.
type source struct {
	key sysPart
	entries
	// inOrder: the source's events, and every later event of its
	// partition, are in delivery order by offset, so the merge may place
	// them by offset (see partRun).
	inOrder bool
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
func (s *Service) read(ctx context.Context, systems []int64, pos positionSet, limit, maxBytes int) (readResult, error) {
	return s.readIn(ctx, systems, pos, everyPosition, limit, maxBytes)
}

// readNew is read for a stream woken by new events in systems, whose
// earlier reads have visited every position of the stream's cursor. It
// visits only the partitions memory has seen each system on: a position on
// another partition is one a client brought (from another system's event,
// or from before a repartition), which the stream's first read settled, and
// no event arrives there unseen. Probing a 1,000-system stream's cursor
// for each of the topic's partitions on every wake-up was about 1.3 µs of
// the 2.2 µs per live event that such a stream cost more than a 1-system
// one (measurement 7 of BENCHMARKS.md).
func (s *Service) readNew(ctx context.Context, systems []int64, pos positionSet, limit, maxBytes int) (readResult, error) {
	return s.readIn(ctx, systems, pos, seenPartitions, limit, maxBytes)
}

// readScope says which partitions of a system a read visits.
type readScope int

const (
	// everyPosition: those memory has seen the system on, and those the
	// client holds a position on.
	everyPosition readScope = iota
	// seenPartitions: only those memory has seen the system on.
	seenPartitions
)

// readIn is read of the partitions in scope.
func (s *Service) readIn(ctx context.Context, systems []int64, pos positionSet, scope readScope, limit, maxBytes int) (readResult, error) {
	var res readResult
	var skips map[sysPart]int64 // positions moved past removed records, rare
	var srcs []source
	var backlogs []backlog

	m := s.mem
	m.mu.RLock()
	m.eachSysPartLocked(systems, pos, scope, func(k sysPart, ps *partState, l *sysLog, from int64, has bool) {
		sys, p := k.system, k.partition
		if !has {
			// A client new to the system gets everything retained.
			from = ps.logStart
		}
		if from < ps.logStart {
			// Retention removed records past the client's position. Only
			// the system's own events are a loss to it: other systems'
			// records, removed past a caught-up client of a quiet
			// system, are no news to it.
			if lost, exact := l.lostBetween(ps, from, ps.logStart); lost > 0 || !exact {
				res.gaps = append(res.gaps, gap{system: sys, partition: p, from: from, to: ps.logStart, lost: lost})
			}
			from = ps.logStart
			if skips == nil {
				skips = map[sysPart]int64{}
			}
			skips[k] = from
		}
		floor := ps.loadStart
		if l != nil {
			floor = l.floor
		}
		if from < floor {
			backlogs = append(backlogs, backlog{key: k, from: from, to: floor})
		}
		if x := l.after(max(from, floor)); len(x.events) > 0 {
			if srcs == nil {
				// Sized once, and only when there is something to read
				// (a caught-up Poll has nothing): a source is about 100
				// bytes, and growing the slice source by source allocated
				// three times what a Poll of ten systems needs.
				srcs = make([]source, 0, len(systems))
			}
			srcs = append(srcs, source{key: k, entries: x, inOrder: ps.orderedFrom <= x.offsets[0]})
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
		for i := range srcs {
			if src := &srcs[i]; src.key == b.key {
				src.entries = entriesOf(evs).then(src.entries)
				// Events read from Kafka have no arrival order.
				src.inOrder = false
				merged = true
				break
			}
		}
		if !merged {
			srcs = append(srcs, source{key: b.key, entries: entriesOf(evs)})
		}
	}

	if len(srcs) == 0 && len(skips) == 0 {
		// Nothing new (a caught-up Poll, most of them): no merge to set up.
		return res, nil
	}
	t := newMergeTree(srcs, skips)
	res.merge(t, limit, maxBytes)
	// The first batch also moves past removed records: it is the one
	// that tells the client of a loss among them.
	res.next = append(res.next, t.skipPositions()...)
	return res, nil
}

// readMore continues a read that stopped at its limit (res.more) from the
// merge it left (res.rest), without visiting the systems again: a stream
// catching up in batches costs what it sends, where a new read per batch
// cost the stream's systems per batch, which made a 1,000-system stream
// catch up at a third of a 1-system one's rate. Events stored since the
// first read are not in rest; they reach the stream as live events.
func readMore(rest *mergeTree, limit, maxBytes int) readResult {
	var res readResult
	res.merge(rest, limit, maxBytes)
	return res
}

// eachSysPartLocked calls fn for every partition of each system in scope
// that memory knows the partition of, with the client's position there in
// pos (has is false for none). systems holds no system twice, as requests
// are validated. m.mu must be held.
func (m *memory) eachSysPartLocked(systems []int64, pos positionSet, scope readScope, fn func(k sysPart, ps *partState, l *sysLog, from int64, has bool)) {
	visited := 0 // positions of pos passed to fn
	for _, sys := range systems {
		for _, on := range m.bySystem[sys] {
			k := sysPart{sys, on.partition}
			from, has := pos.at(k)
			if has {
				visited++
			}
			fn(k, on.state, on.log, from, has)
		}
	}
	if scope == seenPartitions || visited == pos.count() {
		// Every position is on a partition memory has seen its system on,
		// as nearly always: looking for others cost a caught-up Poll a
		// fifth of its read.
		return
	}
	extra := m.unseenLocked(pos)
	for _, sys := range systems {
		for _, p := range extra[sys] {
			if ps := m.parts[p]; ps != nil {
				k := sysPart{sys, p}
				from, _ := pos.at(k)
				fn(k, ps, nil, from, true)
			}
		}
	}
}

// unseenLocked indexes, by system, the partitions of the positions in pos
// that memory has not seen their system on (rare: a client's position from
// another system's event, or from before a repartition). pos holds only the
// read's systems' positions, so one pass over it costs at most the read's
// systems × partitions. m.mu must be held.
func (m *memory) unseenLocked(pos positionSet) map[int64][]int32 {
	var out map[int64][]int32
	pos.keys(func(k sysPart) {
		seen := slices.ContainsFunc(m.bySystem[k.system], func(on onPartition) bool { return on.partition == k.partition })
		if !seen {
			if out == nil {
				out = map[int64][]int32{}
			}
			out[k.system] = append(out[k.system], k.partition)
		}
	})
	return out
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

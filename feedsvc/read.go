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
	key    sysPart
	events []*event
	keys   []orderKey // keys[i] is events[i].orderKey()
	// next is the position after the last event the current batch of the
	// merge took from this source, 0 while it took none; done is the same
	// over every batch.
	next, done int64
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
	var res readResult
	var gapNext map[sysPart]int64 // positions after gaps, rare
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
			if gapNext == nil {
				gapNext = map[sysPart]int64{}
			}
			gapNext[k] = from
		}
		floor := ps.loadStart
		if l != nil {
			floor = l.floor
		}
		if from < floor {
			backlogs = append(backlogs, backlog{key: k, from: from, to: floor})
		}
		if evs, keys := l.after(max(from, floor)); len(evs) > 0 {
			srcs = append(srcs, &source{key: k, events: evs, keys: keys})
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
				src.keys = append(keysOf(evs), src.keys...)
				merged = true
			}
		}
		if !merged {
			srcs = append(srcs, &source{key: b.key, events: evs, keys: keysOf(evs)})
		}
	}

	t := newMergeTree(srcs, gapNext)
	res.merge(t, limit, maxBytes)
	// The first batch also moves past the gaps: it is the one that tells
	// the client of them.
	res.next = append(res.next, t.gapPositions()...)
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

// merge takes events from t, oldest first, up to limit of them and about
// maxBytes of killmail JSON (always at least one), and records the position
// after each source's last one taken.
func (res *readResult) merge(t *mergeTree, limit, maxBytes int) {
	avail := 0
	for _, src := range t.srcs {
		src.next = 0
		avail += len(src.events)
	}
	// Sized once: growing the result event by event was a tenth of a long
	// read.
	res.events = make([]*event, 0, min(avail, limit))
	size := 0
	for !t.empty() {
		w := t.losers[0]
		src := t.srcs[w]
		e := src.events[0]
		if len(res.events) >= limit || (len(res.events) > 0 && size+len(e.json) > maxBytes) {
			res.more = true
			res.rest = t
			break
		}
		res.events = append(res.events, e)
		size += len(e.json)
		src.next = e.offset + 1
		src.done = src.next
		t.advance(w)
	}
	// One position per source rather than one per event, which was a
	// quarter of a long read.
	res.next = make([]position, 0, min(len(t.srcs), len(res.events)))
	for _, src := range t.srcs {
		if src.next > 0 {
			res.next = append(res.next, position{src.key, src.next})
		}
	}
	if !res.more {
		res.cursor = t.final()
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

// mergeTree merges sources by delivery order (event.before): a tournament
// tree of losers. Taking an event replays one path from a leaf to the
// root, one comparison per level, where a binary heap's sift makes two; and
// each leaf carries its source's first event's order key, so comparisons
// read the tree's own arrays rather than following pointers into events
// spread over memory. The merge is most of the cost of a stream following
// a thousand systems as it catches up.
type mergeTree struct {
	srcs []*source
	// gaps holds the position after each gap the read found (rare): a
	// system-partition the merge delivers from is past it anyway.
	gaps map[sysPart]int64
	// heads[i] is srcs[i]'s first event's key, or not live once srcs[i]
	// is exhausted (it then sorts last).
	heads []mergeHead
	// losers[n], for an internal node n ≥ 1, is the leaf that lost the
	// match played there; losers[0] is the overall winner. Node n's
	// children are 2n and 2n+1; leaf i is node len(srcs)+i.
	losers []int
}

// mergeHead is a source's first event's order key.
type mergeHead struct {
	orderKey
	live bool
}

// headOf returns src's key; src has events.
func headOf(src *source) mergeHead {
	return mergeHead{orderKey: src.keys[0], live: true}
}

// newMergeTree starts a merge of srcs, whose reads found gaps (nil for
// none).
func newMergeTree(srcs []*source, gaps map[sysPart]int64) *mergeTree {
	k := len(srcs)
	t := &mergeTree{srcs: srcs, gaps: gaps, heads: make([]mergeHead, k), losers: make([]int, max(k, 1))}
	if k == 0 {
		return t
	}
	for i, src := range srcs {
		t.heads[i] = headOf(src)
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

// gapPositions returns the positions after the gaps of the system-
// partitions the merge has delivered nothing from yet.
func (t *mergeTree) gapPositions() []position {
	if len(t.gaps) == 0 {
		return nil
	}
	delivered := make(map[sysPart]bool, len(t.srcs))
	for _, src := range t.srcs {
		if src.done > 0 {
			delivered[src.key] = true
		}
	}
	var out []position
	for k, o := range t.gaps {
		if !delivered[k] {
			out = append(out, position{k, o})
		}
	}
	return out
}

// final returns the positions after everything the merge delivered, over
// all its batches, and after its gaps.
func (t *mergeTree) final() []position {
	out := make([]position, 0, len(t.srcs)+len(t.gaps))
	for _, src := range t.srcs {
		if src.done > 0 {
			out = append(out, position{src.key, src.done})
		}
	}
	return append(out, t.gapPositions()...)
}

// empty reports whether every source is exhausted.
func (t *mergeTree) empty() bool {
	return len(t.heads) == 0 || !t.heads[t.losers[0]].live
}

// less orders leaves i and j by their first events, exhausted ones last.
func (t *mergeTree) less(i, j int) bool {
	a, b := &t.heads[i], &t.heads[j]
	switch {
	case !b.live:
		return a.live
	case !a.live:
		return false
	// orderKey.less, written out: its equality test first cost a tenth of
	// a 1,000-system merge.
	case a.timeMS != b.timeMS:
		return a.timeMS < b.timeMS
	case a.seq != b.seq:
		return a.seq < b.seq
	}
	return t.srcs[i].events[0].before(t.srcs[j].events[0])
}

// advance drops leaf w's first event, w having won, and replays its path.
func (t *mergeTree) advance(w int) {
	src := t.srcs[w]
	src.keys = src.keys[1:]
	if src.events = src.events[1:]; len(src.events) == 0 {
		t.heads[w] = mergeHead{}
	} else {
		t.heads[w] = headOf(src)
	}
	for n := (w + len(t.srcs)) / 2; n >= 1; n /= 2 {
		if l := t.losers[n]; t.less(l, w) {
			t.losers[n], w = w, l
		}
	}
	t.losers[0] = w
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

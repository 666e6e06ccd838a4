package feedsvc

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestReadMergesInDeliveryOrder reads many systems on several partitions in
// small batches (read, then readMore) and checks that the stream gets every
// event once, in event.before's order, with each system-partition's
// position after the last event it got, both in the cursor the merge
// leaves and in the positions its batches commit — for merges of 1 to
// 1,000 sources, with clashing timestamps, offsets with holes wider than a
// run's span, and partitions whose timestamps go back (which a run must not
// place by offset).
func TestReadMergesInDeliveryOrder(t *testing.T) {
	for _, tc := range []struct {
		systems, partitions, events, batch int
		// stride: a partition's offsets step by 1 to stride; with holes,
		// one step in 2,000 skips more than a run places at a time.
		stride int
		holes  bool
		// backwards: how many partitions (the last ones) have timestamps
		// that sometimes go back.
		backwards int
		// runs: whether the merge should merge some partition as a run.
		runs bool
	}{
		{1, 1, 50, 7, 1, false, 0, false},
		{2, 1, 100, 1, 1, false, 0, false},
		{7, 3, 500, 13, 1, false, 0, false},
		{100, 4, 2000, 64, 1, false, 0, true},
		{1000, 16, 5000, 500, 1, false, 0, true},
		{100, 1, 20000, 500, 2, true, 0, true},
		{1000, 2, 20000, 500, 200, false, 0, false}, // too sparse for runs
		{300, 4, 6000, 100, 2, false, 2, true},
		{300, 1, 3000, 100, 1, false, 1, false},
	} {
		t.Run(fmt.Sprintf("systems=%d/partitions=%d/batch=%d/stride=%d/holes=%v/backwards=%d", tc.systems, tc.partitions, tc.batch, tc.stride, tc.holes, tc.backwards), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(tc.systems), uint64(tc.batch)))
			next, clock, sysClock := map[int32]int64{}, map[int32]int64{}, map[sysPart]int64{}
			var all []*event
			s := memoryService(tc.events, func(add func(*event)) {
				for range tc.events {
					sys := int64(30_000_001 + rng.IntN(tc.systems))
					p := int32(rng.IntN(tc.partitions))
					// A partition's times often repeat, so that many
					// comparisons are ties broken by read order, and
					// partitions' clocks differ. A system's never go
					// back (a source is in order); with backwards, a
					// partition's may, across systems.
					clock[p] += int64(rng.IntN(2)) + int64(p%2)*int64(rng.IntN(3))
					at := clock[p]
					if int(p) >= tc.partitions-tc.backwards {
						at = max(at-int64(rng.IntN(4)), sysClock[sysPart{sys, p}])
					}
					sysClock[sysPart{sys, p}] = at
					e := &event{system: sys, partition: p, offset: next[p], timeMS: at, json: []byte(`{}`)}
					next[p] += 1 + int64(rng.IntN(tc.stride))
					if tc.holes && rng.IntN(2000) == 0 {
						next[p] += 3 * maxRunSpan
					}
					add(e)
					all = append(all, e)
				}
			})
			want := slices.Clone(all)
			slices.SortFunc(want, func(a, b *event) int {
				if a.before(b) {
					return -1
				}
				return 1
			})
			systems := make([]int64, tc.systems)
			for i := range systems {
				systems[i] = int64(30_000_001 + i)
			}

			// cursor moves as a stream's does, once the merge is done;
			// committed as automatic mode commits, after every batch.
			cursor, committed := map[sysPart]int64{}, map[sysPart]int64{}
			res, err := s.read(context.Background(), systems, positionsIn(cursor), tc.batch, s.opts.MaxResponseBytes)
			if err != nil {
				t.Fatal(err)
			}
			if !res.more {
				t.Fatalf("the first read took every event; the case must need several")
			}
			runs := false
			for _, l := range res.rest.leaves {
				runs = runs || l.run != nil
			}
			if runs != tc.runs {
				t.Fatalf("merge with runs: %v, want %v", runs, tc.runs)
			}
			var got []*event
			for {
				if len(res.events) > tc.batch {
					t.Fatalf("a batch of %d events, limit %d", len(res.events), tc.batch)
				}
				got = append(got, res.events...)
				seen := map[sysPart]bool{}
				for _, p := range res.next {
					if seen[p.key] {
						t.Fatalf("position of %v given twice in one read", p.key)
					}
					seen[p.key] = true
				}
				advanceCursor(committed, res.next)
				if !res.more {
					advanceCursor(cursor, res.cursor)
					break
				}
				if res.cursor != nil {
					t.Fatalf("a read with more to come moved the cursor")
				}
				res = readMore(res.rest, tc.batch, s.opts.MaxResponseBytes)
			}
			if len(got) != len(want) {
				t.Fatalf("got %d events, want %d", len(got), len(want))
			}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("event %d: got system %d offset %d (time %d), want system %d offset %d (time %d)",
						i, got[i].system, got[i].offset, got[i].timeMS, want[i].system, want[i].offset, want[i].timeMS)
				}
			}
			last := map[sysPart]int64{}
			for _, e := range all {
				last[sysPart{e.system, e.partition}] = e.offset + 1
			}
			if !maps.Equal(cursor, last) {
				t.Fatalf("cursor after the read: %v, want %v", cursor, last)
			}
			if !maps.Equal(committed, last) {
				t.Fatalf("positions committed batch by batch: %v, want %v", committed, last)
			}
		})
	}
}

// memoryService returns a service without Kafka whose memory holds, at most
// maxPerSystem per system, the events fill adds, in the order added and at
// the offsets fill gives them: what the in-process tests and benchmarks of
// read and readMore run against.
func memoryService(maxPerSystem int, fill func(add func(*event))) *Service {
	s := &Service{opts: Options{}.withDefaults(), mem: newMemory(maxPerSystem)}
	s.mem.mu.Lock()
	defer s.mem.mu.Unlock()
	fill(s.mem.appendLocked)
	return s
}

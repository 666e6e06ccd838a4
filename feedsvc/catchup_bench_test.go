package feedsvc

import (
	"context"
	"fmt"
	"testing"

	"github.com/killfeed/killfeed/internal/bench"
)

// BenchmarkCatchUp measures the read loop of a Subscribe catching up 100,000
// events from memory in 500-event batches (read, then readMore, moving the
// stream's cursor at the end), with the events in 1 system or spread over
// 1,000, on one partition or on 16 (the topic's default): what following
// many systems costs a stream apart from sending. killfeed-bench's
// measurement 7 times the whole stream.
//
// Each batch's killmails (realistic ones, ~1 KB) are copied out as sending
// copies them into a message: that traffic evicts the merge's state from the
// cache between batches, as it does in a running service. Without it, this
// benchmark's merge cost a third of what the same merge cost in the
// service's profile.
func BenchmarkCatchUp(b *testing.B) {
	const events = 100_000
	for _, tc := range []struct{ systems, partitions int }{{1, 1}, {1000, 1}, {1000, 16}} {
		b.Run(fmt.Sprintf("systems=%d/partitions=%d", tc.systems, tc.partitions), func(b *testing.B) {
			followed := make([]int64, tc.systems)
			for i := range followed {
				followed[i] = int64(30_000_001 + i)
			}
			s := memoryService(events, func(add func(*event)) {
				next := make([]int64, tc.partitions)
				for i := range events {
					sys := followed[i%tc.systems]
					p := int32(sys % int64(tc.partitions))
					add(&event{system: sys, partition: p, offset: next[p], timeMS: int64(i / 100), json: bench.Killmail(int64(i), sys, 0)})
					next[p]++
				}
			})
			ctx := context.Background()
			var n int
			var sent []byte
			send := func(res readResult) {
				sent = sent[:0]
				for _, e := range res.events {
					sent = append(sent, e.json...)
				}
				n += len(res.events)
			}
			for b.Loop() {
				cursor := map[sysPart]int64{}
				res, err := s.read(ctx, followed, positionsIn(cursor), subscribeBatch, s.opts.MaxResponseBytes)
				if err != nil {
					b.Fatal(err)
				}
				n = 0
				send(res)
				for res.more {
					res = readMore(res.rest, subscribeBatch, s.opts.MaxResponseBytes)
					send(res)
				}
				advanceCursor(cursor, res.cursor)
				if n != events {
					b.Fatalf("caught up %d events, want %d", n, events)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*events), "ns/event")
		})
	}
}

// BenchmarkWakeUp measures the read a live stream of 1,000 systems makes
// when the tail wakes it for one system with one new event: the stream's
// cursor holds a position for each of its systems, on 16 partitions.
// "every-position" is the read a stream's first read makes (read), which
// also looks for positions on partitions memory has not seen a system on;
// "seen-partitions" is the wake-up's (readNew).
func BenchmarkWakeUp(b *testing.B) {
	const (
		systems    = 1000
		partitions = 16
		perSystem  = 10
	)
	cursor := map[sysPart]int64{}
	s := memoryService(1000, func(add func(*event)) {
		next := make([]int64, partitions)
		for i := range systems * perSystem {
			sys := int64(30_000_001 + i%systems)
			p := int32(sys % partitions)
			add(&event{system: sys, partition: p, offset: next[p], timeMS: int64(i), json: bench.SmallKillmail(int64(i), sys)})
			cursor[sysPart{sys, p}] = next[p] + 1
			next[p]++
		}
	})
	woken := []int64{30_000_001}
	cursor[sysPart{woken[0], int32(woken[0] % partitions)}]-- // its last event is new
	ctx := context.Background()
	for _, v := range []struct {
		name string
		read func(context.Context, []int64, positionSet, int, int) (readResult, error)
	}{{"every-position", s.read}, {"seen-partitions", s.readNew}} {
		b.Run(v.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				res, err := v.read(ctx, woken, positionsIn(cursor), subscribeBatch, s.opts.MaxResponseBytes)
				if err != nil || len(res.events) != 1 {
					b.Fatalf("wake-up read: %d events, %v; want 1", len(res.events), err)
				}
			}
		})
	}
}

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
				res, err := s.read(ctx, followed, cursor, subscribeBatch, s.opts.MaxResponseBytes)
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

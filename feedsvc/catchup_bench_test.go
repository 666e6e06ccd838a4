package feedsvc

import (
	"context"
	"fmt"
	"testing"

	"github.com/killfeed/killfeed/internal/bench"
)

// BenchmarkCatchUp measures the read loop of a Subscribe catching up 100,000
// events from memory in 500-event batches (read, then readMore, moving the
// stream's cursor at the end), with the events in 1 system or spread over 1,000 on the
// same partition: what following many systems costs a stream apart from
// sending. killfeed-bench's measurement 7 times the whole stream.
func BenchmarkCatchUp(b *testing.B) {
	const events = 100_000
	for _, systems := range []int{1, 1000} {
		b.Run(fmt.Sprintf("systems=%d", systems), func(b *testing.B) {
			followed := make([]int64, systems)
			for i := range followed {
				followed[i] = int64(30_000_001 + i)
			}
			s := memoryService(events, func(add func(*event)) {
				for i := range events {
					sys := followed[i%systems]
					add(&event{system: sys, partition: 0, offset: int64(i), timeMS: int64(i / 100), json: bench.SmallKillmail(int64(i), sys)})
				}
			})
			ctx := context.Background()
			var n int
			for b.Loop() {
				cursor := map[sysPart]int64{}
				res, err := s.read(ctx, followed, cursor, subscribeBatch, s.opts.MaxResponseBytes)
				if err != nil {
					b.Fatal(err)
				}
				n = len(res.events)
				for res.more {
					res = readMore(res.rest, subscribeBatch, s.opts.MaxResponseBytes)
					n += len(res.events)
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

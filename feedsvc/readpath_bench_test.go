package feedsvc

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/killfeed/killfeed/internal/bench"
	"github.com/killfeed/killfeed/offsets"
)

// BenchmarkPollReadPath measures the read behind a Poll in process, without
// Kafka, the protocol or the positions store: a client following 10 of 5,000
// systems reads what follows its positions (caught up: nothing; first: every
// retained event of its systems). The reference, the seeds' algorithm
// (bench.SeedStore), holds the same events and serves the same client in
// the same benchmark run. killfeed-bench runs it for its table:
//
//	go test -run '^$' -bench PollReadPath ./feedsvc
func BenchmarkPollReadPath(b *testing.B) {
	const (
		systems    = 5000
		follow     = 10
		partitions = 16
	)
	for _, n := range []int{10_000, 100_000, 1_000_000} {
		name := fmt.Sprintf("events=%dk", n/1000)
		if testing.Short() && n > 100_000 {
			continue
		}
		seeds := bench.NewSeedStore()
		rng := rand.New(rand.NewPCG(uint64(n), 1))
		next := map[int32]int64{}
		s := memoryService(10_000, func(add func(*event)) {
			for i := range n {
				sys := int64(30_000_001 + rng.IntN(systems))
				km := bench.SmallKillmail(int64(i), sys)
				p := int32(sys % partitions)
				add(&event{system: sys, partition: p, offset: next[p], timeMS: int64(i), json: km})
				next[p]++
				var decoded map[string]any
				if err := json.Unmarshal(km, &decoded); err != nil {
					b.Fatal(err)
				}
				seeds.Insert(sys, decoded)
			}
		})

		// The client's positions as a Poll of ten systems holds them
		// (positionLookup): few enough to search.
		followed := make([]int64, follow)
		var caughtUp []offsets.Position
		for i := range followed {
			followed[i] = int64(30_000_001 + i)
			p := int32(followed[i] % partitions)
			caughtUp = append(caughtUp, offsets.Position{SystemID: followed[i], Partition: p, Offset: next[p]})
		}
		want := len(seeds.FetchForClient("first", followed))
		seeds.FetchForClient("caught-up", followed)
		ctx := context.Background()

		read := func(b *testing.B, pos positionSet, want int) {
			for b.Loop() {
				res, err := s.read(ctx, followed, pos, s.opts.MaxLimit, s.opts.MaxResponseBytes)
				if err != nil || len(res.events) != want {
					b.Fatalf("read: %d events, %v; want %d", len(res.events), err, want)
				}
			}
		}
		b.Run(name+"/caught-up/killfeed", func(b *testing.B) { read(b, positionSet{few: caughtUp}, 0) })
		b.Run(name+"/caught-up/seeds", func(b *testing.B) {
			for b.Loop() {
				if got := len(seeds.FetchForClient("caught-up", followed)); got != 0 {
					b.Fatalf("seeds: %d events, want 0", got)
				}
			}
		})
		b.Run(name+"/first/killfeed", func(b *testing.B) { read(b, positionSet{}, want) })
		b.Run(name+"/first/seeds", func(b *testing.B) {
			for b.Loop() {
				seeds.ForgetClient("first")
				if got := len(seeds.FetchForClient("first", followed)); got != want {
					b.Fatalf("seeds: %d events, want %d", got, want)
				}
			}
		})
	}
}

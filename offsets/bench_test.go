package offsets_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/killfeed/killfeed/offsets"
)

// BenchmarkRebuild measures how fast Open rebuilds positions from the
// offsets topic: what bounds feedsvc's start-up time.
func BenchmarkRebuild(b *testing.B) {
	const (
		clients = 1000
		systems = 100 // per client: one record per (client, system)
		records = clients * systems
	)
	c := newCluster(b)
	opts := offsets.Options{Topic: "bench-offsets"}
	openStore(b, c.ListenAddrs(), opts).Close() // creates the topic

	raw := rawClient(b, c.ListenAddrs(), kgo.ProducerLinger(5*time.Millisecond))
	ctx := testCtx(b)
	errs := make(chan error, 1)
	for i := range records {
		client, sys := i/systems, int64(30000001+i%systems)
		value := fmt.Appendf(nil, `{"offsets":{"%d":%d},"updated_ms":%d}`, sys%16, 1000+i, time.Now().UnixMilli())
		raw.Produce(ctx, &kgo.Record{Topic: opts.Topic, Key: []byte("client-" + strconv.Itoa(client) + "/" + strconv.FormatInt(sys, 10)), Value: value}, func(_ *kgo.Record, err error) {
			if err != nil {
				select {
				case errs <- err:
				default:
				}
			}
		})
	}
	if err := raw.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}

	var took time.Duration
	for b.Loop() {
		begin := time.Now()
		s, err := offsets.Open(context.Background(), c.ListenAddrs(), opts)
		took += time.Since(begin)
		if err != nil {
			b.Fatal(err)
		}
		if n := len(s.Positions("client-" + strconv.Itoa(clients-1))); n != systems {
			b.Fatalf("rebuilt %d positions of the last client, want %d", n, systems)
		}
		s.Close()
	}
	b.ReportMetric(float64(records)*float64(b.N)/took.Seconds(), "records/s")
}

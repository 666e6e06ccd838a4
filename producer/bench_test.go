package producer_test

import (
	"context"
	"io"
	"testing"

	"github.com/killfeed/killfeed/internal/killmail"
	"github.com/killfeed/killfeed/producer"
	"github.com/killfeed/killfeed/producer/r2z2test"
)

// BenchmarkProduceSynthetic measures the whole pipeline against an
// in-process broker: generate, normalise, deduplicate and produce
// idempotently with acks=all to 16 partitions.
func BenchmarkProduceSynthetic(b *testing.B) {
	c := newCluster(b, 16, "killmails")
	p, err := producer.New(newClient(b, c), producer.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	stats, err := p.Run(context.Background(), producer.NewSynthetic(producer.SyntheticOptions{Count: int64(b.N), Seed: 1}))
	if err != nil {
		b.Fatal(err)
	}
	if stats.Produced != int64(b.N) {
		b.Fatalf("produced %d of %d", stats.Produced, b.N)
	}
	b.ReportMetric(float64(stats.Produced)/b.Elapsed().Seconds(), "killmails/s")
	b.ReportMetric(float64(stats.Bytes)/b.Elapsed().Seconds()/1e6, "MB/s")
	b.ReportMetric(float64(stats.Bytes)/float64(stats.Produced), "bytes/killmail")
}

// BenchmarkSynthetic measures the generator and the normaliser without
// Kafka, to show where the time goes.
func BenchmarkSynthetic(b *testing.B) {
	src := producer.NewSynthetic(producer.SyntheticOptions{Seed: 1})
	var bytes int64
	for b.Loop() {
		raw, err := src.Next(context.Background())
		if err == io.EOF {
			b.Fatal("endless generator ended")
		}
		bytes += int64(len(raw))
	}
	b.SetBytes(bytes / int64(b.N))
}

func BenchmarkSyntheticNormalize(b *testing.B) {
	src := producer.NewSynthetic(producer.SyntheticOptions{Seed: 1})
	var bytes int64
	for b.Loop() {
		raw, _ := src.Next(context.Background())
		if _, err := killmail.Normalize(raw); err != nil {
			b.Fatal(err)
		}
		bytes += int64(len(raw))
	}
	b.SetBytes(bytes / int64(b.N))
}

// BenchmarkR2Z2Ingest measures R2Z2 ingestion from an in-process fake R2Z2
// into an in-process broker, without request pacing: HTTP fetch,
// normalisation, deduplication and transactional writes with the cursor,
// in batches of the default size.
func BenchmarkR2Z2Ingest(b *testing.B) {
	e := newR2Z2Env(b)
	for i := range b.N {
		e.srv.PublishKillmail(int64(128_000_000+i), systems[i%len(systems)])
	}
	opts := e.options()
	opts.Start = r2z2test.FirstSequence
	opts.Logger = nil
	b.ResetTimer()
	stats := e.runToHead(e.ingester(opts), 0)
	if stats.Produced != int64(b.N) {
		b.Fatalf("produced %d of %d", stats.Produced, b.N)
	}
	b.ReportMetric(float64(stats.Produced)/b.Elapsed().Seconds(), "killmails/s")
	b.ReportMetric(float64(stats.Commits), "commits")
}

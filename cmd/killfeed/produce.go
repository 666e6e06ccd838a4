package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/killfeed/killfeed/internal/topics"
	"github.com/killfeed/killfeed/producer"
)

// produceCmd writes killmails from a file, stdin or the synthetic generator
// to the killmails topic.
type produceCmd struct {
	Brokers        []string      `help:"Kafka seed brokers, host:port, comma separated. The default is the embedded broker of 'killfeed serve'." default:"127.0.0.1:9092" env:"KILLFEED_BROKERS"`
	Source         string        `help:"Where killmails come from: file (NDJSON, see --file), stdin (NDJSON) or synthetic (generated)." enum:"file,stdin,synthetic" required:"" env:"KILLFEED_SOURCE"`
	File           string        `help:"NDJSON file to read with --source file: one killmail per line, as ESI+zkb, a zKillboard package or an R2Z2 file." type:"path" env:"KILLFEED_FILE"`
	Count          int64         `help:"Synthetic: killmails to generate; 0 for no end." default:"0" env:"KILLFEED_COUNT"`
	Rate           float64       `help:"Synthetic: killmails per second; 0 for as fast as Kafka takes them." default:"5" env:"KILLFEED_RATE"`
	Seed           uint64        `help:"Synthetic: random seed, for a reproducible run; 0 picks one from the clock and logs it." default:"0" env:"KILLFEED_SEED"`
	Topic          string        `help:"Killmails topic." default:"killmails" env:"KILLFEED_TOPIC"`
	Partitions     int32         `help:"Partitions of the killmails topic when it is created." default:"16" env:"KILLFEED_PARTITIONS"`
	Retention      time.Duration `help:"Kafka retention of killmails (retention.ms) when the topic is created." default:"48h" env:"KILLFEED_RETENTION"`
	RetentionBytes int64         `help:"Kafka size bound per partition (retention.bytes) when the topic is created; -1 for none." default:"-1" env:"KILLFEED_RETENTION_BYTES"`
	DedupeWindow   int           `help:"Killmail ids remembered to drop re-published killmails (about 40 bytes each); 0 turns deduplication off." default:"1000000" env:"KILLFEED_DEDUPE_WINDOW"`
	Reread         int           `help:"Records read back from the end of the topic at start, so a restart does not store killmails again; 0 for none." default:"50000" env:"KILLFEED_REREAD"`
	Progress       time.Duration `help:"Interval between progress lines on long runs." default:"5s" env:"KILLFEED_PROGRESS"`
}

// Validate checks the flags that depend on each other.
func (c *produceCmd) Validate() error {
	if c.Source == "file" && c.File == "" {
		return errors.New("--source file needs --file PATH")
	}
	if c.Source != "file" && c.File != "" {
		return fmt.Errorf("--file is only read with --source file, not --source %s", c.Source)
	}
	if c.Rate < 0 || c.Count < 0 {
		return errors.New("--rate and --count must not be negative")
	}
	return nil
}

// Run ensures the topic exists, then produces until the source ends or the
// process is interrupted. Interrupting is a normal end: what was read is
// flushed, the summary logged, and the exit status is zero.
func (c *produceCmd) Run(ctx context.Context, log *slog.Logger) error {
	if err := c.Validate(); err != nil {
		return err
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers...))
	if err != nil {
		return fmt.Errorf("connecting to Kafka %v: %w", c.Brokers, err)
	}
	defer cl.Close()
	partitions, err := topics.EnsureKillmails(ctx, kadm.NewClient(cl), topics.Killmails{
		Name: c.Topic, Partitions: c.Partitions, Retention: c.Retention, RetentionBytes: c.RetentionBytes,
	})
	if err != nil {
		return err
	}

	src, describe, closeSrc, err := c.source()
	if err != nil {
		return err
	}
	defer closeSrc()

	reread := c.Reread
	if reread == 0 {
		reread = -1 // the flag's 0 means none; the library's 0 means default
	}
	dedupe := c.DedupeWindow
	if dedupe == 0 {
		dedupe = -1
	}
	p, err := producer.New(cl, producer.Options{
		Topic:            c.Topic,
		DedupeWindow:     dedupe,
		Reread:           reread,
		Logger:           log,
		ProgressInterval: c.Progress,
	})
	if err != nil {
		return err
	}
	log.Info("producing killmails", append([]any{"brokers", c.Brokers, "topic", c.Topic, "partitions", partitions}, describe...)...)

	stats, err := p.Run(ctx, src)
	stopped := err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err())
	attrs := []any{
		"read", stats.Read,
		"produced", stats.Produced,
		"rejected", stats.Rejected,
		"duplicates", stats.Duplicates,
		"failed", stats.Failed + stats.Unconfirmed,
		"reread", stats.Reread,
		"mb", fmt.Sprintf("%.1f", float64(stats.Bytes)/1e6),
		"elapsed", stats.Elapsed.Round(time.Millisecond),
		"per_second", int64(stats.PerSecond()),
	}
	if len(stats.RejectedBy) > 0 {
		attrs = append(attrs, "rejected_by", stats.RejectedBy)
	}
	switch {
	case stopped:
		log.Info("produce stopped", attrs...)
		return nil
	case err != nil:
		log.Error("produce failed", attrs...)
		return fmt.Errorf("producing to topic %q: %w", c.Topic, err)
	}
	log.Info("produce finished", attrs...)
	return nil
}

// source opens the configured source. describe are log attributes naming
// it; closeSrc releases it.
func (c *produceCmd) source() (src producer.Source, describe []any, closeSrc func(), err error) {
	switch c.Source {
	case "file":
		f, err := os.Open(c.File)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("opening killmail file: %w", err)
		}
		return producer.NewNDJSON(f, producer.NDJSONOptions{Name: c.File}), []any{"source", "file", "file", c.File}, func() { f.Close() }, nil
	case "stdin":
		// A read from a terminal or an idle pipe cannot be interrupted, so
		// the interrupt must not wait for the next line.
		return &interruptible{src: producer.NewNDJSON(os.Stdin, producer.NDJSONOptions{Name: "stdin"})}, []any{"source", "stdin"}, func() {}, nil
	default:
		seed := c.Seed
		if seed == 0 {
			seed = uint64(time.Now().UnixNano())
		}
		src := producer.NewSynthetic(producer.SyntheticOptions{Count: c.Count, Rate: c.Rate, Seed: seed})
		return src, []any{"source", "synthetic", "count", c.Count, "rate", c.Rate, "seed", seed}, func() {}, nil
	}
}

// interruptible returns from Next when ctx is done even while the source is
// blocked reading. The abandoned read finishes in the background; it is
// only used at process exit, so it leaks nothing that outlives the process.
type interruptible struct {
	src     *producer.NDJSON
	pending chan result // the read in progress, if an earlier Next gave up on it
}

type result struct {
	b   []byte
	err error
}

// Location is the underlying source's: the line number.
func (s *interruptible) Location() string { return s.src.Location() }

// Next reads the next line, or returns ctx's error once ctx is done.
func (s *interruptible) Next(ctx context.Context) ([]byte, error) {
	ch := s.pending
	if ch == nil {
		ch = make(chan result, 1)
		go func() {
			b, err := s.src.Next(ctx)
			ch <- result{b, err}
		}()
	}
	select {
	case r := <-ch:
		s.pending = nil
		return r.b, r.err
	case <-ctx.Done():
		s.pending = ch
		return nil, ctx.Err()
	}
}

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

// topicFlags describe the killmails topic; serve and produce share them.
type topicFlags struct {
	Topic          string        `help:"Killmails topic." default:"killmails" env:"KILLFEED_TOPIC"`
	Partitions     int32         `help:"Partitions of the killmails topic when it is created." default:"16" env:"KILLFEED_PARTITIONS"`
	Retention      time.Duration `help:"Kafka retention of killmails (retention.ms) when the topic is created." default:"48h" env:"KILLFEED_RETENTION"`
	RetentionBytes int64         `help:"Kafka size bound per partition (retention.bytes) when the topic is created; -1 for none." default:"-1" env:"KILLFEED_RETENTION_BYTES"`
}

// ensure creates the topic if it is missing and returns its partition count.
func (t topicFlags) ensure(ctx context.Context, cl *kgo.Client) (int32, error) {
	return topics.EnsureKillmails(ctx, kadm.NewClient(cl), topics.Killmails{
		Name: t.Topic, Partitions: t.Partitions, Retention: t.Retention, RetentionBytes: t.RetentionBytes,
	})
}

// sourceFlags choose where killmails come from and tune the producer; serve
// and produce share them.
type sourceFlags struct {
	Source       string        `help:"Where killmails come from: none, file (NDJSON, see --file), stdin (NDJSON) or synthetic (generated)." enum:"none,file,stdin,synthetic" default:"none" env:"KILLFEED_SOURCE"`
	File         string        `help:"NDJSON file to read with --source file: one killmail per line, as ESI+zkb, a zKillboard package or an R2Z2 file." type:"path" env:"KILLFEED_FILE"`
	Count        int64         `help:"Synthetic: killmails to generate; 0 for no end." default:"0" env:"KILLFEED_COUNT"`
	Rate         float64       `help:"Synthetic: killmails per second; 0 for as fast as Kafka takes them." default:"5" env:"KILLFEED_RATE"`
	Seed         uint64        `help:"Synthetic: random seed, for a reproducible run; 0 picks one from the clock and logs it." default:"0" env:"KILLFEED_SEED"`
	DedupeWindow int           `help:"Killmail ids remembered to drop re-published killmails (about 40 bytes each); 0 turns deduplication off." default:"1000000" env:"KILLFEED_DEDUPE_WINDOW"`
	Reread       int           `help:"Records read back from the end of the topic at start, so a restart does not store killmails again; 0 for none." default:"50000" env:"KILLFEED_REREAD"`
	Progress     time.Duration `help:"Interval between progress lines on long runs." default:"5s" env:"KILLFEED_PROGRESS"`
}

// validate checks the flags that depend on each other.
func (s *sourceFlags) validate() error {
	if s.Source == "file" && s.File == "" {
		return errors.New("--source file needs --file PATH")
	}
	if s.Source != "file" && s.File != "" {
		return fmt.Errorf("--file is only read with --source file, not --source %s", s.Source)
	}
	if s.Rate < 0 || s.Count < 0 {
		return errors.New("--rate and --count must not be negative")
	}
	return nil
}

// produce runs the configured source into topic with cl until the source
// ends or ctx is done (a normal end: what was read is flushed), logging a
// summary line.
func (s *sourceFlags) produce(ctx context.Context, log *slog.Logger, cl *kgo.Client, topic string) error {
	src, describe, closeSrc, err := s.open()
	if err != nil {
		return err
	}
	defer closeSrc()

	reread := s.Reread
	if reread == 0 {
		reread = -1 // the flag's 0 means none; the library's 0 means default
	}
	dedupe := s.DedupeWindow
	if dedupe == 0 {
		dedupe = -1
	}
	p, err := producer.New(cl, producer.Options{
		Topic:            topic,
		DedupeWindow:     dedupe,
		Reread:           reread,
		Logger:           log,
		ProgressInterval: s.Progress,
	})
	if err != nil {
		return err
	}
	log.Info("producing killmails", append([]any{"topic", topic}, describe...)...)

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
		return fmt.Errorf("producing to topic %q: %w", topic, err)
	}
	log.Info("produce finished", attrs...)
	return nil
}

// open opens the configured source. describe are log attributes naming it;
// closeSrc releases it.
func (s *sourceFlags) open() (src producer.Source, describe []any, closeSrc func(), err error) {
	switch s.Source {
	case "file":
		f, err := os.Open(s.File)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("opening killmail file: %w", err)
		}
		return producer.NewNDJSON(f, producer.NDJSONOptions{Name: s.File}), []any{"source", "file", "file", s.File}, func() { f.Close() }, nil
	case "stdin":
		// A read from a terminal or an idle pipe cannot be interrupted, so
		// the interrupt must not wait for the next line.
		return &interruptible{src: producer.NewNDJSON(os.Stdin, producer.NDJSONOptions{Name: "stdin"})}, []any{"source", "stdin"}, func() {}, nil
	case "synthetic":
		seed := s.Seed
		if seed == 0 {
			seed = uint64(time.Now().UnixNano())
		}
		src := producer.NewSynthetic(producer.SyntheticOptions{Count: s.Count, Rate: s.Rate, Seed: seed})
		return src, []any{"source", "synthetic", "count", s.Count, "rate", s.Rate, "seed", seed}, func() {}, nil
	}
	return nil, nil, nil, fmt.Errorf("source %q cannot be opened", s.Source)
}

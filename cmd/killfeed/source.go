package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
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

// sourceFlags tune the killmail sources and the producer; serve and
// produce share them. The choice of source (--source) is each command's own,
// because their defaults differ: serve ingests R2Z2 unless told otherwise,
// produce must be told.
type sourceFlags struct {
	File         string        `help:"NDJSON file to read with --source file: one killmail per line, as ESI+zkb, a zKillboard package or an R2Z2 file." type:"path" env:"KILLFEED_FILE"`
	Count        int64         `help:"Synthetic: killmails to generate; 0 for no end." default:"0" env:"KILLFEED_COUNT"`
	Rate         float64       `help:"Synthetic: killmails per second; 0 for as fast as Kafka takes them." default:"5" env:"KILLFEED_RATE"`
	Seed         uint64        `help:"Synthetic: random seed, for a reproducible run; 0 picks one from the clock and logs it." default:"0" env:"KILLFEED_SEED"`
	DedupeWindow int           `help:"Killmail ids remembered to drop re-published killmails (about 40 bytes each); 0 turns deduplication off." default:"1000000" env:"KILLFEED_DEDUPE_WINDOW"`
	Reread       int           `help:"Records read back from the end of the topic at start, so a restart does not store killmails again; 0 for none." default:"50000" env:"KILLFEED_REREAD"`
	Progress     time.Duration `help:"Interval between progress lines on long runs." default:"5s" env:"KILLFEED_PROGRESS"`

	R2Z2URL         string `name:"r2z2-url" help:"R2Z2: zKillboard's R2Z2 base URL; also the key of the cursor." default:"https://r2z2.zkillboard.com" env:"KILLFEED_R2Z2_URL"`
	R2Z2Contact     string `name:"r2z2-contact" help:"R2Z2: your contact (an email address, say), added to the User-Agent so zKillboard can reach you instead of blocking you." env:"KILLFEED_R2Z2_CONTACT"`
	R2Z2Start       int64  `name:"r2z2-start" help:"R2Z2: first sequence to ingest when there is no cursor yet, to backfill what R2Z2 still holds; 0 starts live, where sequence.json points." default:"0" env:"KILLFEED_R2Z2_START"`
	R2Z2CursorTopic string `name:"r2z2-cursor-topic" help:"R2Z2: compacted topic holding the last ingested sequence; one per killmails topic." default:"killfeed-r2z2-cursor" env:"KILLFEED_R2Z2_CURSOR_TOPIC"`
	// Pacing against the real R2Z2 must stay at its defaults (zKillboard
	// bans impolite clients); the flags exist for tests against a fake
	// one, and are hidden so nobody is invited to lower them.
	R2Z2RequestInterval time.Duration `name:"r2z2-request-interval" hidden:"" help:"R2Z2: least time between two requests." default:"100ms" env:"KILLFEED_R2Z2_REQUEST_INTERVAL"`
	R2Z2PollInterval    time.Duration `name:"r2z2-poll-interval" hidden:"" help:"R2Z2: wait after a 404 before asking again." default:"6s" env:"KILLFEED_R2Z2_POLL_INTERVAL"`
}

// validate checks the flags that depend on each other, for source.
func (s *sourceFlags) validate(source string) error {
	if source == "file" && s.File == "" {
		return errors.New("--source file needs --file PATH")
	}
	if source != "file" && s.File != "" {
		return fmt.Errorf("--file is only read with --source file, not --source %s", source)
	}
	if s.Rate < 0 || s.Count < 0 {
		return errors.New("--rate and --count must not be negative")
	}
	if s.R2Z2Start < 0 {
		return errors.New("--r2z2-start must not be negative")
	}
	if s.R2Z2RequestInterval <= 0 || s.R2Z2PollInterval <= 0 {
		return errors.New("--r2z2-request-interval and --r2z2-poll-interval must be positive")
	}
	return nil
}

// produce runs source into topic with cl until the source ends or ctx is
// done (a normal end: what was read is stored), logging a summary line.
func (s *sourceFlags) produce(ctx context.Context, log *slog.Logger, cl *kgo.Client, topic, source string) error {
	run, err := s.prepare(log, cl, topic, source, nil)
	if err != nil {
		return err
	}
	return run(ctx)
}

// prepare builds source, so that a bad configuration fails before anything
// runs, and returns the function that runs it into topic. The function
// returns nil when the source ends or ctx stops it. Progress goes to m when
// it is not nil.
func (s *sourceFlags) prepare(log *slog.Logger, cl *kgo.Client, topic, source string, m *sourceMetrics) (func(context.Context) error, error) {
	reread := s.Reread
	if reread == 0 {
		reread = -1 // the flag's 0 means none; the library's 0 means default
	}
	dedupe := s.DedupeWindow
	if dedupe == 0 {
		dedupe = -1
	}
	if source == "r2z2" {
		r, err := producer.NewR2Z2(cl, producer.R2Z2Options{
			URL:              s.R2Z2URL,
			Topic:            topic,
			CursorTopic:      s.R2Z2CursorTopic,
			Start:            s.R2Z2Start,
			UserAgent:        userAgent(),
			Contact:          s.R2Z2Contact,
			RequestInterval:  s.R2Z2RequestInterval,
			PollInterval:     s.R2Z2PollInterval,
			DedupeWindow:     dedupe,
			Reread:           reread,
			Logger:           log,
			ProgressInterval: s.Progress,
			Progress:         m.r2z2ProgressFunc(),
		})
		if err != nil {
			return nil, err
		}
		return func(ctx context.Context) error { return runR2Z2(ctx, log, r, topic, m) }, nil
	}

	src, describe, closeSrc, err := s.open(source)
	if err != nil {
		return nil, err
	}
	p, err := producer.New(cl, producer.Options{
		Topic:            topic,
		DedupeWindow:     dedupe,
		Reread:           reread,
		Logger:           log,
		ProgressInterval: s.Progress,
		Progress:         m.producerProgressFunc(),
	})
	if err != nil {
		closeSrc()
		return nil, err
	}
	return func(ctx context.Context) error {
		defer closeSrc()
		log.Info("producing killmails", append([]any{"topic", topic}, describe...)...)
		stats, err := p.Run(ctx, src)
		if f := m.producerProgressFunc(); f != nil {
			f(stats) // the final counts; progress reports stop with Run
		}
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
	}, nil
}

// runR2Z2 ingests R2Z2 until ctx is done, logging a summary line. It only
// returns an error for what retrying cannot fix; R2Z2 or Kafka being
// unreachable is waited out.
func runR2Z2(ctx context.Context, log *slog.Logger, r *producer.R2Z2, topic string, m *sourceMetrics) error {
	log.Info("ingesting R2Z2", "topic", topic, "user_agent", r.UserAgent())
	stats, err := r.Run(ctx)
	if f := m.r2z2ProgressFunc(); f != nil {
		f(stats)
	}
	attrs := []any{
		"cursor", stats.Cursor,
		"fetched", stats.Fetched,
		"produced", stats.Produced,
		"rejected", stats.Rejected,
		"duplicates", stats.Duplicates,
		"missing", stats.Missing,
		"commits", stats.Commits,
		"restarts", stats.Restarts,
		"reread", stats.Reread,
		"elapsed", stats.Elapsed.Round(time.Millisecond),
		"per_second", int64(stats.PerSecond()),
	}
	if len(stats.RejectedBy) > 0 {
		attrs = append(attrs, "rejected_by", stats.RejectedBy)
	}
	if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		log.Info("R2Z2 ingestion stopped", attrs...)
		return nil
	}
	log.Error("R2Z2 ingestion failed", attrs...)
	return fmt.Errorf("ingesting R2Z2 into topic %q: %w", topic, err)
}

// userAgent is the User-Agent sent to R2Z2: the program, its version and
// where to learn about it, as zKillboard asks.
func userAgent() string {
	version := "dev"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		version = strings.TrimPrefix(bi.Main.Version, "v")
	}
	return "killfeed/" + version + " (+https://github.com/killfeed/killfeed)"
}

// open opens the configured source. describe are log attributes naming it;
// closeSrc releases it.
func (s *sourceFlags) open(source string) (src producer.Source, describe []any, closeSrc func(), err error) {
	switch source {
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
	return nil, nil, nil, fmt.Errorf("source %q cannot be opened", source)
}

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/killfeed/killfeed/producer"
)

// produceCmd writes killmails from R2Z2, a file, stdin or the synthetic
// generator to the killmails topic.
type produceCmd struct {
	Brokers     []string `help:"Kafka seed brokers, host:port, comma separated. The default is the embedded broker of 'killfeed serve'." default:"127.0.0.1:9092" env:"KILLFEED_BROKERS"`
	Source      string   `help:"Where killmails come from: r2z2 (zKillboard's live feed), file (NDJSON, see --file), stdin (NDJSON) or synthetic (generated)." enum:"r2z2,file,stdin,synthetic" required:"" env:"KILLFEED_SOURCE"`
	topicFlags  `embed:""`
	sourceFlags `embed:""`
}

// Validate checks the flags that depend on each other.
func (c *produceCmd) Validate() error {
	if c.Source == "" {
		return errors.New("--source is required: r2z2, file, stdin or synthetic")
	}
	return c.sourceFlags.validate(c.Source)
}

// Run ensures the topic exists, then produces until the source ends or the
// process is interrupted. Interrupting is a normal end: what was read is
// flushed (for R2Z2: committed with its cursor), the summary logged, and the
// exit status is zero.
func (c *produceCmd) Run(ctx context.Context, log *slog.Logger) error {
	if err := c.Validate(); err != nil {
		return err
	}
	// producer.ClientOpts: retry through a Kafka restart behind a proxy.
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.Brokers...)}, producer.ClientOpts()...)...)
	if err != nil {
		return fmt.Errorf("connecting to Kafka %v: %w", c.Brokers, err)
	}
	defer cl.Close()
	if _, err := c.ensure(ctx, cl); err != nil {
		if ctx.Err() != nil {
			// Interrupted while starting: still a normal end.
			log.Info("produce stopped before it started")
			return nil
		}
		return err
	}
	return c.produce(ctx, log, cl, c.Topic, c.Source)
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

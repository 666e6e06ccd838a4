package feedsvc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/killfeed/killfeed/internal/killmail"
)

// parseRecord turns a killmails record into an event, or says why it cannot.
// Any producer may write the topic (kcat included), so nothing is assumed
// beyond the convention: key = system id, value = a killmail JSON object.
func parseRecord(r *kgo.Record) (*event, error) {
	sys, err := killmail.ParseKey(r.Key)
	if err != nil {
		return nil, err
	}
	v := bytes.TrimSpace(r.Value)
	if len(v) == 0 || v[0] != '{' {
		return nil, fmt.Errorf("record value is not a JSON object")
	}
	// Protobuf clients get the killmail as a google.protobuf.Struct. A
	// record that cannot be one (a number beyond a double, deep nesting)
	// would fail every protobuf read of its system, so it is skipped too.
	// The transcoder is a strict JSON parser, so this also validates.
	if _, err := jsonToStructWire(v); err != nil {
		return nil, fmt.Errorf("record value is not a usable killmail JSON object: %w", err)
	}
	return &event{system: sys, partition: r.Partition, offset: r.Offset, timeMS: r.Timestamp.UnixMilli(), json: v}, nil
}

// tail reads the killmails topic into memory for ever and wakes streams
// waiting on the systems it touched.
type tail struct {
	svc     *Service
	cl      *kgo.Client
	adm     *kadm.Client
	skipped atomic.Int64
	// loaded is closed once memory holds everything that was in the topic
	// when the service started.
	loaded chan struct{}
}

// run consumes until ctx ends.
func (t *tail) run(ctx context.Context, ends kadm.ListedOffsets) {
	caughtUp := ends.Error() != nil // nothing to wait for if unknown
	check := func() {
		if caughtUp {
			return
		}
		m := t.svc.mem
		m.mu.RLock()
		done := true
		ends.Each(func(o kadm.ListedOffset) {
			ps := m.parts[o.Partition]
			if o.Offset > 0 && (ps == nil || ps.next < o.Offset) {
				done = false
			}
		})
		m.mu.RUnlock()
		if done {
			caughtUp = true
			close(t.loaded)
		}
	}
	if caughtUp {
		close(t.loaded)
	}
	for {
		check()
		fs := t.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return
		}
		fs.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				t.svc.log.Warn("reading killmails topic", "topic", topic, "partition", p, "err", err)
			}
		})
		t.apply(fs)
	}
}

// apply stores one fetch and notifies the streams of the systems touched.
// Records are parsed before the memory lock is taken, so readers wait only
// for the appends.
func (t *tail) apply(fs kgo.Fetches) {
	type parsed struct {
		r *kgo.Record
		e *event
	}
	var batch []parsed
	fs.EachPartition(func(p kgo.FetchTopicPartition) {
		if p.Err != nil {
			return
		}
		for _, r := range p.Records {
			e, err := parseRecord(r)
			if err != nil {
				t.svc.metrics.skipped.Inc()
				if n := t.skipped.Add(1); n <= 10 || n%1000 == 0 {
					t.svc.log.Warn("skipping killmails record", "partition", r.Partition, "offset", r.Offset, "skipped_total", n, "err", err)
				}
			}
			batch = append(batch, parsed{r, e})
		}
	})
	if len(batch) == 0 {
		return
	}
	m := t.svc.mem
	touched := make([]int64, 0, len(batch))
	m.mu.Lock()
	for _, b := range batch {
		if b.e == nil {
			// Skipped, but read: memory is complete past it.
			m.startPartitionLocked(b.r.Partition, b.r.Offset).next = b.r.Offset + 1
			continue
		}
		m.appendLocked(b.e)
		touched = append(touched, b.e.system)
	}
	m.mu.Unlock()
	t.svc.metrics.ingested.Add(float64(len(touched)))
	t.svc.streams.notify(touched)
}

// refreshLogStarts reads every partition's log start and drops from memory
// what retention (or the consumed-records trim) deleted.
func (t *tail) refreshLogStarts(ctx context.Context) error {
	starts, err := t.adm.ListStartOffsets(ctx, t.svc.opts.Topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return fmt.Errorf("listing log start offsets of %q: %w", t.svc.opts.Topic, err)
	}
	total := 0
	starts.Each(func(o kadm.ListedOffset) {
		total += t.svc.mem.advanceLogStart(o.Partition, o.Offset)
	})
	if total > 0 {
		t.svc.metrics.trimmed.Add(float64(total))
		t.svc.log.Info("retention removed events from memory", "events", total)
	}
	return nil
}

// maintain refreshes log starts and, when enabled, trims consumed records,
// every interval until ctx ends.
func (t *tail) maintain(ctx context.Context, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if t.svc.opts.TrimConsumed {
			if err := t.trimConsumed(ctx); err != nil {
				t.svc.log.Warn("trimming consumed records", "err", err)
			}
		}
		if err := t.refreshLogStarts(ctx); err != nil && ctx.Err() == nil {
			t.svc.log.Warn("refreshing log start offsets", "err", err)
		}
	}
}

// trimConsumed deletes, per partition, the records every client has
// consumed (the seeds' min-offset garbage collection), with DeleteRecords.
func (t *tail) trimConsumed(ctx context.Context) error {
	mins := t.svc.store.MinOffsets()
	if len(mins) == 0 {
		return nil
	}
	to := kadm.Offsets{}
	for p, o := range mins {
		to.AddOffset(t.svc.opts.Topic, p, o, -1)
	}
	resp, err := t.adm.DeleteRecords(ctx, to)
	if err != nil {
		return fmt.Errorf("deleting consumed records: %w", err)
	}
	return resp.Error()
}

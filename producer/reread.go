package producer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/killfeed/killfeed/internal/killmail"
)

// readBack reads the last Options.Reread records of the topic and remembers
// their killmail ids, so that killmails produced before a restart (by this
// producer or another one) are dropped as duplicates. It returns how many
// ids it read.
func (p *Producer) readBack(ctx context.Context) (int64, error) {
	return readBackIDs(ctx, p.cl, p.opts.Topic, p.opts.Reread, p.opts.RereadTimeout, p.opts.Logger, p.ids)
}

// readBackIDs adds to ids the killmail ids of the last budget committed
// records of topic, read through a client made from base's options. After
// timeout it logs a warning and returns what it has.
//
// It reads with read_committed, up to each partition's last stable offset:
// a killmail whose transaction was aborted (an R2Z2 batch cut short) was
// never stored, so it must not count as already written.
//
// A killmail always lands on the partition of its system, so a duplicate
// can only be on the partition the new copy goes to: partitions share the
// budget in proportion to their length, which keeps roughly the same span of
// time on each.
func readBackIDs(ctx context.Context, base *kgo.Client, topic string, budget int, timeout time.Duration, log *slog.Logger, ids *idWindow) (int64, error) {
	// kadm.Client.Close would close base, which belongs to the caller, so
	// this one is never closed; it holds no resources of its own.
	adm := kadm.NewClient(base)
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		if errors.Is(err, kerr.UnknownTopicOrPartition) {
			return 0, fmt.Errorf("reading back killmail ids: topic %q does not exist: %w", topic, err)
		}
		return 0, fmt.Errorf("reading back topic %q: listing start offsets: %w", topic, err)
	}
	ends, err := adm.ListCommittedOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return 0, fmt.Errorf("reading back topic %q: listing end offsets: %w", topic, err)
	}

	var all []partSpan
	var total int64
	ends.Each(func(o kadm.ListedOffset) {
		start, _ := starts.Lookup(topic, o.Partition)
		if n := o.Offset - start.Offset; n > 0 {
			all = append(all, partSpan{o.Partition, start.Offset, o.Offset})
			total += n
		}
	})
	var spans []partSpan
	for _, s := range all {
		n := s.end - s.from
		if total > int64(budget) {
			n = n * int64(budget) / total
		}
		if n > 0 {
			spans = append(spans, partSpan{s.partition, s.end - n, s.end})
		}
	}
	if len(spans) == 0 {
		return 0, nil
	}

	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var n, unreadable int64
	err = readCommitted(rctx, base, topic, spans, func(r *kgo.Record) {
		if id, ok := recordKillmailID(r); ok {
			ids.add(id)
			n++
		} else {
			unreadable++
		}
	})
	if err != nil && ctx.Err() == nil && rctx.Err() != nil {
		log.Warn("reading back the topic took too long; duplicates of older killmails may be produced",
			"topic", topic, "timeout", timeout, "ids", n)
		err = nil
	}
	if err != nil {
		return n, fmt.Errorf("reading back topic %q: %w", topic, err)
	}
	log.Debug("read back killmail ids", "topic", topic, "ids", n, "unreadable", unreadable)
	return n, nil
}

// partSpan is a range of offsets [from, end) of one partition.
type partSpan struct {
	partition int32
	from, end int64
}

// readIdle is how long readCommitted waits for a record before it takes a
// partition as read to its end. It only matters when the entry just below
// the end offset cannot be seen: compaction removed it, or it belongs to an
// aborted transaction; otherwise reading ends on seeing that entry.
const readIdle = 5 * time.Second

// readCommitted calls fn, in offset order per partition, with every
// committed data record of topic in spans, read through a client made from
// base's options (brokers, TLS, SASL) so that base is not disturbed. It
// returns ctx's error if ctx ends first.
func readCommitted(ctx context.Context, base *kgo.Client, topic string, spans []partSpan, fn func(*kgo.Record)) error {
	parts := map[int32]kgo.Offset{}
	want := map[int32]int64{} // partition -> end offset to read up to
	for _, s := range spans {
		if s.end > s.from {
			parts[s.partition] = kgo.NewOffset().At(s.from)
			want[s.partition] = s.end
		}
	}
	if len(want) == 0 {
		return nil
	}
	opts := append(slices.Clone(base.Opts()),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Transaction markers take offsets too: the last entry below the
		// end is usually one. Seeing them tells when a partition is done.
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(250*time.Millisecond),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("creating a consuming client: %w", err)
	}
	defer cl.Close()

	for len(want) > 0 {
		pctx, cancel := context.WithTimeout(ctx, readIdle)
		fetches := cl.PollFetches(pctx)
		idle := pctx.Err() != nil
		cancel()
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fetchError(fetches); err != nil {
			return err
		}
		if idle && fetches.NumRecords() == 0 {
			// Everything readable has been read; see readIdle.
			return nil
		}
		fetches.EachRecord(func(r *kgo.Record) {
			end, ok := want[r.Partition]
			if !ok {
				return
			}
			if r.Offset >= end {
				// Past the end listed when reading began: newer than
				// what the caller asked for.
				delete(want, r.Partition)
				return
			}
			if !r.Attrs.IsControl() {
				fn(r)
			}
			if r.Offset+1 >= end {
				delete(want, r.Partition)
			}
		})
	}
	return nil
}

func fetchError(fetches kgo.Fetches) error {
	var first error
	fetches.EachError(func(topic string, partition int32, err error) {
		if first == nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
			first = fmt.Errorf("fetching partition %d: %w", partition, err)
		}
	})
	return first
}

// recordKillmailID returns the killmail id of a record: from its header when
// this producer wrote it, else from the value, so records written by other
// producers (kcat, another tool) are recognised too.
func recordKillmailID(r *kgo.Record) (int64, bool) {
	for _, h := range r.Headers {
		if h.Key == HeaderKillmailID {
			id, err := strconv.ParseInt(string(h.Value), 10, 64)
			return id, err == nil && id > 0
		}
	}
	km, err := killmail.Normalize(r.Value)
	return km.ID, err == nil
}

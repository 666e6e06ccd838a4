package producer

import (
	"context"
	"errors"
	"fmt"
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
//
// A killmail always lands on the partition of its system, so a duplicate
// can only be on the partition the new copy goes to: partitions share the
// budget in proportion to their length, which keeps roughly the same span of
// time on each.
func (p *Producer) readBack(ctx context.Context) (int64, error) {
	topic := p.opts.Topic
	// kadm.Client.Close would close p.cl, which belongs to the caller, so
	// this one is never closed; it holds no resources of its own.
	adm := kadm.NewClient(p.cl)
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
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return 0, fmt.Errorf("reading back topic %q: listing end offsets: %w", topic, err)
	}

	type span struct {
		partition int32
		from, end int64
	}
	var spans []span
	var total int64
	ends.Each(func(o kadm.ListedOffset) {
		start, _ := starts.Lookup(topic, o.Partition)
		if n := o.Offset - start.Offset; n > 0 {
			spans = append(spans, span{o.Partition, start.Offset, o.Offset})
			total += n
		}
	})
	if total == 0 {
		return 0, nil
	}
	budget := int64(p.opts.Reread)
	parts := map[int32]kgo.Offset{}
	want := map[int32]int64{} // partition -> end offset to read up to
	for i, s := range spans {
		n := s.end - s.from
		if total > budget {
			n = n * budget / total
		}
		if n <= 0 {
			continue
		}
		spans[i].from = s.end - n
		parts[s.partition] = kgo.NewOffset().At(spans[i].from)
		want[s.partition] = s.end
	}
	if len(parts) == 0 {
		return 0, nil
	}

	// A separate client, made from the caller's options (brokers, TLS,
	// SASL), so that reading does not disturb producing on p.cl.
	opts := append(slices.Clone(p.cl.Opts()),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts}),
		kgo.FetchMaxWait(250*time.Millisecond),
	)
	tail, err := kgo.NewClient(opts...)
	if err != nil {
		return 0, fmt.Errorf("reading back topic %q: creating a consuming client: %w", topic, err)
	}
	defer tail.Close()

	rctx, cancel := context.WithTimeout(ctx, p.opts.RereadTimeout)
	defer cancel()
	var n, unreadable int64
	for len(want) > 0 {
		fetches := tail.PollFetches(rctx)
		if rctx.Err() != nil {
			if err := ctx.Err(); err != nil {
				return n, fmt.Errorf("reading back topic %q: %w", topic, err)
			}
			p.opts.Logger.Warn("reading back the topic took too long; duplicates of older killmails may be produced",
				"topic", topic, "timeout", p.opts.RereadTimeout, "ids", n)
			break
		}
		if err := fetchError(fetches); err != nil {
			return n, fmt.Errorf("reading back topic %q: %w", topic, err)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			if id, ok := recordKillmailID(r); ok {
				p.ids.add(id)
				n++
			} else {
				unreadable++
			}
			if end, ok := want[r.Partition]; ok && r.Offset+1 >= end {
				delete(want, r.Partition)
			}
		})
	}
	p.opts.Logger.Debug("read back killmail ids", "topic", topic, "ids", n, "unreadable", unreadable)
	return n, nil
}

func fetchError(fetches kgo.Fetches) error {
	var first error
	fetches.EachError(func(topic string, partition int32, err error) {
		if first == nil {
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

package producer

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/killfeed/killfeed/internal/topics"
)

// r2z2Cursor is the value of a cursor record: JSON, so kcat shows it and an
// operator can write one by hand.
type r2z2Cursor struct {
	// Sequence is the last R2Z2 sequence whose killmail is in the
	// killmails topic (or was skipped for good: rejected, a duplicate,
	// missing from the feed). Ingestion continues at Sequence+1.
	Sequence int64 `json:"sequence"`
	// Topic is the killmails topic the cursor belongs to, so that two
	// deployments sharing a cursor topic by mistake are told so instead
	// of one silently skipping what the other ingested. Cursors written
	// by hand may leave it out.
	Topic string `json:"topic,omitempty"`
}

// cursorRecord returns the record that stores c under key in topic.
func cursorRecord(topic, key string, c r2z2Cursor) *kgo.Record {
	v, _ := json.Marshal(c) // cannot fail: an int and a string
	return &kgo.Record{Topic: topic, Key: []byte(key), Value: v}
}

// ensureCursorTopic creates the cursor topic, compacted with no time bound,
// if it is missing, and refuses an existing one that is not compacted:
// retention would delete the cursor and ingestion would start over.
func ensureCursorTopic(ctx context.Context, base *kgo.Client, topic string) error {
	if err := topics.EnsureCompacted(ctx, kadm.NewClient(base), topic, 0); err != nil {
		return fmt.Errorf("R2Z2 cursor topic: %w", err)
	}
	return nil
}

// storedCursor is a cursor as read back, with the offset of its record.
type storedCursor struct {
	r2z2Cursor
	offset int64
}

// readCursor returns the last committed cursor stored under key in topic,
// and whether there is one. A tombstone (a record with no value) deletes the
// cursor, so an operator can make ingestion start afresh.
//
// It reads with read_committed: a cursor is written in the same transaction
// as the killmails it covers, so the cursor it returns never runs ahead of
// or behind what the killmails topic holds. The caller must have fenced
// earlier writers of key first (see txWriter), or a transaction still
// completing could move the cursor after it was read.
func readCursor(ctx context.Context, base *kgo.Client, topic, key string) (storedCursor, bool, error) {
	adm := kadm.NewClient(base)
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return storedCursor{}, false, fmt.Errorf("reading the R2Z2 cursor from topic %q: listing start offsets: %w", topic, err)
	}
	ends, err := adm.ListCommittedOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return storedCursor{}, false, fmt.Errorf("reading the R2Z2 cursor from topic %q: listing end offsets: %w", topic, err)
	}
	var spans []partSpan
	ends.Each(func(o kadm.ListedOffset) {
		start, _ := starts.Lookup(topic, o.Partition)
		spans = append(spans, partSpan{o.Partition, start.Offset, o.Offset})
	})

	var (
		cur    storedCursor
		found  bool
		badErr error
	)
	err = readCommitted(ctx, base, topic, spans, func(r *kgo.Record) {
		if string(r.Key) != key {
			return
		}
		if r.Value == nil {
			cur, found, badErr = storedCursor{}, false, nil
			return
		}
		var c r2z2Cursor
		if err := json.Unmarshal(r.Value, &c); err != nil || c.Sequence < 0 {
			// Starting over cannot fix it: an operator must.
			badErr = &permanentError{fmt.Errorf("the R2Z2 cursor at %s/%d@%d is not {\"sequence\":N}: %.100q; write a correct one or a tombstone under key %q", topic, r.Partition, r.Offset, r.Value, key)}
			return
		}
		cur, found, badErr = storedCursor{c, r.Offset}, true, nil
	})
	if err != nil {
		return storedCursor{}, false, fmt.Errorf("reading the R2Z2 cursor from topic %q: %w", topic, err)
	}
	if badErr != nil {
		return storedCursor{}, false, badErr
	}
	return cur, found, nil
}

// waitStable waits until the last stable offset of rec's partition has
// passed rec, so that read_committed readers see rec if its transaction
// committed and never will if it aborted. Kafka writes the commit markers
// after answering EndTxn, so this can take a moment; it gives up after
// timeout.
func waitStable(ctx context.Context, base *kgo.Client, rec *kgo.Record, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	adm := kadm.NewClient(base)
	for wait := 5 * time.Millisecond; ; wait = min(2*wait, 200*time.Millisecond) {
		ends, err := adm.ListCommittedOffsets(ctx, rec.Topic)
		if err == nil {
			err = ends.Error()
		}
		if err == nil {
			if o, ok := ends.Lookup(rec.Topic, rec.Partition); ok && o.Offset > rec.Offset {
				return nil
			}
		}
		if err := sleepCtx(ctx, wait); err != nil {
			return fmt.Errorf("waiting for the R2Z2 cursor's transaction to be decided: %w", err)
		}
	}
}

package producer

import (
	"fmt"
	"log/slog"
	"strconv"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/killfeed/killfeed/internal/killmail"
)

// This file holds what every writer of the killmails topic shares (the
// idempotent Producer and the transactional R2Z2 ingester), so that records
// look the same whoever wrote them.

// normalizeRecord normalises one raw killmail and checks that Kafka will take
// it. On failure it returns the rejection reason (a killmail.Reason,
// ReasonTooLarge or ReasonOther) with the error.
func normalizeRecord(raw []byte, maxValueBytes int) (killmail.Killmail, string, error) {
	km, err := killmail.Normalize(raw)
	if err != nil {
		reason := string(killmail.ReasonOf(err))
		if reason == "" {
			reason = ReasonOther
		}
		return killmail.Killmail{}, reason, err
	}
	if len(km.JSON) > maxValueBytes {
		return killmail.Killmail{}, ReasonTooLarge,
			fmt.Errorf("killmail %d is %d bytes normalised; the limit is %d", km.ID, len(km.JSON), maxValueBytes)
	}
	return km, "", nil
}

// newRecord returns the Kafka record for a normalised killmail: key the solar
// system (so Kafka's murmur2 partitioner keeps a system on one partition),
// value the normalised JSON, and the HeaderKillmailID header that readBack
// uses to recognise it.
func newRecord(topic string, km killmail.Killmail) *kgo.Record {
	return &kgo.Record{
		Topic:   topic,
		Key:     killmail.Key(km.SystemID),
		Value:   km.JSON,
		Headers: []kgo.RecordHeader{{Key: HeaderKillmailID, Value: strconv.AppendInt(nil, km.ID, 10)}},
	}
}

// defaultMaxValueBytes is the largest value cl can produce: its
// ProducerBatchMaxBytes less 1 KiB for the record and batch overhead.
func defaultMaxValueBytes(cl *kgo.Client) int {
	max, _ := cl.OptValue(kgo.ProducerBatchMaxBytes).(int32)
	if max <= 0 {
		max = 1_000_012 // franz-go's default
	}
	return int(max) - 1024
}

// logRejection logs the n-th rejection of a run while n is within limit, and
// says once that later ones are only counted, so a feed of garbage cannot
// flood the log.
func logRejection(log *slog.Logger, n, limit int64, where, reason string, err error) {
	switch {
	case n <= limit:
		log.Warn("killmail rejected", "where", where, "reason", reason, "error", err)
	case n == limit+1:
		log.Warn("further rejections are counted but not logged", "logged", limit)
	}
}

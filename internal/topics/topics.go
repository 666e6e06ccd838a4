package topics

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// MaxPartitions is the most partitions the killmails topic may have: an
// event_id packs the partition into its low 10 bits (see feedsvc).
const MaxPartitions = 1024

// Killmails describes the killmails topic. The zero value of each field means
// the default noted beside it.
type Killmails struct {
	// Name of the topic. Default "killmails".
	Name string
	// Partitions used when the topic is created. Default 16. An existing
	// topic keeps its partition count.
	Partitions int32
	// ReplicationFactor used when the topic is created. Default -1: the
	// broker's default.replication.factor.
	ReplicationFactor int16
	// Retention is Kafka's retention.ms. Default 48h.
	Retention time.Duration
	// RetentionBytes is Kafka's retention.bytes, per partition. Default -1
	// (no size bound).
	RetentionBytes int64
}

func (k Killmails) withDefaults() Killmails {
	if k.Name == "" {
		k.Name = "killmails"
	}
	if k.Partitions == 0 {
		k.Partitions = 16
	}
	if k.ReplicationFactor == 0 {
		k.ReplicationFactor = -1
	}
	if k.Retention == 0 {
		k.Retention = 48 * time.Hour
	}
	if k.RetentionBytes == 0 {
		k.RetentionBytes = -1
	}
	return k
}

// EnsureKillmails creates the killmails topic if it is missing and returns
// its partition count. An existing topic is left as it is, so an operator's
// changes to it are kept.
func EnsureKillmails(ctx context.Context, adm *kadm.Client, k Killmails) (int32, error) {
	k = k.withDefaults()
	if k.Partitions < 1 || k.Partitions > MaxPartitions {
		return 0, fmt.Errorf("topic %q: partitions must be between 1 and %d, got %d", k.Name, MaxPartitions, k.Partitions)
	}
	configs := map[string]*string{
		"cleanup.policy":  kadm.StringPtr("delete"),
		"retention.ms":    kadm.StringPtr(strconv.FormatInt(k.Retention.Milliseconds(), 10)),
		"retention.bytes": kadm.StringPtr(strconv.FormatInt(k.RetentionBytes, 10)),
	}
	if err := create(ctx, adm, k.Name, k.Partitions, k.ReplicationFactor, configs); err != nil {
		return 0, err
	}
	if err := awaitTopic(ctx, adm, k.Name); err != nil {
		return 0, err
	}
	n, err := partitionCount(ctx, adm, k.Name)
	if err != nil {
		return 0, err
	}
	if n > MaxPartitions {
		return 0, fmt.Errorf("topic %q has %d partitions; killfeed supports at most %d", k.Name, n, MaxPartitions)
	}
	return n, nil
}

// EnsureCompacted creates a compacted topic with one partition if it is
// missing, and refuses an existing topic whose cleanup.policy does not
// include compact: on such a topic Kafka's retention would silently delete
// clients' positions.
func EnsureCompacted(ctx context.Context, adm *kadm.Client, name string, replicationFactor int16) error {
	if replicationFactor == 0 {
		replicationFactor = -1
	}
	configs := map[string]*string{
		"cleanup.policy": kadm.StringPtr("compact"),
		// Positions must outlive any time bound; expiry is killfeed's job.
		"retention.ms": kadm.StringPtr("-1"),
	}
	if err := create(ctx, adm, name, 1, replicationFactor, configs); err != nil {
		return err
	}
	if err := awaitTopic(ctx, adm, name); err != nil {
		return err
	}
	rcs, err := adm.DescribeTopicConfigs(ctx, name)
	if err != nil {
		return fmt.Errorf("describing topic %q: %w", name, err)
	}
	rc, err := rcs.On(name, nil)
	if err != nil {
		return fmt.Errorf("describing topic %q: %w", name, err)
	}
	if rc.Err != nil {
		return fmt.Errorf("describing topic %q: %w", name, rc.Err)
	}
	for _, c := range rc.Configs {
		if c.Key == "cleanup.policy" {
			policy := c.MaybeValue()
			if policy != "compact" && policy != "compact,delete" && policy != "delete,compact" {
				return fmt.Errorf("offsets topic %q has cleanup.policy=%q; it must be compacted (cleanup.policy=compact), or Kafka would delete clients' positions", name, policy)
			}
			return nil
		}
	}
	return fmt.Errorf("offsets topic %q: broker did not report cleanup.policy", name)
}

func create(ctx context.Context, adm *kadm.Client, name string, partitions int32, rf int16, configs map[string]*string) error {
	resp, err := adm.CreateTopic(ctx, partitions, rf, configs, name)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("creating topic %q: %w", name, err)
	}
	return nil
}

func partitionCount(ctx context.Context, adm *kadm.Client, name string) (int32, error) {
	tds, err := adm.ListTopics(ctx, name)
	if err != nil {
		return 0, fmt.Errorf("listing topic %q: %w", name, err)
	}
	td, ok := tds[name]
	if !ok {
		return 0, fmt.Errorf("topic %q not found after creating it", name)
	}
	if td.Err != nil {
		return 0, fmt.Errorf("listing topic %q: %w", name, td.Err)
	}
	return int32(len(td.Partitions)), nil
}

// awaitTopic waits until the broker answers for a topic the controller may
// have just created: CreateTopics returns before brokers apply the new
// metadata, and until then they answer UNKNOWN_TOPIC_OR_PARTITION. It polls
// DescribeConfigs, which goes to the broker each time; franz-go answers
// repeated Metadata requests (ListTopics) from a cache for MetadataMinAge
// (5 s), which would keep returning the stale error.
func awaitTopic(ctx context.Context, adm *kadm.Client, name string) error {
	backoff := 10 * time.Millisecond
	for {
		rcs, err := adm.DescribeTopicConfigs(ctx, name)
		if err == nil {
			var rc kadm.ResourceConfig
			if rc, err = rcs.On(name, nil); err == nil {
				err = rc.Err
			}
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, kerr.UnknownTopicOrPartition) {
			return fmt.Errorf("describing topic %q: %w", name, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topic %q: the broker does not know it yet: %w", name, ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

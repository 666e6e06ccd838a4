package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/killfeed/killfeed/internal/topics"
)

// Kafka is the cluster a benchmark run uses. Every topic it creates carries
// the run's prefix, so runs against a shared broker do not collide, and is
// deleted by Close.
type Kafka struct {
	Brokers []string
	prefix  string
	cl      *kgo.Client
	adm     *kadm.Client

	mu      sync.Mutex
	created []string
}

// NewKafka connects to brokers. prefix starts every topic name.
func NewKafka(ctx context.Context, brokers []string, prefix string) (*Kafka, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return nil, fmt.Errorf("connecting to Kafka %v: %w", brokers, err)
	}
	adm := kadm.NewClient(cl)
	if _, err := adm.BrokerMetadata(ctx); err != nil {
		cl.Close()
		return nil, fmt.Errorf("connecting to Kafka %v: %w", brokers, err)
	}
	return &Kafka{Brokers: brokers, prefix: prefix, cl: cl, adm: adm}, nil
}

// Topic returns the run's name for a topic.
func (k *Kafka) Topic(name string) string { return k.prefix + name }

// CreateKillmails creates a killmails topic as killfeed's own tooling does
// and returns its full name.
func (k *Kafka) CreateKillmails(ctx context.Context, name string, partitions int32) (string, error) {
	t := k.Topic(name)
	if _, err := topics.EnsureKillmails(ctx, k.adm, topics.Killmails{Name: t, Partitions: partitions}); err != nil {
		return "", err
	}
	k.remember(t)
	return t, nil
}

// CreateCompacted creates a compacted one-partition topic, as the offsets
// store's, and returns its full name.
func (k *Kafka) CreateCompacted(ctx context.Context, name string) (string, error) {
	t := k.Topic(name)
	if err := topics.EnsureCompacted(ctx, k.adm, t, 0); err != nil {
		return "", err
	}
	k.remember(t)
	return t, nil
}

func (k *Kafka) remember(t string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.created = append(k.created, t)
}

// DeleteTopic deletes a topic the run created, freeing the broker's memory.
func (k *Kafka) DeleteTopic(ctx context.Context, topic string) error {
	resp, err := k.adm.DeleteTopic(ctx, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return fmt.Errorf("deleting topic %q: %w", topic, err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for i, t := range k.created {
		if t == topic {
			k.created = append(k.created[:i], k.created[i+1:]...)
			break
		}
	}
	return nil
}

// Close deletes the topics the run created and still has, and disconnects.
func (k *Kafka) Close(ctx context.Context) error {
	k.mu.Lock()
	left := append([]string(nil), k.created...)
	k.mu.Unlock()
	var errs []error
	for _, t := range left {
		errs = append(errs, k.DeleteTopic(ctx, t))
	}
	k.cl.Close()
	return errors.Join(errs...)
}

// Fill produces n records to topic as fast as the cluster takes them;
// record(i) gives the i-th key and value. progress, if set, is called with
// the count acknowledged so far about every second.
func Fill(ctx context.Context, brokers []string, topic string, n int, record func(i int) (key, value []byte), progress func(done int)) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topic),
		kgo.ProducerLinger(5*time.Millisecond), kgo.MaxBufferedRecords(100_000))
	if err != nil {
		return fmt.Errorf("creating producer: %w", err)
	}
	defer cl.Close()
	var (
		mu    sync.Mutex
		first error
		acked int
	)
	stop := make(chan struct{})
	defer close(stop)
	if progress != nil {
		go func() {
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					mu.Lock()
					done := acked
					mu.Unlock()
					progress(done)
				}
			}
		}()
	}
	for i := range n {
		key, value := record(i)
		cl.Produce(ctx, &kgo.Record{Key: key, Value: value}, func(_ *kgo.Record, err error) {
			mu.Lock()
			defer mu.Unlock()
			acked++
			if err != nil && first == nil {
				first = err
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		return fmt.Errorf("producing to %q: %w", topic, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if first != nil {
		return fmt.Errorf("producing to %q: %w", topic, first)
	}
	return nil
}

// ReadResult is what ReadAll read.
type ReadResult struct {
	Records int64         `json:"records"`
	Bytes   int64         `json:"bytes"`
	Took    time.Duration `json:"took"`
}

// ReadAll reads topic from its start to the end offsets at the call with a
// plain franz-go consumer, as fast as it can, counting records and value
// bytes: the raw Kafka reference for throughput.
func ReadAll(ctx context.Context, brokers []string, topic string) (ReadResult, error) {
	adm, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return ReadResult{}, fmt.Errorf("creating admin client: %w", err)
	}
	ends, err := kadm.NewClient(adm).ListEndOffsets(ctx, topic)
	adm.Close()
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return ReadResult{}, fmt.Errorf("listing end offsets of %q: %w", topic, err)
	}
	want := map[int32]int64{}
	start := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
			start[o.Partition] = kgo.NewOffset().AtStart()
		}
	})
	if len(want) == 0 {
		return ReadResult{}, nil
	}
	began := time.Now()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: start}))
	if err != nil {
		return ReadResult{}, fmt.Errorf("creating consumer: %w", err)
	}
	defer cl.Close()
	var res ReadResult
	for len(want) > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if err := fs.Err0(); err != nil {
			return res, fmt.Errorf("reading %q: %w", topic, err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			res.Records++
			res.Bytes += int64(len(r.Value))
			if end, ok := want[r.Partition]; ok && r.Offset+1 >= end {
				delete(want, r.Partition)
			}
		})
	}
	res.Took = time.Since(began)
	return res, nil
}

// EndOffsets lists a topic's end offsets, per partition.
func EndOffsets(ctx context.Context, brokers []string, topic string) (map[int32]int64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return nil, fmt.Errorf("creating admin client: %w", err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("listing end offsets of %q: %w", topic, err)
	}
	out := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out, nil
}

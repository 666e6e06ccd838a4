package producer_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// newCluster starts an in-process Kafka-compatible broker with the given
// topics, each with partitions partitions.
func newCluster(t testing.TB, partitions int32, topics ...string) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, topics...))
	if err != nil {
		t.Fatalf("starting kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// newClient returns a client for c with franz-go's default producer
// settings, closed when the test ends.
func newClient(t testing.TB, c *kfake.Cluster, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, opts...)...)
	if err != nil {
		t.Fatalf("creating Kafka client: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// readTopic returns every record in topic, partition by partition in
// offset order.
func readTopic(t testing.TB, c *kfake.Cluster, topic string) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl := newClient(t, c, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil || ends.Error() != nil {
		t.Fatalf("listing end offsets of %q: %v %v", topic, err, ends.Error())
	}
	var total int64
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	var recs []*kgo.Record
	for int64(len(recs)) < total {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records of %q before timing out", len(recs), total, topic)
		}
		fs.EachError(func(_ string, p int32, err error) { t.Fatalf("fetching %q partition %d: %v", topic, p, err) })
		recs = append(recs, fs.Records()...)
	}
	return recs
}

// sliceSource delivers fixed records, as a file would, and names them
// "item N".
type sliceSource struct {
	items []string
	n     int
}

func (s *sliceSource) Next(ctx context.Context) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.n >= len(s.items) {
		return nil, io.EOF
	}
	s.n++
	return []byte(s.items[s.n-1]), nil
}

func (s *sliceSource) Location() string { return "item " + strconv.Itoa(s.n) }

// km returns a small killmail in ESI shape with a zkb block.
func km(id, system int64) string {
	return fmt.Sprintf(`{"attackers":[{"character_id":2112625428,"damage_done":100,"final_blow":true,"ship_type_id":587}],`+
		`"killmail_id":%d,"killmail_time":"2025-06-01T12:34:56Z","solar_system_id":%d,`+
		`"victim":{"character_id":95465499,"damage_taken":100,"items":[],"ship_type_id":670},`+
		`"zkb":{"locationID":40009081,"hash":"h%d","totalValue":10000.01,"npc":false,"solo":true,"awox":false,"labels":["pvp"]}}`, id, system, id)
}

// testLogger sends a component's log to the test log, so a failure shows
// what the producer said.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// murmur2 is Kafka's key hash (org.apache.kafka.common.utils.Utils.murmur2),
// written out independently of franz-go so the test checks franz-go's
// partitioner against Kafka's algorithm, not against itself.
func murmur2(data []byte) uint32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	h := seed ^ uint32(len(data))
	for len(data) >= 4 {
		k := binary.LittleEndian.Uint32(data)
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
		data = data[4:]
	}
	switch len(data) {
	case 3:
		h ^= uint32(data[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(data[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(data[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}

// kafkaPartition is the partition Kafka's default partitioner picks for a
// keyed record.
func kafkaPartition(key []byte, partitions int) int32 {
	return int32(murmur2(key)&0x7fffffff) % int32(partitions)
}

//go:build integration

package integration

import (
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/killfeed/killfeed/internal/killmail"
)

// TestProduceConsume checks the harness end to end on a real broker: records
// keyed like killfeed's come back with their keys, values and headers, each
// key on one partition and in the order produced.
func TestProduceConsume(t *testing.T) {
	t.Parallel()
	topic := uniqueTopic(t)
	createTopic(t, newAdmin(t), topic, 3, nil)

	systems := []int64{30000142, 30002187, 30002659, 30002510, 30045349, 31000005, 32000001}
	const perSystem = 40
	var sent []*kgo.Record
	for i := range perSystem {
		for _, sys := range systems {
			sent = append(sent, &kgo.Record{
				Topic:   topic,
				Key:     killmail.Key(sys),
				Value:   fmt.Appendf(nil, `{"killmail_id":%d,"solar_system_id":%d}`, i, sys),
				Headers: []kgo.RecordHeader{{Key: "source", Value: []byte("smoke")}},
			})
		}
	}
	if err := newClient(t).ProduceSync(testContext(t), sent...).FirstErr(); err != nil {
		t.Fatalf("producing: %v", err)
	}

	got := consumeAll(t, topic, len(sent))
	if len(got) != len(sent) {
		t.Fatalf("consumed %d records; want %d", len(got), len(sent))
	}
	partitionOf := map[string]int32{}
	usedPartitions := map[int32]bool{}
	next := map[string]int{} // per key: index of the next value expected
	for _, r := range got {
		key := string(r.Key)
		sys, err := killmail.ParseKey(r.Key)
		if err != nil {
			t.Fatalf("record at %d/%d: %v", r.Partition, r.Offset, err)
		}
		if p, ok := partitionOf[key]; ok && p != r.Partition {
			t.Errorf("key %s on partitions %d and %d; want one", key, p, r.Partition)
		}
		partitionOf[key] = r.Partition
		usedPartitions[r.Partition] = true
		want := fmt.Sprintf(`{"killmail_id":%d,"solar_system_id":%d}`, next[key], sys)
		if string(r.Value) != want {
			t.Errorf("key %s: record %d is %s; want %s (order lost?)", key, next[key], r.Value, want)
		}
		next[key]++
		if len(r.Headers) != 1 || r.Headers[0].Key != "source" || string(r.Headers[0].Value) != "smoke" {
			t.Errorf("record at %d/%d has headers %v; want source=smoke", r.Partition, r.Offset, r.Headers)
		}
	}
	for _, sys := range systems {
		if n := next[string(killmail.Key(sys))]; n != perSystem {
			t.Errorf("system %d: consumed %d records; want %d", sys, n, perSystem)
		}
	}
	// Seven keys on three partitions: all on one would mean keys are ignored.
	if len(usedPartitions) < 2 {
		t.Errorf("all records landed on partitions %v; want the keys spread", usedPartitions)
	}
}

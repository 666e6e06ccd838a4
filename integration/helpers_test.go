//go:build integration

package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// brokerAddr returns the host:port of the test broker, the address it
// advertises. It stays the same when the broker is restarted.
func brokerAddr() string { return kafka.addr }

// stopKafka stops the broker, keeping its data and address, and starts it
// again when the test ends if the test did not, so later tests find it
// running. A test that calls it must not call t.Parallel: sequential tests
// run while every parallel test is paused, so no other test sees the outage.
func stopKafka(t testing.TB) {
	t.Helper()
	if err := kafka.stop(testContext(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout+time.Minute)
		defer cancel()
		if err := kafka.start(ctx); err != nil {
			t.Errorf("restarting Kafka after the test: %v", err)
		}
	})
}

// startKafka starts the broker stopped by stopKafka and returns once it
// serves clients at brokerAddr again.
func startKafka(t testing.TB) {
	t.Helper()
	if err := kafka.start(testContext(t)); err != nil {
		t.Fatal(err)
	}
}

// testContext returns a context that ends when the test does, or after five
// minutes, so a hung call fails the test instead of the whole run.
func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// newClient returns a franz-go client for the test broker, closed when the
// test ends. opts come after the seed broker, so they can add to it.
func newClient(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokerAddr())}, opts...)...)
	if err != nil {
		t.Fatalf("creating a Kafka client: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// newAdmin returns an admin client for the test broker, closed when the
// test ends.
func newAdmin(t testing.TB) *kadm.Client {
	t.Helper()
	return kadm.NewClient(newClient(t))
}

// uniqueTopic returns a topic name no other test, and no earlier run
// against the same broker, uses: the test's name and a random suffix.
func uniqueTopic(t testing.TB) string {
	t.Helper()
	// Kafka allows [a-zA-Z0-9._-] and warns when names differ only in '.'
	// versus '_', so everything else becomes '-'.
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, t.Name())
	name = name[:min(len(name), 120)]
	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	return name + "-" + hex.EncodeToString(suffix[:])
}

// createTopic creates a topic and waits until the broker serves it, failing
// the test if that fails.
func createTopic(t testing.TB, adm *kadm.Client, name string, partitions int32, configs map[string]*string) {
	t.Helper()
	resp, err := adm.CreateTopic(testContext(t), partitions, 1, configs, name)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("creating topic %q: %v", name, err)
	}
	waitTopic(t, adm, name)
}

// waitTopic waits until the broker reports a topic's configs and a leader
// for each of its partitions. CreateTopics returns once the controller has
// the topic; the broker learns of it a moment later, and until then answers
// UNKNOWN_TOPIC_OR_PARTITION.
func waitTopic(t testing.TB, adm *kadm.Client, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(testContext(t), 30*time.Second)
	defer cancel()
	for {
		err := topicReady(ctx, adm, name)
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("topic %q not ready: %v", name, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// topicReady asks DescribeConfigs first: franz-go answers repeated Metadata
// requests (ListTopics) from a cache for MetadataMinAge (5 s), so asking
// Metadata too early would keep the stale "unknown topic" that long.
func topicReady(ctx context.Context, adm *kadm.Client, name string) error {
	rcs, err := adm.DescribeTopicConfigs(ctx, name)
	if err != nil {
		return err
	}
	rc, err := rcs.On(name, nil)
	if err != nil {
		return err
	}
	if rc.Err != nil {
		return rc.Err
	}
	tds, err := adm.ListTopics(ctx, name)
	if err != nil {
		return err
	}
	td := tds[name]
	if td.Err != nil {
		return td.Err
	}
	if len(td.Partitions) == 0 {
		return fmt.Errorf("no partitions yet")
	}
	for _, p := range td.Partitions {
		if p.Err != nil {
			return p.Err
		}
		if p.Leader < 0 {
			return fmt.Errorf("partition %d has no leader", p.Partition)
		}
	}
	return nil
}

// topicConfig returns the value of one config of a topic as the broker
// reports it (set on the topic or its default).
func topicConfig(t testing.TB, adm *kadm.Client, topic, key string) string {
	t.Helper()
	rcs, err := adm.DescribeTopicConfigs(testContext(t), topic)
	if err != nil {
		t.Fatalf("describing topic %q: %v", topic, err)
	}
	rc, err := rcs.On(topic, nil)
	if err == nil {
		err = rc.Err
	}
	if err != nil {
		t.Fatalf("describing topic %q: %v", topic, err)
	}
	for _, c := range rc.Configs {
		if c.Key == key {
			return c.MaybeValue()
		}
	}
	t.Fatalf("topic %q: broker reported no %s", topic, key)
	return ""
}

// consumeAll reads topic from the start until it has n records, failing the
// test if they do not arrive within a minute.
func consumeAll(t testing.TB, topic string, n int) []*kgo.Record {
	t.Helper()
	cl := newClient(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithTimeout(testContext(t), time.Minute)
	defer cancel()
	var recs []*kgo.Record
	for len(recs) < n {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consuming %q: got %d of %d records: %v", topic, len(recs), n, err)
		}
		fs.EachError(func(topic string, p int32, err error) {
			t.Fatalf("consuming %q partition %d: %v", topic, p, err)
		})
		recs = append(recs, fs.Records()...)
	}
	return recs
}

// requireTool returns the path of an external program the test needs. A
// developer without it gets a skip; in CI (CI=true) it is a failure, since
// .ci/test installs it and a skip there would hide a broken setup.
func requireTool(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not installed: %v", name, err)
	}
	t.Skipf("%s is not installed (.ci/test installs it): %v", name, err)
	return ""
}

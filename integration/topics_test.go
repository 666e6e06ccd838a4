//go:build integration

package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/killfeed/killfeed/internal/topics"
)

// TestEnsureCompactedCreatesCompactedTopic checks that the offsets topic
// killfeed creates on a real broker is compacted, never time-bounded, has
// one partition, and that ensuring it again is harmless.
func TestEnsureCompactedCreatesCompactedTopic(t *testing.T) {
	t.Parallel()
	adm := newAdmin(t)
	name := uniqueTopic(t)

	for i := range 2 { // the second call finds the topic it created
		if err := topics.EnsureCompacted(testContext(t), adm, name, 1); err != nil {
			t.Fatalf("EnsureCompacted #%d: %v", i+1, err)
		}
	}
	if got := topicConfig(t, adm, name, "cleanup.policy"); got != "compact" {
		t.Errorf("cleanup.policy = %q; want compact", got)
	}
	if got := topicConfig(t, adm, name, "retention.ms"); got != "-1" {
		t.Errorf("retention.ms = %q; want -1", got)
	}
	if got := partitions(t, adm, name); got != 1 {
		t.Errorf("partitions = %d; want 1", got)
	}
}

// TestEnsureRightAfterCreate checks that EnsureCompacted and EnsureKillmails
// succeed on topics they have just created. Kafka's CreateTopics returns
// once the controller has the topic; the broker that then answers
// DescribeConfigs or Metadata learns of it a moment later and until then
// says UNKNOWN_TOPIC_OR_PARTITION. One try often passes by luck, so this
// creates several topics.
func TestEnsureRightAfterCreate(t *testing.T) {
	t.Parallel()
	adm := newAdmin(t)
	const tries = 10
	for i := range tries {
		name := uniqueTopic(t)
		if err := topics.EnsureCompacted(testContext(t), adm, name, 1); err != nil {
			t.Fatalf("EnsureCompacted on a new topic (try %d of %d): %v", i+1, tries, err)
		}
		name = uniqueTopic(t)
		if _, err := topics.EnsureKillmails(testContext(t), adm, topics.Killmails{Name: name, Partitions: 4}); err != nil {
			t.Fatalf("EnsureKillmails on a new topic (try %d of %d): %v", i+1, tries, err)
		}
	}
}

// TestEnsureCompactedRefusesDeleteTopic checks that an existing offsets
// topic with cleanup.policy=delete is refused with an error that names the
// topic and the fix, and is left as it was.
func TestEnsureCompactedRefusesDeleteTopic(t *testing.T) {
	t.Parallel()
	adm := newAdmin(t)
	name := uniqueTopic(t)
	createTopic(t, adm, name, 1, map[string]*string{"cleanup.policy": kadm.StringPtr("delete")})

	err := topics.EnsureCompacted(testContext(t), adm, name, 1)
	if err == nil {
		t.Fatal("EnsureCompacted accepted a topic with cleanup.policy=delete")
	}
	for _, want := range []string{name, `cleanup.policy="delete"`, "cleanup.policy=compact"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	if got := topicConfig(t, adm, name, "cleanup.policy"); got != "delete" {
		t.Errorf("after the refusal cleanup.policy = %q; want it left at delete", got)
	}
}

// TestEnsureCompactedAcceptsCompactDelete checks that compaction combined
// with deletion, a setting operators use, is accepted as compacted.
func TestEnsureCompactedAcceptsCompactDelete(t *testing.T) {
	t.Parallel()
	adm := newAdmin(t)
	name := uniqueTopic(t)
	createTopic(t, adm, name, 1, map[string]*string{"cleanup.policy": kadm.StringPtr("compact,delete")})

	if err := topics.EnsureCompacted(testContext(t), adm, name, 1); err != nil {
		t.Fatalf("EnsureCompacted on a compact,delete topic: %v", err)
	}
}

// TestEnsureKillmails checks that the killmails topic is created with the
// requested partitions and retention, and that an existing topic keeps the
// partitions and settings an operator gave it.
func TestEnsureKillmails(t *testing.T) {
	t.Parallel()
	adm := newAdmin(t)

	t.Run("creates", func(t *testing.T) {
		t.Parallel()
		name := uniqueTopic(t)
		n, err := topics.EnsureKillmails(testContext(t), adm, topics.Killmails{Name: name, Partitions: 4, Retention: 2 * time.Hour})
		if err != nil {
			t.Fatalf("EnsureKillmails: %v", err)
		}
		if n != 4 || partitions(t, adm, name) != 4 {
			t.Errorf("EnsureKillmails returned %d partitions, broker has %d; want 4", n, partitions(t, adm, name))
		}
		if got := topicConfig(t, adm, name, "cleanup.policy"); got != "delete" {
			t.Errorf("cleanup.policy = %q; want delete", got)
		}
		if got := topicConfig(t, adm, name, "retention.ms"); got != "7200000" {
			t.Errorf("retention.ms = %q; want 7200000 (2h)", got)
		}
	})

	t.Run("keeps existing", func(t *testing.T) {
		t.Parallel()
		name := uniqueTopic(t)
		createTopic(t, adm, name, 2, map[string]*string{"retention.ms": kadm.StringPtr("60000")})
		n, err := topics.EnsureKillmails(testContext(t), adm, topics.Killmails{Name: name, Partitions: 8})
		if err != nil {
			t.Fatalf("EnsureKillmails: %v", err)
		}
		if n != 2 {
			t.Errorf("EnsureKillmails returned %d partitions; want the existing 2", n)
		}
		if got := topicConfig(t, adm, name, "retention.ms"); got != "60000" {
			t.Errorf("retention.ms = %q; want the operator's 60000 kept", got)
		}
	})
}

// partitions returns the partition count of a topic.
func partitions(t testing.TB, adm *kadm.Client, topic string) int {
	t.Helper()
	tds, err := adm.ListTopics(testContext(t), topic)
	if err != nil {
		t.Fatalf("listing topic %q: %v", topic, err)
	}
	td, ok := tds[topic]
	if !ok || td.Err != nil {
		t.Fatalf("listing topic %q: found %v, error %v", topic, ok, td.Err)
	}
	return len(td.Partitions)
}

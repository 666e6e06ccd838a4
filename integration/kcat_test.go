//go:build integration

package integration

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/killfeed/killfeed/internal/killmail"
)

// TestKcatMurmur2AgreesWithFranzGo checks that a producer nobody here wrote
// (kcat, on librdkafka) files a solar system's killmails on the same
// partition as franz-go's default partitioner, once told to use Kafka's
// murmur2 partitioner: per-system order holds only if every producer agrees.
func TestKcatMurmur2AgreesWithFranzGo(t *testing.T) {
	t.Parallel()
	kcat := requireTool(t, "kcat")
	topic := uniqueTopic(t)
	const partitions = 16 // the killmails topic's default; chance agreement is 1 in 16 per key
	createTopic(t, newAdmin(t), topic, partitions, nil)

	// Jita first, through kcat's -k as the README tells operators; the rest
	// in one run with keys parsed from the input lines.
	const jita = 30000142
	others := []int64{30002187, 30002659, 30002510, 30045349, 30000144, 31000005, 32000001}
	runKcat(t, kcat, topic, fmt.Sprintf("kcat-%d\n", jita), "-k", string(killmail.Key(jita)))
	var lines strings.Builder
	for _, sys := range others {
		fmt.Fprintf(&lines, "%s:kcat-%d\n", killmail.Key(sys), sys)
	}
	runKcat(t, kcat, topic, lines.String(), "-K", ":")

	systems := append([]int64{jita}, others...)
	var ours []*kgo.Record
	for _, sys := range systems {
		ours = append(ours, &kgo.Record{Topic: topic, Key: killmail.Key(sys), Value: fmt.Appendf(nil, "franz-%d", sys)})
	}
	if err := newClient(t).ProduceSync(testContext(t), ours...).FirstErr(); err != nil {
		t.Fatalf("producing with franz-go: %v", err)
	}

	partitionOf := map[string]int32{} // value -> partition
	for _, r := range consumeAll(t, topic, 2*len(systems)) {
		partitionOf[string(r.Value)] = r.Partition
	}
	used := map[int32]bool{}
	for _, sys := range systems {
		theirs, ok1 := partitionOf[fmt.Sprintf("kcat-%d", sys)]
		mine, ok2 := partitionOf[fmt.Sprintf("franz-%d", sys)]
		if !ok1 || !ok2 {
			t.Fatalf("system %d: kcat's record found %v, franz-go's found %v", sys, ok1, ok2)
		}
		if theirs != mine {
			t.Errorf("key %d: kcat (murmur2_random) chose partition %d, franz-go chose %d", sys, theirs, mine)
		}
		used[mine] = true
	}
	// Agreement is only evidence if the keys spread over partitions.
	if len(used) < 3 {
		t.Errorf("%d keys used only partitions %v; want them spread", len(systems), used)
	}
}

// runKcat produces input to topic with kcat and Kafka's murmur2 partitioner.
func runKcat(t *testing.T, kcat, topic, input string, args ...string) {
	t.Helper()
	argv := append([]string{"-P", "-b", brokerAddr(), "-t", topic, "-X", "topic.partitioner=murmur2_random"}, args...)
	cmd := exec.CommandContext(testContext(t), kcat, argv...)
	cmd.Stdin = strings.NewReader(input)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("kcat %s: %v\n%s", strings.Join(argv, " "), err, out.Bytes())
	}
	// kcat reports failed deliveries on stderr and may still exit 0.
	if bytes.Contains(out.Bytes(), []byte("ERROR")) || bytes.Contains(out.Bytes(), []byte("failed")) {
		t.Fatalf("kcat %s reported errors:\n%s", strings.Join(argv, " "), out.Bytes())
	}
}

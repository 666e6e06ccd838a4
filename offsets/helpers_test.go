package offsets_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/killfeed/killfeed/offsets"
)

// testTimeout bounds every Kafka round trip of a test, so a regression that
// hangs fails the test instead of the whole run.
const testTimeout = 20 * time.Second

func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func newCluster(t testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		t.Fatalf("starting kfake cluster: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// topicName turns a (sub)test name into a valid, unique topic name, so the
// cases of one test can share a cluster.
func topicName(t testing.TB) string {
	r := strings.NewReplacer("/", ".", " ", "_", "(", "", ")", "", ",", "", "'", "", "=", "")
	return "offsets." + r.Replace(t.Name())
}

// openStore opens a store and closes it when the test ends. A test may close
// it earlier: Close may be called again.
func openStore(t testing.TB, addrs []string, opts offsets.Options) *offsets.Store {
	t.Helper()
	s, err := offsets.Open(testCtx(t), addrs, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

func commit(t testing.TB, s *offsets.Store, client string, ps ...offsets.Position) {
	t.Helper()
	if err := s.Commit(testCtx(t), client, ps); err != nil {
		t.Fatalf("Commit(%q): %v", client, err)
	}
}

func syncStore(t testing.TB, s *offsets.Store) {
	t.Helper()
	if err := s.Sync(testCtx(t)); err != nil {
		t.Fatalf("Sync: %v", err)
	}
}

// pos is a position without its time, for comparing what a client resumes
// from.
type pos struct {
	sys  int64
	part int32
	off  int64
}

func (p pos) position() offsets.Position {
	return offsets.Position{SystemID: p.sys, Partition: p.part, Offset: p.off}
}

func positions(ps ...pos) []offsets.Position {
	out := make([]offsets.Position, len(ps))
	for i, p := range ps {
		out[i] = p.position()
	}
	return out
}

func strip(ps []offsets.Position) []pos {
	var out []pos
	for _, p := range ps {
		out = append(out, pos{p.SystemID, p.Partition, p.Offset})
	}
	return out
}

func wantPositions(t testing.TB, s *offsets.Store, client string, want ...pos) {
	t.Helper()
	if got := strip(s.Positions(client)); !slices.Equal(got, want) {
		t.Errorf("Positions(%q) = %v, want %v", client, got, want)
	}
}

// samePositions compares positions including their commit times.
func samePositions(a, b []offsets.Position) bool {
	return slices.EqualFunc(a, b, func(x, y offsets.Position) bool {
		return x.SystemID == y.SystemID && x.Partition == y.Partition && x.Offset == y.Offset && x.UpdatedAt.Equal(y.UpdatedAt)
	})
}

// clock is a settable clock for Options.Now, safe for the store's
// goroutines.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock {
	return &clock{t: time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)}
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// rawClient is a plain franz-go client, for writing to and reading the
// offsets topic the way another tool would.
func rawClient(t testing.TB, addrs []string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addrs...)}, opts...)...)
	if err != nil {
		t.Fatalf("creating kafka client: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// countRecords reads the whole topic and returns how many records it holds.
func countRecords(t testing.TB, addrs []string, topic string) int {
	t.Helper()
	ctx := testCtx(t)
	adm := kadm.NewClient(rawClient(t, addrs))
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		t.Fatalf("listing end offsets: %v", err)
	}
	end, ok := ends.Lookup(topic, 0)
	if !ok {
		t.Fatalf("no end offset for %s/0", topic)
	}
	if end.Offset == 0 {
		return 0
	}
	cl := rawClient(t, addrs, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{
		topic: {0: kgo.NewOffset().AtStart()},
	}))
	n := 0
	for {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("reading %s: %v", topic, err)
		}
		last := int64(-1)
		fs.EachRecord(func(r *kgo.Record) {
			n++
			last = r.Offset
		})
		if last+1 >= end.Offset {
			return n
		}
	}
}

func describeTopicConfig(t testing.TB, addrs []string, topic string) map[string]string {
	t.Helper()
	adm := kadm.NewClient(rawClient(t, addrs))
	rcs, err := adm.DescribeTopicConfigs(testCtx(t), topic)
	if err != nil {
		t.Fatalf("describing %s: %v", topic, err)
	}
	rc, err := rcs.On(topic, nil)
	if err == nil {
		err = rc.Err
	}
	if err != nil {
		t.Fatalf("describing %s: %v", topic, err)
	}
	out := map[string]string{}
	for _, c := range rc.Configs {
		out[c.Key] = c.MaybeValue()
	}
	return out
}

func (p pos) String() string { return fmt.Sprintf("%d/%d@%d", p.sys, p.part, p.off) }

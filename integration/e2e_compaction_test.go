//go:build integration

package integration

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/killfeed/killfeed/feedsvc"
	"github.com/killfeed/killfeed/internal/topics"
	killfeedv1 "github.com/killfeed/killfeed/proto/killfeed/v1"
)

// TestE2EPositionsSurviveCompaction has clients commit many times, lets the
// broker's log cleaner compact the positions topic (down to the last record
// of each client and system, and a deleted client's tombstones), then
// restarts killfeed, which rebuilds positions from the compacted topic:
// every client's positions are as they were, each continues exactly where it
// was (nothing again, nothing missing), and the deleted client stays
// deleted.
//
// topics_test.go checks that the positions topic is created compacted; this
// checks that compaction really runs on it and that killfeed reads the
// result right. The topic is made to compact now rather than in hours:
// segment.ms small (each segment but the last can be cleaned) and
// min.cleanable.dirty.ratio small; the test broker's cleaner backs off 1s.
func TestE2EPositionsSurviveCompaction(t *testing.T) {
	t.Parallel()
	topic := newKillmailsTopic(t, 2)
	offsetsTopic := offsetsTopicName(t)
	adm := newAdmin(t)
	if err := topics.EnsureCompacted(testContext(t), adm, offsetsTopic, 1); err != nil {
		t.Fatal(err)
	}
	setTopicConfig(t, adm, offsetsTopic, "segment.ms", "100")
	setTopicConfig(t, adm, offsetsTopic, "min.cleanable.dirty.ratio", "0.01")

	f := startFeed(t, "a", topic, offsetsTopic, feedsvc.Options{})
	if got := topicConfig(t, adm, offsetsTopic, "cleanup.policy"); got != "compact" {
		t.Fatalf("positions topic cleanup.policy = %q; want compact", got)
	}
	systems := []int64{jita, amarr, dodixie}
	var recs []*kgo.Record
	for i := range 90 {
		sys := systems[i%len(systems)]
		recs = append(recs, keyed(topic, sys, testKillmail(700_000_000+int64(i), sys)))
	}
	produceRecords(t, newClient(t), recs...)
	all := readTopic(t, topic, len(recs))
	waitServed(t, f, systems, len(all))

	// Many small commits, in rounds a little longer than segment.ms apart,
	// so they spread over many segments.
	readers := []string{"reader-1", "reader-2", "reader-3"}
	received := map[string][]got{}
	grpc := f.rpcPoller(grpcH2C)
	c := f.client(grpcH2C)
	var goneSystems []int64
	for round := range 12 {
		for i, r := range readers {
			res, err := grpc.Poll(testContext(t), r, systems, int32(1+i), killfeedv1.CommitMode_COMMIT_MODE_AUTO)
			if err != nil {
				t.Fatalf("%s: Poll: %v", r, err)
			}
			received[r] = append(received[r], res.Events...)
		}
		res, err := grpc.Poll(testContext(t), "committer", systems, 0, killfeedv1.CommitMode_COMMIT_MODE_EXPLICIT)
		if err != nil {
			t.Fatal(err)
		}
		// The committer commits one more event per round, system by system.
		commit(t, c, "committer", res.Events[:1])
		received["committer"] = append(received["committer"], res.Events[:1]...)
		if round == 5 {
			// "gone" read and committed, then is deleted: tombstones.
			if _, err := grpc.Poll(testContext(t), "gone", systems, 10, killfeedv1.CommitMode_COMMIT_MODE_AUTO); err != nil {
				t.Fatal(err)
			}
			for _, p := range positions(t, c, "gone") {
				goneSystems = append(goneSystems, p.GetSystemId())
			}
			if _, err := c.DeleteClient(testContext(t), connect.NewRequest(&killfeedv1.DeleteClientRequest{ClientId: "gone"})); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(120 * time.Millisecond)
	}
	clients := append(slices.Clone(readers), "committer")
	before := map[string][]*killfeedv1.Position{}
	for _, cl := range clients {
		before[cl] = positions(t, c, cl)
	}
	// One more record, in a new segment, makes every earlier segment
	// cleanable.
	if _, err := grpc.Poll(testContext(t), "roller", systems, 1, killfeedv1.CommitMode_COMMIT_MODE_AUTO); err != nil {
		t.Fatal(err)
	}

	written := endOffsets(t, adm, offsetsTopic)[0]
	var kept map[string]int
	eventually(t, 2*time.Minute, "the log cleaner compacting the positions topic", func() error {
		kept = recordsByKey(t, offsetsTopic, written)
		var dirty []string
		for key, n := range kept {
			if n > 1 {
				dirty = append(dirty, fmt.Sprintf("%s:%d", key, n))
			}
		}
		if len(dirty) > 0 {
			return fmt.Errorf("keys with more than one record: %v", dirty)
		}
		return nil
	})
	total := 0
	for _, n := range kept {
		total += n
	}
	t.Logf("the positions topic has %d records of the %d written (%d keys)", total, written, len(kept))
	if len(goneSystems) == 0 {
		t.Fatal("the client to delete had no positions")
	}
	for _, sys := range goneSystems {
		if n := kept[fmt.Sprintf("gone/%d", sys)]; n != 1 {
			t.Errorf("deleted client's key for system %d: %d records; want its tombstone", sys, n)
		}
	}

	f.restart()
	c, grpc = f.client(grpcH2C), f.rpcPoller(grpcH2C)
	for _, cl := range clients {
		if got := positions(t, c, cl); !samePositions(got, before[cl]) {
			t.Errorf("%s: positions after compaction and restart %v; before %v", cl, got, before[cl])
		}
	}
	if got := positions(t, c, "gone"); len(got) != 0 {
		t.Errorf("deleted client has positions after compaction and restart: %v", got)
	}
	for _, r := range readers {
		rest := drainPoll(t, grpc, r, systems, 50, len(all)-len(received[r]))
		checkExactlyOnce(t, r+" across compaction and restart", append(received[r], rest...), all)
	}
	res, err := grpc.Poll(testContext(t), "committer", systems, 0, killfeedv1.CommitMode_COMMIT_MODE_EXPLICIT)
	if err != nil {
		t.Fatal(err)
	}
	checkExactlyOnce(t, "committer across compaction and restart", append(received["committer"], res.Events...), all)
	// The deleted client starts over, like a new one.
	checkExactlyOnce(t, "deleted client", drainPoll(t, grpc, "gone", systems, 0, len(all)), all)
}

// recordsByKey reads the single-partition topic up to end and counts the
// records of each key.
func recordsByKey(t testing.TB, topic string, end int64) map[string]int {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokerAddr()), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(testContext(t), 30*time.Second)
	defer cancel()
	out := map[string]int{}
	for {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("reading %s: %v (so far %v)", topic, err, out)
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Fatalf("reading %s: %v", topic, err) })
		last := int64(-1)
		fs.EachRecord(func(r *kgo.Record) {
			out[string(r.Key)]++
			last = r.Offset
		})
		if last >= end-1 {
			return out
		}
	}
}

//go:build integration

package integration

import (
	"fmt"
	"maps"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/killfeed/killfeed/feedsvc"
	killfeedv1 "github.com/killfeed/killfeed/proto/killfeed/v1"
)

// TestE2ERetentionReportsLoss lets Kafka's retention delete killmails that
// clients had not read yet (retention.ms set small on the topic; the test
// broker checks retention every second) and checks what those clients see:
// Poll (Connect JSON and REST), Next (REST) and Subscribe (gRPC) report the
// loss once, per system, as a gap from the client's position to the oldest
// retained event with the number of killmails lost, and the client then
// continues from the oldest retained event. A client that never read the
// systems, or had read all of their killmails that were deleted, is owed
// nothing and is told of no loss.
func TestE2ERetentionReportsLoss(t *testing.T) {
	t.Parallel()
	topic := newKillmailsTopic(t, 2)
	f := startFeed(t, "a", topic, offsetsTopicName(t), feedsvc.Options{})
	cl := newClient(t)
	adm := newAdmin(t)
	systems := []int64{jita, amarr}
	nextID := int64(600_000_000)
	produced := 0
	produce := func(sys int64, n int) {
		for range n {
			produced++
			nextID++
			produceRecords(t, cl, keyed(topic, sys, testKillmail(nextID, sys)))
		}
	}

	// Every client reads the first killmail of each system.
	produce(jita, 1)
	produce(amarr, 1)
	first := readTopic(t, topic, 2)
	waitServed(t, f, systems, 2)
	clients := []string{"poll-json", "poll-rest", "next-rest", "subscriber"}
	for _, c := range clients {
		res, err := f.rpcPoller(grpcH2C).Poll(testContext(t), c, systems, 0, killfeedv1.CommitMode_COMMIT_MODE_AUTO)
		if err != nil || len(res.Events) != 2 {
			t.Fatalf("%s: first Poll: %d events, %v", c, len(res.Events), err)
		}
	}

	// Then Kafka's retention deletes what came next, unread.
	produce(jita, 3)
	produce(amarr, 2)
	waitServed(t, f, systems, 7)
	// Except by one client, which reads everything first: retention then
	// removes only what it read, and other systems' killmails after its
	// positions, on both partitions. That is no loss to it.
	if res, err := f.rpcPoller(grpcH2C).Poll(testContext(t), "caught-up", systems, 0, killfeedv1.CommitMode_COMMIT_MODE_AUTO); err != nil || len(res.Events) != 7 {
		t.Fatalf("caught-up: Poll before retention: %d events, %v", len(res.Events), err)
	}
	others := map[int32]bool{}
	for sys := int64(30_000_200); len(others) < 2; sys++ {
		nextID++
		r := keyed(topic, sys, testKillmail(nextID, sys))
		produceRecords(t, cl, r)
		others[r.Partition] = true
		produced++
	}
	lostAll := readTopic(t, topic, produced)
	ends := endOffsets(t, adm, topic)
	setTopicConfig(t, adm, topic, "retention.ms", "1")
	eventually(t, time.Minute, "retention deleting the topic's records", func() error {
		if starts := startOffsets(t, adm, topic); !maps.Equal(starts, ends) {
			return fmt.Errorf("log start offsets %v; end offsets %v", starts, ends)
		}
		return nil
	})
	setTopicConfig(t, adm, topic, "retention.ms", "3600000") // keep what comes now
	t.Logf("retention removed offsets below %v", ends)

	// New killmails, retained; the service learns the new log starts.
	produce(jita, 2)
	produce(amarr, 1)
	retained := readTopic(t, topic, 3) // reads from the log start
	for id := range retained {
		if _, old := lostAll[id]; old {
			t.Fatalf("event %d is still in the topic after retention", id)
		}
	}
	if err := f.service().RefreshRetention(testContext(t)); err != nil {
		t.Fatal(err)
	}

	// What each client must be told: per system, from its position (after
	// the first killmail) to the partition's new log start.
	wantGaps := map[int64]gotGap{}
	for _, s := range first {
		p, off := int32(s.EventID&1023), s.EventID>>10
		wantGaps[s.SystemID] = gotGap{SystemID: s.SystemID, FromEventID: eventID(p, off+1), ToEventID: eventID(p, ends[p]), LostEvents: map[int64]int64{jita: 3, amarr: 2}[s.SystemID]}
	}
	checkGaps := func(who string, gaps []gotGap) {
		t.Helper()
		if len(gaps) != len(wantGaps) {
			t.Errorf("%s: loss reports %+v; want %+v", who, gaps, wantGaps)
			return
		}
		for _, g := range gaps {
			if g != wantGaps[g.SystemID] {
				t.Errorf("%s: loss report %+v; want %+v", who, g, wantGaps[g.SystemID])
			}
		}
	}

	waitServed(t, f, systems, len(retained))
	for _, p := range []poller{f.rpcPoller(connectJSON), f.restPoller()} {
		c := map[string]string{"connect-json-http1@a": "poll-json", "rest@a": "poll-rest"}[p.Name()]
		res, err := p.Poll(testContext(t), c, systems, 0, killfeedv1.CommitMode_COMMIT_MODE_AUTO)
		if err != nil {
			t.Fatalf("%s: %v", p.Name(), err)
		}
		checkGaps("Poll "+p.Name(), res.Gaps)
		checkExactlyOnce(t, "Poll "+p.Name()+" after the loss", res.Events, retained)
		again, err := p.Poll(testContext(t), c, systems, 0, killfeedv1.CommitMode_COMMIT_MODE_AUTO)
		if err != nil || len(again.Gaps) != 0 || len(again.Events) != 0 {
			t.Errorf("%s: Poll after the report: %+v, %v; want nothing (each loss is reported once)", p.Name(), again, err)
		}
	}

	// Next: the gaps come with the first event after them.
	rest := f.restPoller()
	var nextGaps []gotGap
	var nexts []got
	for range len(retained) + 1 {
		res, err := rest.Next(testContext(t), "next-rest", systems, killfeedv1.CommitMode_COMMIT_MODE_AUTO)
		if err != nil {
			t.Fatalf("REST next: %v", err)
		}
		nextGaps = append(nextGaps, res.Gaps...)
		nexts = append(nexts, res.Events...)
	}
	checkGaps("REST next", nextGaps)
	checkExactlyOnce(t, "REST next after the loss", nexts, retained)

	// Subscribe: the gaps, then the retained events, then backfill_done.
	s := subscribe(t, "Subscribe grpc", f.client(grpcH2C), &killfeedv1.SubscribeRequest{ClientId: "subscriber", SystemIds: systems})
	evs, gaps := s.untilBackfillDone(t, 30*time.Second)
	checkGaps("Subscribe", gaps)
	checkExactlyOnce(t, "Subscribe after the loss", evs, retained)

	// The caught-up client is told of no loss.
	caughtUp, err := f.rpcPoller(connectJSON).Poll(testContext(t), "caught-up", systems, 0, killfeedv1.CommitMode_COMMIT_MODE_AUTO)
	if err != nil || len(caughtUp.Gaps) != 0 {
		t.Errorf("caught-up: gaps %v, %v; want none (retention removed only what it had read)", caughtUp.Gaps, err)
	}
	checkExactlyOnce(t, "caught-up", caughtUp.Events, retained)

	// A newcomer is owed nothing that was deleted.
	res, err := f.rpcPoller(connectJSON).Poll(testContext(t), "newcomer", systems, 0, killfeedv1.CommitMode_COMMIT_MODE_AUTO)
	if err != nil || len(res.Gaps) != 0 {
		t.Errorf("newcomer: gaps %v, %v; want none", res.Gaps, err)
	}
	checkExactlyOnce(t, "newcomer", res.Events, retained)
}

// setTopicConfig sets one config of a topic and waits until the broker
// reports the new value.
func setTopicConfig(t testing.TB, adm *kadm.Client, topic, key, value string) {
	t.Helper()
	resp, err := adm.AlterTopicConfigs(testContext(t), []kadm.AlterConfig{{Op: kadm.SetConfig, Name: key, Value: kadm.StringPtr(value)}}, topic)
	if err == nil {
		for _, r := range resp {
			if r.Err != nil {
				err = fmt.Errorf("%w: %s", r.Err, r.ErrMessage)
			}
		}
	}
	if err != nil {
		t.Fatalf("setting %s=%s on %s: %v", key, value, topic, err)
	}
	eventually(t, 30*time.Second, "the broker applying "+key, func() error {
		if got := topicConfig(t, adm, topic, key); got != value {
			return fmt.Errorf("%s = %s", key, got)
		}
		return nil
	})
}

// TestE2ERetentionBehindMemoryIsNeverSilent covers a client so far behind
// that its next events are no longer in the service's memory (more than
// MaxEventsPerSystem since) when retention deletes them, before the service
// has noticed (its maintenance runs every 30s by default; here not at all).
// Its Poll reads them from Kafka, where they are gone. Every killmail after
// the client's position must then be delivered or reported lost, never
// skipped without a word; a call may fail (unavailable) while the service
// catches up with the new log start, and the client retries.
func TestE2ERetentionBehindMemoryIsNeverSilent(t *testing.T) {
	t.Parallel()
	topic := newKillmailsTopic(t, 1)
	f := startFeed(t, "a", topic, offsetsTopicName(t), feedsvc.Options{MaxEventsPerSystem: 3, MaintainEvery: time.Hour})
	cl := newClient(t)
	adm := newAdmin(t)
	nextID := int64(650_000_000)
	produce := func(n int) {
		for range n {
			nextID++
			produceRecords(t, cl, keyed(topic, jita, testKillmail(nextID, jita)))
		}
	}
	systems := []int64{jita}
	produce(1)
	waitServed(t, f, systems, 1)
	p := f.rpcPoller(connectJSON)
	if res, err := p.Poll(testContext(t), "late", systems, 0, killfeedv1.CommitMode_COMMIT_MODE_AUTO); err != nil || len(res.Events) != 1 {
		t.Fatalf("first Poll: %+v, %v", res, err)
	}
	produce(6) // memory keeps the last 3
	owed := readTopic(t, topic, 7).subset(func(s stored) bool { return s.EventID>>10 >= 1 })
	waitServed(t, f, systems, 7) // from memory (the last 3) and Kafka
	ends := endOffsets(t, adm, topic)
	setTopicConfig(t, adm, topic, "retention.ms", "1")
	eventually(t, time.Minute, "retention deleting the topic's records", func() error {
		if starts := startOffsets(t, adm, topic); starts[0] != ends[0] {
			return fmt.Errorf("log start %d; end %d", starts[0], ends[0])
		}
		return nil
	})
	setTopicConfig(t, adm, topic, "retention.ms", "3600000")
	produce(1)
	for id, s := range readTopic(t, topic, 1) {
		owed[id] = s
	}

	// Poll until the newest killmail arrives; account for every one owed.
	var delivered []got
	var gaps []gotGap
	var failures int
	eventually(t, time.Minute, "the late client reaching the newest killmail", func() error {
		res, err := p.Poll(testContext(t), "late", systems, 0, killfeedv1.CommitMode_COMMIT_MODE_AUTO)
		if err != nil {
			failures++
			if codeOf(err) != connect.CodeUnavailable {
				t.Errorf("Poll: %v; want success or unavailable", err)
			}
			return err
		}
		delivered = append(delivered, res.Events...)
		gaps = append(gaps, res.Gaps...)
		if len(delivered) == 0 || delivered[len(delivered)-1].EventID != eventID(0, ends[0]) {
			return fmt.Errorf("delivered %d so far", len(delivered))
		}
		return nil
	})
	seen := map[int64]int{}
	for _, g := range delivered {
		seen[g.EventID]++
	}
	for id := range owed {
		covered := seen[id] == 1
		for _, g := range gaps {
			covered = covered || id >= g.FromEventID && id < g.ToEventID
		}
		if !covered {
			t.Errorf("killmail event %d was neither delivered once nor reported lost (delivered %d times; gaps %+v)", id, seen[id], gaps)
		}
	}
	t.Logf("delivered %d, gaps %+v, %d failed calls", len(delivered), gaps, failures)
}

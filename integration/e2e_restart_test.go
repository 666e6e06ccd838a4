//go:build integration

package integration

import (
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/killfeed/killfeed/feedsvc"
	killfeedv1 "github.com/killfeed/killfeed/proto/killfeed/v1"
	"github.com/killfeed/killfeed/proto/killfeed/v1/killfeedv1connect"
)

// TestE2EServiceRestartKeepsPositions restarts killfeed (Close, then New on
// the same cluster, as a deploy does) while clients are part-way through the
// feed, one of them with a stream open, and killmails are produced while it
// is down. Afterwards every client continues exactly where its committed
// position was: its positions read the same, nothing it already got comes
// again, and nothing is missing, including what was produced during the
// restart. An open stream ends with unavailable, as documented.
func TestE2EServiceRestartKeepsPositions(t *testing.T) {
	t.Parallel()
	topic := newKillmailsTopic(t, 4)
	f := startFeed(t, "a", topic, offsetsTopicName(t), feedsvc.Options{})
	cl := newClient(t)
	systems := []int64{jita, amarr, dodixie, rens, thera}
	nextID := int64(300_000_000)
	produceN := func(n int) {
		var recs []*kgo.Record
		for range n {
			nextID++
			sys := systems[nextID%int64(len(systems))]
			recs = append(recs, keyed(topic, sys, testKillmail(nextID, sys)))
		}
		produceRecords(t, cl, recs...)
	}

	produceN(40)
	batch1 := readTopic(t, topic, 40)
	waitServed(t, f, systems, len(batch1))

	ctx := testContext(t)
	grpc, rest, cjson := f.rpcPoller(grpcH2C), f.restPoller(), f.rpcPoller(connectJSON)

	// "poller" reads part of the feed with Poll (gRPC, automatic commits).
	res, err := grpc.Poll(ctx, "poller", systems, 15, killfeedv1.CommitMode_COMMIT_MODE_AUTO)
	if err != nil || len(res.Events) != 15 || !res.More {
		t.Fatalf("poller: %d events, more=%v, err %v; want 15 and more", len(res.Events), res.More, err)
	}
	pollerBefore := res.Events

	// "nexter" takes five events with the REST /next route.
	var nexterBefore []got
	for range 5 {
		res, err := rest.Next(ctx, "nexter", systems, killfeedv1.CommitMode_COMMIT_MODE_UNSPECIFIED)
		if err != nil || len(res.Events) != 1 {
			t.Fatalf("nexter: %v, %v", res, err)
		}
		nexterBefore = append(nexterBefore, res.Events...)
	}

	// "committer" reads everything (explicit mode) but commits only the
	// first 25 events it processed.
	res, err = cjson.Poll(ctx, "committer", systems, 0, killfeedv1.CommitMode_COMMIT_MODE_EXPLICIT)
	if err != nil || len(res.Events) != len(batch1) {
		t.Fatalf("committer: %d events, err %v; want %d", len(res.Events), err, len(batch1))
	}
	committed := res.Events[:25]
	commit(t, f.client(connectJSON), "committer", committed)

	// "streamer" has a stream open (automatic commits) when the service
	// stops; it has received the whole backfill.
	streamer := subscribe(t, "streamer", f.client(connectJSON), &killfeedv1.SubscribeRequest{ClientId: "streamer", SystemIds: systems})
	streamedBefore, _ := streamer.untilBackfillDone(t, 30*time.Second)
	checkExactlyOnce(t, "streamer before the restart", streamedBefore, batch1)

	before := map[string][]*killfeedv1.Position{}
	for _, c := range []string{"poller", "nexter", "committer", "streamer"} {
		before[c] = positions(t, f.client(grpcH2C), c)
	}

	f.stop()
	// The stream ends with unavailable: reconnect and resume.
	if m, err := streamer.next(t, 10*time.Second); m != nil || codeOf(err) != connect.CodeUnavailable {
		t.Errorf("open stream at shutdown: got %v, %v; want it to end with unavailable", m, err)
	}
	produceN(20) // while killfeed is down
	f.start()

	all := readTopic(t, topic, 60)
	for c, want := range before {
		got := positions(t, f.client(grpcH2C), c)
		if !samePositions(got, want) {
			t.Errorf("%s: positions after the restart %v; before %v", c, got, want)
		}
	}

	grpc, rest, cjson = f.rpcPoller(grpcH2C), f.restPoller(), f.rpcPoller(connectJSON)
	after := drainPoll(t, grpc, "poller", systems, 9, len(all)-len(pollerBefore))
	checkExactlyOnce(t, "poller across the restart", append(pollerBefore, after...), all)

	after = drainNext(t, rest, "nexter", systems, len(all)-len(nexterBefore))
	checkExactlyOnce(t, "nexter across the restart", append(nexterBefore, after...), all)

	// The committer gets again exactly what it had not committed.
	res, err = cjson.Poll(ctx, "committer", systems, 0, killfeedv1.CommitMode_COMMIT_MODE_EXPLICIT)
	if err != nil {
		t.Fatalf("committer after the restart: %v", err)
	}
	checkExactlyOnce(t, "committer across the restart", append(committed, res.Events...), all)

	// The streamer resubscribes: its backfill is exactly what was produced
	// while the service was down, and live events follow.
	streamer = subscribe(t, "streamer resumed", f.client(grpcH2C), &killfeedv1.SubscribeRequest{ClientId: "streamer", SystemIds: systems})
	evs, _ := streamer.untilBackfillDone(t, 30*time.Second)
	checkExactlyOnce(t, "streamer across the restart", append(streamedBefore, evs...), all)
	produceN(3)
	live := streamer.events(t, 3, 30*time.Second)
	final := readTopic(t, topic, 63)
	checkExactlyOnce(t, "streamer live after the restart", live, final.subset(func(s stored) bool { _, old := all[s.EventID]; return !old }))
}

// waitServed waits until the replica serves n events in systems, asking as
// a probe client in explicit mode (which commits nothing).
func waitServed(t testing.TB, f *feed, systems []int64, n int) {
	t.Helper()
	p := f.rpcPoller(grpcH2C)
	eventually(t, 30*time.Second, "service reading the topic", func() error {
		res, err := p.Poll(testContext(t), "probe", systems, 10000, killfeedv1.CommitMode_COMMIT_MODE_EXPLICIT)
		if err != nil {
			return err
		}
		if len(res.Events) != n {
			return fmt.Errorf("serves %d events; want %d", len(res.Events), n)
		}
		return nil
	})
}

// commit commits evs (explicit mode): the last event of each system.
func commit(t testing.TB, c killfeedv1connect.KillfeedServiceClient, client string, evs []got) {
	t.Helper()
	if _, err := c.Commit(testContext(t), connect.NewRequest(commitRequest(client, evs))); err != nil {
		t.Fatalf("%s: Commit: %v", client, err)
	}
}

func commitRequest(client string, evs []got) *killfeedv1.CommitRequest {
	last := map[int64]int64{}
	for _, e := range evs {
		last[e.SystemID] = max(last[e.SystemID], e.EventID)
	}
	req := &killfeedv1.CommitRequest{ClientId: client}
	for _, sys := range slices.Sorted(maps.Keys(last)) {
		req.Cursors = append(req.Cursors, &killfeedv1.Cursor{SystemId: sys, EventId: last[sys]})
	}
	return req
}

// positions reads a client's committed positions.
func positions(t testing.TB, c killfeedv1connect.KillfeedServiceClient, client string) []*killfeedv1.Position {
	t.Helper()
	resp, err := c.GetPositions(testContext(t), connect.NewRequest(&killfeedv1.GetPositionsRequest{ClientId: client}))
	if err != nil {
		t.Fatalf("%s: GetPositions: %v", client, err)
	}
	return resp.Msg.GetPositions()
}

// samePositions compares positions by system, event id and commit time.
func samePositions(a, b []*killfeedv1.Position) bool {
	if len(a) != len(b) || len(a) == 0 {
		return false
	}
	for i := range a {
		if a[i].GetSystemId() != b[i].GetSystemId() || a[i].GetEventId() != b[i].GetEventId() ||
			!a[i].GetUpdatedAt().AsTime().Equal(b[i].GetUpdatedAt().AsTime()) {
			return false
		}
	}
	return true
}

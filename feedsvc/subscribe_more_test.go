package feedsvc

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	killfeedv1 "github.com/killfeed/killfeed/proto/killfeed/v1"
)

// Subscribing while killmails are being produced, again and again: each
// stream sees every killmail from its start to the end, once, in order.
func TestSubscribeHandOverRaceHammered(t *testing.T) {
	e := newTestEnv(t, Options{})
	c := e.client(h2cClient(), connect.WithGRPC())
	for i := range 25 {
		prod := e.startProducing([]int64{jita}, 0)
		time.Sleep(time.Duration(i%5) * time.Millisecond)
		client := "race-" + string(rune('a'+i))
		r := subscribe(t, c, &killfeedv1.SubscribeRequest{ClientId: client, SystemIds: []int64{jita}})
		time.Sleep(time.Duration(i%3) * time.Millisecond)
		ids := prod.finish()
		seen := map[int64]int{}
		var order []int64
		watchdog := time.AfterFunc(10*time.Second, r.cancel)
		for len(ids) > 0 && seen[ids[len(ids)-1]] == 0 && r.stream.Receive() {
			for _, id := range killmailIDs(t, r.stream.Msg().GetEvents().GetEvents()) {
				seen[id]++
				order = append(order, id)
			}
		}
		watchdog.Stop()
		r.cancel()
		// A new client gets everything retained: all earlier iterations'
		// killmails too, then this iteration's.
		for _, id := range ids {
			if seen[id] != 1 {
				t.Logf("order %v err %v", order, r.stream.Err())
				t.Fatalf("iteration %d: killmail %d delivered %d times (%d produced during subscribe)", i, id, seen[id], len(ids))
			}
		}
		for j := 1; j < len(order); j++ {
			if order[j] <= order[j-1] {
				t.Fatalf("iteration %d: out of order: %d after %d", i, order[j], order[j-1])
			}
		}
		if len(order) != int(e.nextKM.Load()-100000000) {
			t.Fatalf("iteration %d: got %d killmails, %d were produced in all", i, len(order), e.nextKM.Load()-100000000)
		}
	}
}

// A stream whose client stops reading does not delay another stream, nor
// the tail; once it reads again it gets everything, nothing lost.
func TestStalledStreamDoesNotDelayOthers(t *testing.T) {
	e := newTestEnv(t, Options{MaxEventsPerSystem: 50})
	c := e.client(h2cClient(), connect.WithGRPC())
	stalled := subscribe(t, c, &killfeedv1.SubscribeRequest{ClientId: "stalled", SystemIds: []int64{jita}, CommitMode: killfeedv1.CommitMode_COMMIT_MODE_EXPLICIT})
	healthy := subscribe(t, c, &killfeedv1.SubscribeRequest{ClientId: "healthy", SystemIds: []int64{jita}})
	if m := stalled.next(t); m.GetBackfillDone() == nil {
		t.Fatalf("stalled stream: %v", m)
	}
	if m := healthy.next(t); m.GetBackfillDone() == nil {
		t.Fatalf("healthy stream: %v", m)
	}

	// Enough data to fill the stalled stream's flow-control windows and
	// socket buffers many times over, and to push its events out of
	// memory (50 per system).
	big := strings.Repeat("x", 60000)
	var want []int64
	var wg sync.WaitGroup
	wg.Add(1)
	var got []int64
	go func() {
		defer wg.Done()
		got = healthy.events(t, 400)
	}()
	for range 400 {
		e.nextKM.Add(1)
		id := e.nextKM.Load()
		km := []byte(`{"killmail_id":` + strconv.FormatInt(id, 10) + `,"solar_system_id":30000142,"pad":"` + big + `"}`)
		e.produceRaw([]byte("30000142"), km)
		want = append(want, id)
	}
	wg.Wait()
	if !slices.Equal(got, want) {
		t.Fatalf("healthy stream got %d events, want %d in order", len(got), len(want))
	}
	// The stalled client reads again: everything, in order, from memory and
	// Kafka.
	if ids := stalled.events(t, 400); !slices.Equal(ids, want) {
		t.Fatalf("stalled stream got %d events after resuming, want all %d in order", len(ids), len(want))
	}
}

func TestSubscribeReportsLossWhenRetentionPassesTheClient(t *testing.T) {
	e := newTestEnv(t, Options{})
	c := e.client(http1Client(), connect.WithProtoJSON())
	e.produce(jita)
	poll(t, c, "late", jita)
	e.produce(jita)
	e.produce(jita)
	e.applyRetention(1)
	after := killmailID(t, e.produce(jita))

	r := subscribe(t, c, &killfeedv1.SubscribeRequest{ClientId: "late", SystemIds: []int64{jita}})
	m := r.next(t)
	g := m.GetGap()
	if g == nil || g.SystemId != jita || g.LostEvents != 2 {
		t.Fatalf("first message %v, want a gap of 2 in Jita", m)
	}
	if ids := r.events(t, 1); ids[0] != after {
		t.Fatalf("after the gap got %d, want %d", ids[0], after)
	}
}

func TestPositionsAPI(t *testing.T) {
	e := newTestEnv(t, Options{})
	c := e.client(h2cClient(), connect.WithGRPC())
	ctx := context.Background()
	e.produce(jita)
	time.Sleep(5 * time.Millisecond) // Kafka timestamps are milliseconds
	before := time.Now()
	time.Sleep(5 * time.Millisecond)
	second := killmailID(t, e.produce(jita))
	third := killmailID(t, e.produce(jita))
	got := poll(t, c, "p", jita)

	pos, err := c.GetPositions(ctx, connect.NewRequest(&killfeedv1.GetPositionsRequest{ClientId: "p"}))
	if err != nil {
		t.Fatal(err)
	}
	if ps := pos.Msg.Positions; len(ps) != 1 || ps[0].SystemId != jita || ps[0].EventId != got.Events[2].EventId {
		t.Fatalf("positions %v, want Jita at the last event %d", ps, got.Events[2].EventId)
	}

	reset := func(req *killfeedv1.ResetPositionsRequest) {
		t.Helper()
		req.ClientId, req.SystemIds = "p", []int64{jita}
		if _, err := c.ResetPositions(ctx, connect.NewRequest(req)); err != nil {
			t.Fatal(err)
		}
	}
	reset(&killfeedv1.ResetPositionsRequest{To: &killfeedv1.ResetPositionsRequest_Time{Time: timestamppb.New(before)}})
	if ids := killmailIDs(t, poll(t, c, "p", jita).Events); !slices.Equal(ids, []int64{second, third}) {
		t.Fatalf("after reset to a time got %v, want %v", ids, []int64{second, third})
	}
	reset(&killfeedv1.ResetPositionsRequest{To: &killfeedv1.ResetPositionsRequest_Earliest{Earliest: true}})
	if n := len(poll(t, c, "p", jita).Events); n != 3 {
		t.Fatalf("after reset to earliest got %d events, want 3", n)
	}
	reset(&killfeedv1.ResetPositionsRequest{To: &killfeedv1.ResetPositionsRequest_Latest{Latest: true}})
	if n := len(poll(t, c, "p", jita).Events); n != 0 {
		t.Fatalf("after reset to latest got %d events, want 0", n)
	}
	live := killmailID(t, e.produce(jita))
	if ids := killmailIDs(t, poll(t, c, "p", jita).Events); !slices.Equal(ids, []int64{live}) {
		t.Fatalf("after latest, got %v want %d", ids, live)
	}

	if _, err := c.DeleteClient(ctx, connect.NewRequest(&killfeedv1.DeleteClientRequest{ClientId: "p"})); err != nil {
		t.Fatal(err)
	}
	pos, err = c.GetPositions(ctx, connect.NewRequest(&killfeedv1.GetPositionsRequest{ClientId: "p"}))
	if err != nil || len(pos.Msg.Positions) != 0 {
		t.Fatalf("after delete: %v %v", pos, err)
	}
	if n := len(poll(t, c, "p", jita).Events); n != 4 {
		t.Fatalf("a deleted client starts over: got %d events, want 4", n)
	}
	_, err = c.ResetPositions(ctx, connect.NewRequest(&killfeedv1.ResetPositionsRequest{ClientId: "p", SystemIds: []int64{jita}}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("reset without a target: %v, want invalid_argument", err)
	}
}

// Explicit commits move positions forward only, so out-of-order commits of
// an asynchronous client never rewind it.
func TestCommitNeverRewinds(t *testing.T) {
	e := newTestEnv(t, Options{})
	c := e.client(h2cClient())
	ctx := context.Background()
	e.produce(jita)
	e.produce(jita)
	evs, err := c.Poll(ctx, connect.NewRequest(&killfeedv1.PollRequest{ClientId: "a", SystemIds: []int64{jita}, CommitMode: killfeedv1.CommitMode_COMMIT_MODE_EXPLICIT}))
	if err != nil || len(evs.Msg.Events) != 2 {
		t.Fatalf("explicit poll: %v %v", evs, err)
	}
	// Explicit mode committed nothing.
	if again := poll(t, c, "a", jita); len(again.Events) != 2 {
		t.Fatalf("explicit poll moved the position: auto poll got %d", len(again.Events))
	}
	commit := func(ev *killfeedv1.Event) {
		t.Helper()
		if _, err := c.Commit(ctx, connect.NewRequest(&killfeedv1.CommitRequest{ClientId: "b", Cursors: []*killfeedv1.Cursor{{SystemId: jita, EventId: ev.EventId}}})); err != nil {
			t.Fatal(err)
		}
	}
	commit(evs.Msg.Events[1])
	commit(evs.Msg.Events[0]) // late, out of order
	if n := len(poll(t, c, "b", jita).Events); n != 0 {
		t.Fatalf("after committing the second event, %d events came again", n)
	}
}

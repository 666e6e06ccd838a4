//go:build integration

package integration

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/killfeed/killfeed/feedsvc"
	"github.com/killfeed/killfeed/producer"
	killfeedv1 "github.com/killfeed/killfeed/proto/killfeed/v1"
	"github.com/killfeed/killfeed/proto/killfeed/v1/killfeedv1connect"
)

// TestE2EReplicasServeAnyClient runs two replicas on one cluster with
// SyncPositions, as a load balancer without sticky sessions would use them,
// while killfeed's producer keeps producing. Clients hop between the replicas
// on every call:
//
//   - "roamer" (explicit commits) takes turns with Poll on A, Poll on B, Next
//     on A and B (REST and Connect), and Subscribe on A then B, committing on
//     the replica it did not read from. It processes every killmail exactly
//     once: no event it committed is ever delivered to it again, on either
//     replica, and none is missing.
//   - "hopper" (automatic commits) alternates Poll and Next between the
//     replicas and gets every killmail exactly once: a replica sees the
//     other's commits before it serves.
//   - "surfer" (automatic commits) alternates Subscribe streams between the
//     replicas, hanging up right after a batch. Automatic commits are at
//     most once (a batch on the wire when the client hangs up is not sent
//     again), so it is held to "never twice".
func TestE2EReplicasServeAnyClient(t *testing.T) {
	t.Parallel()
	topic := newKillmailsTopic(t, 4)
	offsetsTopic := offsetsTopicName(t)
	a := startFeed(t, "A", topic, offsetsTopic, feedsvc.Options{SyncPositions: true})
	b := startFeed(t, "B", topic, offsetsTopic, feedsvc.Options{SyncPositions: true})
	replicas := []*feed{a, b}
	systems := []int64{jita, amarr, dodixie, rens, thera}

	src := &tickerSource{every: 25 * time.Millisecond, systems: systems, firstID: 500_000_000, stop: make(chan struct{})}
	prod, err := producer.New(newClient(t, producer.ClientOpts()...), producer.Options{Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() {
		_, err := prod.Run(context.Background(), src)
		ran <- err
	}()
	stopped := false
	stopProducing := func() {
		if !stopped {
			stopped = true
			close(src.stop)
			if err := <-ran; err != nil {
				t.Errorf("producer: %v", err)
			}
		}
	}
	t.Cleanup(stopProducing)

	roamer := newHopClient("roamer")
	hopper := newHopClient("hopper")
	surfer := newHopClient("surfer")
	var wg sync.WaitGroup
	ctx, stop := context.WithCancel(testContext(t))
	defer stop()
	// Each client takes turns while killmails are produced, then until it
	// has them all (target, set once the producer has stopped).
	var target sync.Map // client name -> int (events produced in all)
	done := func(r *hopClient) bool {
		n, ok := target.Load(r.name)
		return ok && r.count() >= n.(int)
	}
	wg.Add(3)
	go func() {
		defer wg.Done()
		for turn := 0; ctx.Err() == nil && !done(roamer); turn++ {
			roamer.explicitTurn(ctx, replicas, systems, turn)
		}
	}()
	go func() {
		defer wg.Done()
		for turn := 0; ctx.Err() == nil && !done(hopper); turn++ {
			hopper.autoPollTurn(ctx, replicas, systems, turn)
		}
	}()
	go func() {
		defer wg.Done()
		// At most once: it cannot wait for everything; it stops with the
		// producer.
		for turn := 0; ctx.Err() == nil && !targetSet(&target, "surfer"); turn++ {
			surfer.autoStreamTurn(ctx, replicas, systems, turn)
		}
	}()

	// Clients hop while killmails are produced: long enough for every kind
	// of turn to come round several times.
	eventually(t, time.Minute, "clients taking turns", func() error {
		if src.count() < 100 || roamer.turns.Load() < 48 || hopper.turns.Load() < 48 || surfer.turns.Load() < 24 {
			return fmt.Errorf("%d killmails; turns: roamer %d, hopper %d, surfer %d", src.count(), roamer.turns.Load(), hopper.turns.Load(), surfer.turns.Load())
		}
		return nil
	})
	stopProducing()
	n := src.count()
	want := readTopic(t, topic, n)
	for _, name := range []string{"roamer", "hopper", "surfer"} {
		target.Store(name, n)
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(time.Minute):
		stop()
		<-finished
		t.Errorf("clients did not get all %d killmails within a minute: roamer %d, hopper %d", n, roamer.count(), hopper.count())
	}

	// The surfer's last stream reads to the end of the backfill.
	last := subscribe(t, "surfer's last stream", b.client(grpcH2C), &killfeedv1.SubscribeRequest{ClientId: "surfer", SystemIds: systems})
	evs, _ := last.untilBackfillDone(t, 30*time.Second)
	surfer.take("last stream", evs, false)

	roamer.check(t, want, true)
	hopper.check(t, want, true)
	surfer.check(t, want, false)
	t.Logf("%d killmails; roamer %d turns, hopper %d turns, surfer %d streams; surfer missed %d (in flight at a hang-up)",
		n, roamer.turns.Load(), hopper.turns.Load(), surfer.turns.Load(), n-surfer.count())
}

// targetSet reports whether the producer has stopped.
func targetSet(target *sync.Map, name string) bool {
	_, ok := target.Load(name)
	return ok
}

// hopClient is a client hopping between replicas; it records what it
// processed and checks the promises of its commit mode as it goes.
type hopClient struct {
	name string

	mu         sync.Mutex
	processed  map[int64]got
	order      []got
	committed  map[int64]int64 // system -> event id committed (explicit mode)
	violations []string
	turns      atomic.Int64
}

func newHopClient(name string) *hopClient {
	return &hopClient{name: name, processed: map[int64]got{}, committed: map[int64]int64{}}
}

func (r *hopClient) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.processed)
}

// take processes what a call delivered. Explicit mode: an event already
// committed must never come again; one delivered but not yet processed may.
// Automatic mode: nothing may come twice.
func (r *hopClient) take(where string, evs []got, explicit bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range evs {
		if last, ok := r.committed[ev.SystemID]; ok && ev.EventID <= last {
			r.violations = append(r.violations, fmt.Sprintf("%s: event %d (system %d) delivered again after its commit (up to %d) succeeded", where, ev.EventID, ev.SystemID, last))
		}
		if _, seen := r.processed[ev.EventID]; seen {
			if !explicit {
				r.violations = append(r.violations, fmt.Sprintf("%s: event %d delivered twice (automatic commits)", where, ev.EventID))
			}
			continue
		}
		r.processed[ev.EventID] = ev
		r.order = append(r.order, ev)
	}
}

func (r *hopClient) fail(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.violations = append(r.violations, fmt.Sprintf(format, args...))
}

// commit commits evs on replica c and records it.
func (r *hopClient) commit(ctx context.Context, where string, c killfeedv1connect.KillfeedServiceClient, evs []got) {
	if len(evs) == 0 {
		return
	}
	req := commitRequest(r.name, evs)
	if _, err := c.Commit(ctx, connect.NewRequest(req)); err != nil {
		if ctx.Err() == nil {
			r.fail("%s: Commit: %v", where, err)
		}
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, cur := range req.Cursors {
		r.committed[cur.SystemId] = max(r.committed[cur.SystemId], cur.EventId)
	}
}

// explicitTurn is one call of the explicit-mode roamer, on replica
// turn%2, committing on the other one.
func (r *hopClient) explicitTurn(ctx context.Context, replicas []*feed, systems []int64, turn int) {
	r.turns.Add(1)
	on, other := replicas[turn%2], replicas[(turn+1)%2]
	committer := other.client(grpcH2C)
	mode := killfeedv1.CommitMode_COMMIT_MODE_EXPLICIT
	var p poller
	switch turn / 2 % 4 {
	case 0:
		p = on.rpcPoller(connectJSON)
	case 1:
		p = on.restPoller()
	case 2:
		p = on.rawConnectPoller()
	case 3:
		// Subscribe, take a few batches, hang up.
		tp := []transport{grpcH2C, connectJSON}[turn%2]
		where := fmt.Sprintf("turn %d Subscribe %s@%s", turn, tp.name, on.name)
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		st, err := on.client(tp).Subscribe(sctx, connect.NewRequest(&killfeedv1.SubscribeRequest{ClientId: r.name, SystemIds: systems, CommitMode: mode}))
		if err != nil {
			r.fail("%s: %v", where, err)
			return
		}
		defer st.Close()
		timer := time.AfterFunc(400*time.Millisecond, cancel)
		defer timer.Stop()
		for batches := 0; batches < 3 && st.Receive(); {
			if evs := protoEvents(st.Msg().GetEvents().GetEvents()); len(evs) > 0 {
				r.take(where, evs, true)
				r.commit(ctx, where, committer, evs)
				batches++
			}
		}
		return
	}
	where := fmt.Sprintf("turn %d %s", turn, p.Name())
	var res pollResult
	var err error
	if turn%3 == 0 {
		res, err = p.Next(ctx, r.name, systems, mode)
	} else {
		res, err = p.Poll(ctx, r.name, systems, int32(5+turn%20), mode)
	}
	if err != nil {
		if ctx.Err() == nil {
			r.fail("%s: %v", where, err)
		}
		return
	}
	r.take(where, res.Events, true)
	r.commit(ctx, where, committer, res.Events)
}

// autoPollTurn is one Poll or Next of the automatic-mode hopper.
func (r *hopClient) autoPollTurn(ctx context.Context, replicas []*feed, systems []int64, turn int) {
	r.turns.Add(1)
	on := replicas[turn%2]
	ps := []poller{on.rpcPoller(grpcH2C), on.restPoller(), on.rpcPoller(connectJSON)}
	p := ps[turn/2%len(ps)]
	where := fmt.Sprintf("turn %d %s", turn, p.Name())
	var res pollResult
	var err error
	if turn%4 == 1 {
		res, err = p.Next(ctx, r.name, systems, killfeedv1.CommitMode_COMMIT_MODE_AUTO)
	} else {
		res, err = p.Poll(ctx, r.name, systems, int32(3+turn%10), killfeedv1.CommitMode_COMMIT_MODE_AUTO)
	}
	if err != nil {
		if ctx.Err() == nil {
			r.fail("%s: %v", where, err)
		}
		return
	}
	r.take(where, res.Events, false)
	if len(res.Events) == 0 {
		time.Sleep(10 * time.Millisecond)
	}
}

// autoStreamTurn opens an automatic-mode stream on replica turn%2, reads
// one or two batches and hangs up.
func (r *hopClient) autoStreamTurn(ctx context.Context, replicas []*feed, systems []int64, turn int) {
	r.turns.Add(1)
	on := replicas[turn%2]
	tp := []transport{grpcH2C, connectJSON}[turn/2%2]
	where := fmt.Sprintf("turn %d Subscribe %s@%s", turn, tp.name, on.name)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := on.client(tp).Subscribe(sctx, connect.NewRequest(&killfeedv1.SubscribeRequest{ClientId: r.name, SystemIds: systems}))
	if err != nil {
		if ctx.Err() == nil {
			r.fail("%s: %v", where, err)
		}
		return
	}
	defer st.Close()
	timer := time.AfterFunc(300*time.Millisecond, cancel)
	defer timer.Stop()
	for batches := 0; batches < 1+turn%2 && st.Receive(); {
		if evs := protoEvents(st.Msg().GetEvents().GetEvents()); len(evs) > 0 {
			r.take(where, evs, false)
			batches++
		}
	}
}

// check holds the client to its promises: every event once (exact) or at
// most once.
func (r *hopClient) check(t testing.TB, want truth, exact bool) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, v := range r.violations[:min(len(r.violations), 20)] {
		t.Errorf("%s: %s", r.name, v)
	}
	if exact {
		checkExactlyOnce(t, r.name, r.order, want)
		return
	}
	checkExactlyOnce(t, r.name, r.order, want.subset(func(s stored) bool { _, ok := r.processed[s.EventID]; return ok }))
}

package feedsvc

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	killfeedv1 "github.com/killfeed/killfeed/proto/killfeed/v1"
	"github.com/killfeed/killfeed/proto/killfeed/v1/killfeedv1connect"
)

// streamReader collects what a Subscribe stream delivers.
type streamReader struct {
	stream *connect.ServerStreamForClient[killfeedv1.SubscribeResponse]
	cancel context.CancelFunc
}

func subscribe(t *testing.T, c killfeedv1connect.KillfeedServiceClient, req *killfeedv1.SubscribeRequest) *streamReader {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := c.Subscribe(ctx, connect.NewRequest(req))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); s.Close() })
	return &streamReader{stream: s, cancel: cancel}
}

// next returns the stream's next message, failing the test if none comes.
func (r *streamReader) next(t *testing.T) *killfeedv1.SubscribeResponse {
	t.Helper()
	if !r.stream.Receive() {
		t.Fatalf("stream ended: %v", r.stream.Err())
	}
	return r.stream.Msg()
}

// events reads until n events arrived (skipping heartbeats and the backfill
// marker) and returns their killmail ids.
func (r *streamReader) events(t *testing.T, n int) []int64 {
	t.Helper()
	var ids []int64
	for len(ids) < n {
		m := r.next(t)
		if evs := m.GetEvents(); evs != nil {
			ids = append(ids, killmailIDs(t, evs.Events)...)
		}
	}
	return ids
}

func TestSubscribeBackfillsThenStreamsLive(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			e := newTestEnv(t, Options{})
			c := e.client(p.http(), p.opts...)
			old1 := killmailID(t, e.produce(jita))
			old2 := killmailID(t, e.produce(amarr))
			e.produce(wh) // not subscribed

			r := subscribe(t, c, &killfeedv1.SubscribeRequest{ClientId: "s", SystemIds: []int64{jita, amarr}})
			if got := r.events(t, 2); !slices.Equal(got, []int64{old1, old2}) {
				t.Fatalf("backfill %v, want %v", got, []int64{old1, old2})
			}
			if m := r.next(t); m.GetBackfillDone() == nil {
				t.Fatalf("after backfill got %v, want backfill_done", m)
			}
			live := killmailID(t, e.produce(amarr))
			m := r.next(t)
			if ids := killmailIDs(t, m.GetEvents().GetEvents()); len(ids) != 1 || ids[0] != live {
				t.Fatalf("live message %v, want killmail %d", m, live)
			}
			// Automatic mode commits what was delivered, just after sending.
			_, liveOffset := splitEventID(m.GetEvents().GetEvents()[0].EventId)
			deadline := time.Now().Add(5 * time.Second)
			for !committedPast(e, "s", amarr, liveOffset) && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if evs := poll(t, c, "s", jita, amarr).Events; len(evs) != 0 {
				t.Fatalf("Poll after the stream got %d events already delivered", len(evs))
			}
		})
	}
}

func TestSubscribeSendsHeartbeatsWhileIdle(t *testing.T) {
	e := newTestEnv(t, Options{})
	r := subscribe(t, e.client(h2cClient(), connect.WithGRPC()), &killfeedv1.SubscribeRequest{ClientId: "h", SystemIds: []int64{jita}, HeartbeatSeconds: 1})
	if m := r.next(t); m.GetBackfillDone() == nil {
		t.Fatalf("first message %v, want backfill_done on an empty feed", m)
	}
	for range 2 {
		if m := r.next(t); m.GetHeartbeat() == nil || m.GetHeartbeat().GetTime().AsTime().IsZero() {
			t.Fatalf("idle stream sent %v, want a heartbeat with a time", m)
		}
	}
}

func TestSubscribeRejectsBadRequests(t *testing.T) {
	e := newTestEnv(t, Options{})
	c := e.client(http1Client(), connect.WithProtoJSON())
	for _, req := range []*killfeedv1.SubscribeRequest{
		{SystemIds: []int64{jita}},
		{ClientId: "x"},
		{ClientId: "x", SystemIds: []int64{jita}, HeartbeatSeconds: 301},
	} {
		s, err := c.Subscribe(context.Background(), connect.NewRequest(req))
		if err == nil {
			for s.Receive() {
			}
			err = s.Err()
		}
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("%v: got %v, want invalid_argument", req, err)
		}
	}
}

// producer writes killmails to the systems continuously until stopped,
// recording the ids it wrote.
type producer struct {
	mu   sync.Mutex
	ids  []int64
	stop chan struct{}
	done chan struct{}
}

func (e *testEnv) startProducing(systems []int64, every time.Duration) *producer {
	p := &producer{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for i := 0; ; i++ {
			select {
			case <-p.stop:
				return
			case <-time.After(every):
			}
			id := killmailID(e.t, e.produceNoWait(systems[i%len(systems)]))
			p.mu.Lock()
			p.ids = append(p.ids, id)
			p.mu.Unlock()
		}
	}()
	return p
}

func (p *producer) finish() []int64 {
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ids
}

// processExplicit reads a stream in explicit mode: each event is processed
// (counted in seen) and committed before the next, a whole message at a
// time, until done says stop or the stream ends. Messages the server sent
// but the client did not read before it dropped must come again after a
// resume.
func processExplicit(t *testing.T, c killfeedv1connect.KillfeedServiceClient, r *streamReader, client string, seen map[int64]int, done func() bool) {
	t.Helper()
	for !done() && r.stream.Receive() {
		for _, ev := range r.stream.Msg().GetEvents().GetEvents() {
			seen[killmailIDs(t, []*killfeedv1.Event{ev})[0]]++
			_, err := c.Commit(context.Background(), connect.NewRequest(&killfeedv1.CommitRequest{
				ClientId: client, Cursors: []*killfeedv1.Cursor{{SystemId: ev.SystemId, EventId: ev.EventId}},
			}))
			if err != nil {
				t.Fatal(err)
			}
		}
	}
}

// readAuto reads a stream in automatic mode, counting events in seen, until
// done says stop or the stream ends.
func readAuto(t *testing.T, r *streamReader, seen map[int64]int, done func() bool) {
	t.Helper()
	for !done() && r.stream.Receive() {
		for _, id := range killmailIDs(t, r.stream.Msg().GetEvents().GetEvents()) {
			seen[id]++
		}
	}
}

// A client that drops mid-stream while killmails keep coming, and resumes —
// or whose service restarts — gets every event exactly once with explicit
// commits, and never one twice with automatic commits.
func TestResumeMidStream(t *testing.T) {
	for _, mode := range []killfeedv1.CommitMode{killfeedv1.CommitMode_COMMIT_MODE_EXPLICIT, killfeedv1.CommitMode_COMMIT_MODE_AUTO} {
		for _, restartService := range []bool{false, true} {
			name := mode.String()
			if restartService {
				name += "/service-restarts"
			} else {
				name += "/client-drops"
			}
			t.Run(name, func(t *testing.T) {
				e := newTestEnv(t, Options{})
				systems := []int64{jita, amarr, wh}
				prod := e.startProducing(systems, time.Millisecond)
				seen := map[int64]int{}
				processed := func() int {
					n := 0
					for _, c := range seen {
						n += c
					}
					return n
				}
				req := &killfeedv1.SubscribeRequest{ClientId: "x", SystemIds: systems, CommitMode: mode}
				read := func(c killfeedv1connect.KillfeedServiceClient, r *streamReader, done func() bool) {
					if mode == killfeedv1.CommitMode_COMMIT_MODE_EXPLICIT {
						processExplicit(t, c, r, "x", seen, done)
					} else {
						readAuto(t, r, seen, done)
					}
				}

				c := e.client(h2cClient(), connect.WithGRPC())
				r := subscribe(t, c, req)
				read(c, r, func() bool { return processed() >= 20 })
				if restartService {
					e.restart() // the service dies with the stream open
					c = e.client(h2cClient(), connect.WithGRPC())
				} else {
					r.cancel() // the client drops mid-stream
				}
				r = subscribe(t, c, req)
				read(c, r, func() bool { return processed() >= 40 })
				ids := prod.finish()

				watchdog := time.AfterFunc(20*time.Second, r.cancel)
				defer watchdog.Stop()
				finished := func() bool {
					if mode == killfeedv1.CommitMode_COMMIT_MODE_AUTO {
						// Delivery is in order: once the last killmail
						// arrived, everything deliverable has.
						return seen[ids[len(ids)-1]] > 0
					}
					for _, id := range ids {
						if seen[id] == 0 {
							return false
						}
					}
					return true
				}
				read(c, r, finished)
				if !finished() {
					var missing []int64
					for _, id := range ids {
						if seen[id] == 0 {
							missing = append(missing, id)
						}
					}
					t.Logf("missing %v of %d; positions %+v", missing, len(ids), e.store.Positions("x"))
					e.svc.mem.mu.RLock()
					for k, l := range e.svc.mem.logs {
						var offs []int64
						for _, ev := range l.events {
							offs = append(offs, ev.offset)
						}
						t.Logf("log %v floor %d events %v", k, l.floor, offs)
					}
					for p, ps := range e.svc.mem.parts {
						t.Logf("part %d %+v", p, *ps)
					}
					e.svc.mem.mu.RUnlock()
					t.Fatalf("stream ended before delivering the last killmail: %v", r.stream.Err())
				}
				for id, n := range seen {
					if n > 1 {
						t.Errorf("killmail %d delivered %d times", id, n)
					}
				}
				if mode == killfeedv1.CommitMode_COMMIT_MODE_EXPLICIT {
					for _, id := range ids {
						if seen[id] != 1 {
							t.Errorf("killmail %d processed %d times, want exactly once", id, seen[id])
						}
					}
				}
				lost := 0
				for _, id := range ids {
					if seen[id] == 0 {
						lost++
					}
				}
				t.Logf("%d killmails produced, %d not delivered (in flight when the client dropped)", len(ids), lost)
				if len(ids) < 40 {
					t.Fatalf("only %d killmails produced; the test did not exercise a drop mid-stream", len(ids))
				}
			})
		}
	}
}

// committedPast reports whether client's position in system is past offset.
func committedPast(e *testEnv, client string, system, offset int64) bool {
	for _, p := range e.store.Positions(client) {
		if p.SystemID == system && p.Offset > offset {
			return true
		}
	}
	return false
}

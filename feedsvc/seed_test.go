package feedsvc

import (
	"context"
	"slices"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"

	killfeedv1 "github.com/killfeed/killfeed/proto/killfeed/v1"
	"github.com/killfeed/killfeed/proto/killfeed/v1/killfeedv1connect"
)

// The seeds' test scenarios (killmail_store_test.exs), each run over every
// protocol.

const (
	jita  = 30000142
	amarr = 30002187
	wh    = 31000005
)

func poll(t *testing.T, c killfeedv1connect.KillfeedServiceClient, client string, systems ...int64) *killfeedv1.PollResponse {
	t.Helper()
	resp, err := c.Poll(context.Background(), connect.NewRequest(&killfeedv1.PollRequest{ClientId: client, SystemIds: systems}))
	if err != nil {
		t.Fatalf("Poll(%s, %v): %v", client, systems, err)
	}
	return resp.Msg
}

func next(t *testing.T, c killfeedv1connect.KillfeedServiceClient, client string, systems ...int64) *killfeedv1.NextResponse {
	t.Helper()
	resp, err := c.Next(context.Background(), connect.NewRequest(&killfeedv1.NextRequest{ClientId: client, SystemIds: systems}))
	if err != nil {
		t.Fatalf("Next(%s, %v): %v", client, systems, err)
	}
	return resp.Msg
}

// killmailIDs lists the killmail ids of events, read from the killmail each
// event carries: it proves the killmail itself arrived, in either codec.
func killmailIDs(t *testing.T, evs []*killfeedv1.Event) []int64 {
	t.Helper()
	out := make([]int64, len(evs))
	for i, ev := range evs {
		b, err := protojson.Marshal(ev.GetKillmail())
		if err != nil {
			t.Fatal(err)
		}
		out[i] = killmailID(t, b)
	}
	return out
}

func TestSeedPollReturnsAllThreeInOrder(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			e := newTestEnv(t, Options{})
			var want []int64
			for range 3 {
				want = append(want, killmailID(t, e.produce(jita)))
			}
			got := poll(t, e.client(p.http(), p.opts...), "test-client", jita)
			if ids := killmailIDs(t, got.Events); !slices.Equal(ids, want) {
				t.Fatalf("Poll returned killmails %v, want %v", ids, want)
			}
			for i, ev := range got.Events {
				if ev.SystemId != jita {
					t.Errorf("event %d: system_id %d, want %d", i, ev.SystemId, jita)
				}
				if i > 0 && ev.EventId <= got.Events[i-1].EventId {
					t.Errorf("event_id not increasing: %d after %d", ev.EventId, got.Events[i-1].EventId)
				}
			}
			if got.More {
				t.Error("more = true with everything returned")
			}
		})
	}
}

func TestSeedPollAgainIsEmpty(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			e := newTestEnv(t, Options{})
			c := e.client(p.http(), p.opts...)
			for range 3 {
				e.produce(jita)
			}
			if n := len(poll(t, c, "test-client", jita).Events); n != 3 {
				t.Fatalf("first Poll: %d events, want 3", n)
			}
			if evs := poll(t, c, "test-client", jita).Events; len(evs) != 0 {
				t.Fatalf("second Poll returned %d events, want none", len(evs))
			}
		})
	}
}

func TestSeedNextReturnsOnlyTheNewEventThenEmpty(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			e := newTestEnv(t, Options{})
			c := e.client(p.http(), p.opts...)
			for range 3 {
				e.produce(jita)
			}
			poll(t, c, "test-client", jita)
			want := killmailID(t, e.produce(jita))
			got := next(t, c, "test-client", jita)
			if got.Event == nil {
				t.Fatal("Next returned no event after an insert")
			}
			if ids := killmailIDs(t, []*killfeedv1.Event{got.Event}); ids[0] != want {
				t.Fatalf("Next returned killmail %d, want %d", ids[0], want)
			}
			if got := next(t, c, "test-client", jita); got.Event != nil {
				t.Fatalf("second Next returned event %d, want none", got.Event.EventId)
			}
		})
	}
}

func TestSeedClientsAreTrackedIndependently(t *testing.T) {
	e := newTestEnv(t, Options{})
	c := e.client(http1Client(), connect.WithProtoJSON())
	j1 := killmailID(t, e.produce(jita))
	a1 := killmailID(t, e.produce(amarr))
	j2 := killmailID(t, e.produce(jita))

	// Client A follows Jita; B follows Jita and Amarr.
	if ids := killmailIDs(t, poll(t, c, "A", jita).Events); !slices.Equal(ids, []int64{j1, j2}) {
		t.Fatalf("A got %v, want %v", ids, []int64{j1, j2})
	}
	if ids := killmailIDs(t, poll(t, c, "B", jita, amarr).Events); !slices.Equal(ids, []int64{j1, a1, j2}) {
		t.Fatalf("B got %v, want %v (ingest order)", ids, []int64{j1, a1, j2})
	}
	a2 := killmailID(t, e.produce(amarr))
	if evs := poll(t, c, "A", jita).Events; len(evs) != 0 {
		t.Fatalf("A got %d events for Jita after reading it all", len(evs))
	}
	// A never asked for Amarr: it has no position there and gets all of it.
	if ids := killmailIDs(t, poll(t, c, "A", amarr).Events); !slices.Equal(ids, []int64{a1, a2}) {
		t.Fatalf("A's first Amarr poll got %v, want %v", ids, []int64{a1, a2})
	}
	if ids := killmailIDs(t, poll(t, c, "B", jita, amarr).Events); !slices.Equal(ids, []int64{a2}) {
		t.Fatalf("B got %v, want only %v", ids, []int64{a2})
	}
	for _, p := range e.store.Positions("A") {
		if p.SystemID != jita && p.SystemID != amarr {
			t.Errorf("A has a position in system %d it never asked for", p.SystemID)
		}
	}
}

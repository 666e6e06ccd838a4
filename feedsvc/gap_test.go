package feedsvc

import (
	"context"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/killfeed/killfeed/internal/killmail"
	killfeedv1 "github.com/killfeed/killfeed/proto/killfeed/v1"
	"github.com/killfeed/killfeed/proto/killfeed/v1/killfeedv1connect"
)

// jsonClient returns a Connect JSON client of the service as it runs now
// (its address changes when it restarts).
func (e *testEnv) jsonClient() killfeedv1connect.KillfeedServiceClient {
	return e.client(http1Client(), connect.WithProtoJSON())
}

// produceOnPartitionOf writes killmails of the systems after sys until one
// lands on sys's partition p: other systems' records there are what
// retention removes past a caught-up client's position.
func (e *testEnv) produceOnPartitionOf(sys int64, p int32) {
	e.t.Helper()
	for other := sys + 1; ; other++ {
		if r := e.produceRaw(killmail.Key(other), e.newKillmail(other)); r.Partition == p {
			return
		}
	}
}

// Retention that removes only records a client was not owed — its system's
// events it has read, other systems' records, records of a partition its
// system was never on — is no loss to it, and must not be reported as one:
// a Gap tells a client that killmails it never saw are gone. A loss the
// service cannot count (records removed before it started) is still
// reported, with lost_events 0.
func TestRetentionReportsOnlyWhatAClientWasOwed(t *testing.T) {
	for _, tc := range []struct {
		name string
		// setUp leaves client "c" with a position in Jita that retention
		// then passes, and returns the client's next Poll.
		setUp    func(t *testing.T, e *testEnv) *killfeedv1.PollResponse
		wantGaps int
	}{
		{"caught up on a quiet system", func(t *testing.T, e *testEnv) *killfeedv1.PollResponse {
			r := e.produceRaw(killmail.Key(jita), e.newKillmail(jita))
			poll(t, e.jsonClient(), "c", jita)
			e.produceOnPartitionOf(jita, r.Partition)
			e.applyRetention(1)
			return poll(t, e.jsonClient(), "c", jita)
		}, 0},
		{"position on a partition the system was never on", func(t *testing.T, e *testEnv) *killfeedv1.PollResponse {
			r := e.produceRaw(killmail.Key(jita), e.newKillmail(jita))
			other := e.produceRaw(killmail.Key(amarr), e.newKillmail(amarr))
			if other.Partition == r.Partition {
				t.Fatalf("test setup: Jita and Amarr share partition %d", r.Partition)
			}
			c := e.jsonClient()
			poll(t, c, "c", jita)
			// A position in Jita on Amarr's partition, as a client holds
			// that committed an event id from another system, or from
			// before the topic was repartitioned.
			if _, err := c.Commit(context.Background(), connect.NewRequest(&killfeedv1.CommitRequest{ClientId: "c",
				Cursors: []*killfeedv1.Cursor{{SystemId: jita, EventId: eventID(other.Partition, other.Offset)}}})); err != nil {
				t.Fatal(err)
			}
			e.produceOnPartitionOf(amarr, other.Partition)
			e.applyRetention(1)
			return poll(t, c, "c", jita)
		}, 0},
		{"records removed before the service started", func(t *testing.T, e *testEnv) *killfeedv1.PollResponse {
			e.produce(jita)
			poll(t, e.jsonClient(), "c", jita)
			e.produce(jita) // unread, removed while the service is down
			e.stop()
			e.applyRetention(1)
			e.start()
			return poll(t, e.jsonClient(), "c", jita)
		}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, Options{})
			resp := tc.setUp(t, e)
			if len(resp.Gaps) != tc.wantGaps || len(resp.Events) != 0 {
				t.Fatalf("Poll after retention: gaps %v and %d events; want %d gaps, no events", resp.Gaps, len(resp.Events), tc.wantGaps)
			}
			for _, g := range resp.Gaps {
				if g.SystemId != jita || g.LostEvents != 0 {
					t.Fatalf("gap %v, want one in Jita of a size the service cannot tell (0)", g)
				}
			}
			// Nothing is reported twice, and what comes next arrives.
			want := killmailID(t, e.produce(jita))
			if resp := poll(t, e.jsonClient(), "c", jita); len(resp.Gaps) != 0 || len(resp.Events) != 1 || killmailIDs(t, resp.Events)[0] != want {
				t.Fatalf("next Poll: gaps %v, %d events; want only killmail %d", resp.Gaps, len(resp.Events), want)
			}
		})
	}
}

// A live stream of a quiet system is not told of a loss when retention
// passes its position: the next killmail arrives with no gap before it.
func TestStreamIsNotToldOfALossItWasNotOwed(t *testing.T) {
	e := newTestEnv(t, Options{})
	c := e.client(h2cClient(), connect.WithGRPC())
	r0 := e.produceRaw(killmail.Key(jita), e.newKillmail(jita))
	s := subscribe(t, c, &killfeedv1.SubscribeRequest{ClientId: "s", SystemIds: []int64{jita}})
	s.events(t, 1)
	if m := s.next(t); m.GetBackfillDone() == nil {
		t.Fatalf("got %v, want backfill_done", m)
	}
	e.produceOnPartitionOf(jita, r0.Partition)
	e.applyRetention(1)
	want := killmailID(t, e.produce(jita))
	m := s.next(t)
	if m.GetEvents() == nil {
		t.Fatalf("got %v, want the new killmail", m)
	}
	if ids := killmailIDs(t, m.GetEvents().Events); len(ids) != 1 || ids[0] != want {
		t.Fatalf("got killmails %v, want %d", ids, want)
	}
}

// A system whose killmails start arriving on another partition (the topic
// was repartitioned) keeps reaching a live stream of it, including on the
// partition where the client held a position memory had not seen it on.
func TestStreamFollowsASystemOntoAnotherPartition(t *testing.T) {
	e := newTestEnv(t, Options{})
	c := e.client(h2cClient(), connect.WithGRPC())
	r := e.produceRaw(killmail.Key(jita), e.newKillmail(jita))
	other := e.produceRaw(killmail.Key(amarr), e.newKillmail(amarr))
	if other.Partition == r.Partition {
		t.Fatalf("test setup: Jita and Amarr share partition %d", r.Partition)
	}
	if _, err := c.Commit(context.Background(), connect.NewRequest(&killfeedv1.CommitRequest{ClientId: "s",
		Cursors: []*killfeedv1.Cursor{{SystemId: jita, EventId: eventID(r.Partition, r.Offset)}, {SystemId: jita, EventId: eventID(other.Partition, other.Offset)}}})); err != nil {
		t.Fatal(err)
	}
	s := subscribe(t, c, &killfeedv1.SubscribeRequest{ClientId: "s", SystemIds: []int64{jita}})
	if m := s.next(t); m.GetBackfillDone() == nil {
		t.Fatalf("got %v, want backfill_done", m)
	}

	manual, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer manual.Close()
	var want []int64
	for _, p := range []int32{other.Partition, r.Partition, other.Partition} {
		km := e.newKillmail(jita)
		rec := &kgo.Record{Topic: testTopic, Partition: p, Key: killmail.Key(jita), Value: km}
		if err := manual.ProduceSync(context.Background(), rec).FirstErr(); err != nil {
			t.Fatal(err)
		}
		e.waitApplied(p, rec.Offset+1)
		want = append(want, killmailID(t, km))
	}
	// A killmail the stream never gets ends it rather than the test run.
	watchdog := time.AfterFunc(20*time.Second, s.cancel)
	defer watchdog.Stop()
	if got := s.events(t, len(want)); !slices.Equal(got, want) {
		t.Fatalf("live killmails %v, want %v", got, want)
	}
}

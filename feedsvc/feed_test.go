package feedsvc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/killfeed/killfeed/internal/killmail"
	killfeedv1 "github.com/killfeed/killfeed/proto/killfeed/v1"
)

func TestConnectBadRequestsAreInvalidArgumentNamingTheField(t *testing.T) {
	e := newTestEnv(t, Options{MaxSystemsPerRequest: 3})
	e.produce(jita)
	cases := []struct {
		name  string
		req   *killfeedv1.PollRequest
		field string
	}{
		{"empty client_id", &killfeedv1.PollRequest{SystemIds: []int64{jita}}, "client_id"},
		{"300-char client_id", &killfeedv1.PollRequest{ClientId: strings.Repeat("é", 300), SystemIds: []int64{jita}}, "client_id"},
		{"no systems", &killfeedv1.PollRequest{ClientId: "c"}, "system_ids"},
		{"negative system", &killfeedv1.PollRequest{ClientId: "c", SystemIds: []int64{-1}}, "system_ids"},
		{"too many systems", &killfeedv1.PollRequest{ClientId: "c", SystemIds: []int64{1, 2, 3, 4}}, "system_ids"},
		{"limit out of range", &killfeedv1.PollRequest{ClientId: "c", SystemIds: []int64{jita}, Limit: 10001}, "limit"},
		{"negative limit", &killfeedv1.PollRequest{ClientId: "c", SystemIds: []int64{jita}, Limit: -5}, "limit"},
		{"unknown commit mode", &killfeedv1.PollRequest{ClientId: "c", SystemIds: []int64{jita}, CommitMode: 9}, "commit_mode"},
	}
	for _, p := range protocols {
		c := e.client(p.http(), p.opts...)
		for _, tc := range cases {
			t.Run(p.name+"/"+tc.name, func(t *testing.T) {
				_, err := c.Poll(context.Background(), connect.NewRequest(tc.req))
				if connect.CodeOf(err) != connect.CodeInvalidArgument {
					t.Fatalf("code %v (%v), want invalid_argument", connect.CodeOf(err), err)
				}
				var ce *connect.Error
				if !errors.As(err, &ce) || !strings.HasPrefix(ce.Message(), tc.field+":") {
					t.Errorf("message %q does not name %q", err, tc.field)
				}
			})
		}
	}
	if ps := e.store.Positions("c"); len(ps) != 0 {
		t.Fatalf("bad requests changed positions: %v", ps)
	}
}

func TestRestartKeepsPositions(t *testing.T) {
	e := newTestEnv(t, Options{})
	c := e.client(h2cClient(), connect.WithGRPC())
	e.produce(jita)
	e.produce(jita)
	if n := len(poll(t, c, "keeper", jita).Events); n != 2 {
		t.Fatalf("first poll: %d events", n)
	}
	want := killmailID(t, e.produce(jita))

	e.restart()
	c = e.client(h2cClient(), connect.WithGRPC())
	ids := killmailIDs(t, poll(t, c, "keeper", jita).Events)
	if !slices.Equal(ids, []int64{want}) {
		t.Fatalf("after restart got %v, want only the unread %d", ids, want)
	}
	if n := len(poll(t, c, "keeper", jita).Events); n != 0 {
		t.Fatalf("after restart, second poll: %d events", n)
	}
}

func TestPollLimitSaysMoreRemainAndContinues(t *testing.T) {
	e := newTestEnv(t, Options{})
	c := e.client(http1Client(), connect.WithProtoJSON())
	var want []int64
	for range 5 {
		want = append(want, killmailID(t, e.produce(jita)))
	}
	var got []int64
	for range 3 {
		resp, err := c.Poll(context.Background(), connect.NewRequest(&killfeedv1.PollRequest{ClientId: "l", SystemIds: []int64{jita}, Limit: 2}))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, killmailIDs(t, resp.Msg.Events)...)
		if wantMore := len(got) < 5; resp.Msg.More != wantMore {
			t.Errorf("after %d events more=%v, want %v", len(got), resp.Msg.More, wantMore)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("paged polls got %v, want %v", got, want)
	}
}

// TestPollsOfClientsStayApart checks that each client reads from its own
// positions, whether a Poll holds few enough to search them or so many that
// it indexes them, and whatever Poll of another client came before.
func TestPollsOfClientsStayApart(t *testing.T) {
	e := newTestEnv(t, Options{})
	c := e.client(http1Client(), connect.WithProtoJSON())
	for i, n := range []int{5, maxSearchedPositions + 4} {
		t.Run(fmt.Sprintf("%d systems", n), func(t *testing.T) {
			systems := make([]int64, n)
			var last []int64 // the killmails of the last three systems
			for j := range systems {
				systems[j] = int64(31_000_000 + 100*i + j)
				for range 2 {
					id := killmailID(t, e.produce(systems[j]))
					if j >= n-3 {
						last = append(last, id)
					}
				}
			}
			a, b := fmt.Sprintf("a%d", i), fmt.Sprintf("b%d", i)
			if got := len(poll(t, c, a, systems...).Events); got != 2*n {
				t.Fatalf("%s's first Poll: %d events, want %d", a, got, 2*n)
			}
			// Caught up, holding a position in every system.
			if got := len(poll(t, c, a, systems...).Events); got != 0 {
				t.Fatalf("%s's second Poll: %d events, want none", a, got)
			}
			if got := len(poll(t, c, b, systems[:n-3]...).Events); got != 2*(n-3) {
				t.Fatalf("%s's first Poll: %d events, want %d", b, got, 2*(n-3))
			}
			got := killmailIDs(t, poll(t, c, b, systems...).Events)
			slices.Sort(got)
			slices.Sort(last)
			if !slices.Equal(got, last) {
				t.Fatalf("%s, holding positions in %d of its %d systems, got %v; want the other systems' %v", b, n-3, n, got, last)
			}
		})
	}
}

func TestPollOrdersSystemsOnDifferentPartitionsByIngestTime(t *testing.T) {
	e := newTestEnv(t, Options{})
	systems := []int64{jita, amarr, wh, 30002659, 30002510, 30002053}
	var want []int64
	for i := range 30 {
		want = append(want, killmailID(t, e.produce(systems[i%len(systems)])))
	}
	parts := map[int32]bool{}
	for _, evID := range poll(t, e.client(http1Client(), connect.WithProtoJSON()), "order", systems...).Events {
		p, _ := splitEventID(evID.EventId)
		parts[p] = true
	}
	if len(parts) < 2 {
		t.Fatalf("test systems all landed on one partition; pick others")
	}
	got := killmailIDs(t, poll(t, e.client(http1Client(), connect.WithProtoJSON()), "order2", systems...).Events)
	if !slices.Equal(got, want) {
		t.Fatalf("got %v\nwant %v (ingest order)", got, want)
	}
}

// Memory holds MaxEventsPerSystem events per system; a client further
// behind is served the older ones from Kafka, in order, with nothing lost.
func TestClientBehindMemoryIsServedFromKafka(t *testing.T) {
	e := newTestEnv(t, Options{MaxEventsPerSystem: 3})
	c := e.client(h2cClient())
	first := killmailID(t, e.produce(jita))
	poll(t, c, "slow", jita) // position after the first event
	var want []int64
	for range 10 {
		want = append(want, killmailID(t, e.produce(jita)))
	}
	e.produce(amarr)
	if n, _ := e.svc.mem.stats(); n > 4 {
		t.Fatalf("memory holds %d events, want at most 3 per system", n)
	}
	got := killmailIDs(t, poll(t, c, "slow", jita).Events)
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	// A new client gets everything retained, not just what memory holds.
	got = killmailIDs(t, poll(t, c, "new", jita).Events)
	if !slices.Equal(got, append([]int64{first}, want...)) {
		t.Fatalf("new client got %v", got)
	}
}

// A client of many systems on one partition, one of them so busy that its
// older events are only in Kafka: the merge then combines a run (the
// partition's other systems, placed by offset) with a source read from
// Kafka, and the client still gets every event once, in ingest order.
func TestManySystemsWithOneBehindMemoryKeepIngestOrder(t *testing.T) {
	e := newTestEnv(t, Options{MaxEventsPerSystem: 3})
	// Find minRunSources+1 systems whose killmails share a partition.
	byPart := map[int32][]int64{}
	var systems []int64
	for sys := int64(30_000_001); len(systems) == 0; sys++ {
		if sys > 30_000_200 {
			t.Fatal("no partition got enough systems")
		}
		r := e.produceRaw(killmail.Key(sys), e.newKillmail(sys))
		if byPart[r.Partition] = append(byPart[r.Partition], sys); len(byPart[r.Partition]) > minRunSources {
			systems = byPart[r.Partition]
		}
	}
	busy, quiet := systems[0], systems[1:]
	c := e.client(h2cClient())
	poll(t, c, "many", systems...) // positions after the events above

	// Distinct timestamps, so that ingest order is the delivery order even
	// for events read back from Kafka, which have no arrival order.
	var want []int64
	produce := func(sys int64) {
		time.Sleep(2 * time.Millisecond)
		want = append(want, killmailID(t, e.produce(sys)))
	}
	for i, sys := range quiet {
		produce(sys)
		if i%2 == 0 {
			produce(busy) // 8 events: memory keeps the last 3
		}
	}

	// The read that Poll makes, stopped after one event to see its merge.
	res, err := e.svc.read(context.Background(), systems, positionsIn(e.svc.positions("many", systems)), 1, e.svc.opts.MaxResponseBytes)
	if err != nil {
		t.Fatal(err)
	}
	runs, fromKafka := 0, 0
	for _, l := range res.rest.leaves {
		if l.run != nil {
			runs++
		} else if l.keys[0].seq == 0 { // read from Kafka: no arrival
			fromKafka++
		}
	}
	if runs != 1 || fromKafka != 1 {
		t.Fatalf("the merge has %d runs and %d leaves read from Kafka, want 1 and 1", runs, fromKafka)
	}

	got := killmailIDs(t, poll(t, c, "many", systems...).Events)
	if !slices.Equal(got, want) {
		t.Fatalf("got %v\nwant %v (ingest order)", got, want)
	}
}

func TestMalformedRecordsAreSkippedAndCounted(t *testing.T) {
	e := newTestEnv(t, Options{})
	good1 := killmailID(t, e.produce(jita))
	e.produceRaw([]byte("30000142"), []byte("not json"))
	e.produceRaw([]byte("30000142"), []byte(`[1,2,3]`))
	e.produceRaw([]byte("jita"), []byte(`{"killmail_id":1}`))
	e.produceRaw(nil, []byte(`{"killmail_id":2}`))
	e.produceRaw([]byte("-5"), []byte(`{"killmail_id":3}`))
	good2 := killmailID(t, e.produce(jita))
	if got := e.svc.Skipped(); got != 5 {
		t.Errorf("skipped %d records, want 5", got)
	}
	got := killmailIDs(t, poll(t, e.client(h2cClient(), connect.WithGRPC()), "m", jita).Events)
	if !slices.Equal(got, []int64{good1, good2}) {
		t.Fatalf("got %v, want the two good killmails", got)
	}
}

// applyRetention changes the killmails topic's retention.ms and applies it.
func (e *testEnv) applyRetention(ms int) {
	e.t.Helper()
	ctx := context.Background()
	v := strconv.Itoa(ms)
	resp, err := e.adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "retention.ms", Value: &v}}, testTopic)
	if err == nil {
		_, err = resp.On(testTopic, nil)
	}
	if err != nil {
		e.t.Fatal(err)
	}
	time.Sleep(time.Duration(ms+5) * time.Millisecond) // let every record age past it
	e.cluster.ApplyRetention()
	if e.svc == nil {
		return // stopped: it learns the log start when it starts
	}
	if err := e.svc.RefreshRetention(ctx); err != nil {
		e.t.Fatal(err)
	}
}

// The seeds' GC test, Kafka style: retention removes old events from Kafka
// and from memory, and a client behind them is told what it lost, then
// continues from the oldest retained event.
func TestRetentionRemovesEventsAndReportsTheLoss(t *testing.T) {
	e := newTestEnv(t, Options{})
	c := e.client(http1Client(), connect.WithProtoJSON())
	e.produce(jita)
	poll(t, c, "behind", jita) // position after the first event
	for range 3 {
		e.produce(jita)
	}
	e.applyRetention(1) // every record is older than 1 ms
	if n, _ := e.svc.mem.stats(); n != 0 {
		t.Fatalf("memory still holds %d events after retention", n)
	}
	after := killmailID(t, e.produce(jita))

	resp := poll(t, c, "behind", jita)
	if len(resp.Gaps) != 1 {
		t.Fatalf("gaps %v, want one for Jita", resp.Gaps)
	}
	g := resp.Gaps[0]
	if g.SystemId != jita || g.LostEvents != 3 || g.FromEventId >= g.ToEventId {
		t.Fatalf("gap %+v, want system %d, 3 lost, from < to", g, jita)
	}
	if ids := killmailIDs(t, resp.Events); !slices.Equal(ids, []int64{after}) {
		t.Fatalf("after the gap got %v, want %v", ids, after)
	}
	if resp.Events[0].EventId < g.ToEventId {
		t.Fatalf("event %d is before the gap's end %d", resp.Events[0].EventId, g.ToEventId)
	}
	// Reported once: the position moved past the gap.
	if again := poll(t, c, "behind", jita); len(again.Gaps) != 0 {
		t.Fatalf("gap reported again: %v", again.Gaps)
	}
	// A client that never read Jita lost nothing it was owed.
	if fresh := poll(t, c, "fresh", jita); len(fresh.Gaps) != 0 || len(fresh.Events) != 1 {
		t.Fatalf("fresh client: %d gaps, %d events", len(fresh.Gaps), len(fresh.Events))
	}
}

// The seeds' min-offset GC: with TrimConsumed, records every client has
// consumed are deleted; records some client still needs are kept.
func TestTrimConsumedDeletesOnlyWhatEveryClientRead(t *testing.T) {
	e := newTestEnv(t, Options{TrimConsumed: true})
	c := e.client(http1Client(), connect.WithProtoJSON())
	e.produce(jita)
	e.produce(jita)
	poll(t, c, "fast", jita)
	poll(t, c, "slow", jita)
	need := killmailID(t, e.produce(jita))
	poll(t, c, "fast", jita) // slow has not read the third

	if err := e.svc.TrimConsumed(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n, _ := e.svc.mem.stats(); n != 1 {
		t.Fatalf("memory holds %d events after trim, want 1 (the one slow needs)", n)
	}
	resp := poll(t, c, "slow", jita)
	if ids := killmailIDs(t, resp.Events); !slices.Equal(ids, []int64{need}) || len(resp.Gaps) != 0 {
		t.Fatalf("slow got %v with gaps %v, want %d and no loss", ids, resp.Gaps, need)
	}
	// A newcomer only sees what is retained.
	if n := len(poll(t, c, "newcomer", jita).Events); n != 1 {
		t.Fatalf("newcomer got %d events, want 1", n)
	}
}

// Next reports a loss too: over Connect in gaps, and over REST beside the
// event or, with no event, in the Killfeed-Gaps header of the 204.
func TestNextReportsLoss(t *testing.T) {
	e := newTestEnv(t, Options{})
	c := e.client(h2cClient(), connect.WithGRPC())
	e.produce(jita)
	e.produce(amarr)
	poll(t, c, "n", jita)
	poll(t, c, "rest", jita, amarr)
	e.produce(jita)
	e.produce(amarr)
	e.applyRetention(1)

	got := next(t, c, "n", jita)
	if got.Event != nil || len(got.Gaps) != 1 || got.Gaps[0].SystemId != jita || got.Gaps[0].LostEvents != 1 {
		t.Fatalf("Next after retention: %v, want no event and one Jita gap of 1", got)
	}
	status, _, hdr := e.get("/api/killfeed/next?client_id=rest&systems=30000142,30002187")
	if status != 204 || !strings.Contains(hdr.Get("Killfeed-Gaps"), `"system_id":30000142`) || !strings.Contains(hdr.Get("Killfeed-Gaps"), `"system_id":30002187`) {
		t.Fatalf("REST next: %d, Killfeed-Gaps %q", status, hdr.Get("Killfeed-Gaps"))
	}
}

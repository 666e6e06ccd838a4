//go:build integration

package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/killfeed/killfeed/feedsvc"
	"github.com/killfeed/killfeed/internal/killmail"
	"github.com/killfeed/killfeed/producer"
	killfeedv1 "github.com/killfeed/killfeed/proto/killfeed/v1"
)

// TestE2EEveryTransportGetsEveryKillmail is the end-to-end path on a real
// broker: killmails written by killfeed's own producer (normalised from
// zKillboard packages, and synthetic ones of realistic size) and by kcat (a
// client nobody here wrote, keyed by system id) reach clients through Poll,
// Next and Subscribe over Connect JSON on HTTP/1.1, gRPC on h2c and the REST
// routes. Each client gets every killmail exactly once, in per-system order,
// with its system and event id; over JSON the killmail is byte for byte what
// the topic holds, over protobuf the same JSON value. Streams get the backfill
// and then live killmails from both producers.
func TestE2EEveryTransportGetsEveryKillmail(t *testing.T) {
	t.Parallel()
	topic := newKillmailsTopic(t, 4)
	f := startFeed(t, "a", topic, offsetsTopicName(t), feedsvc.Options{})

	// Batch A, before any client: both producers.
	prod, err := producer.New(newClient(t), producer.Options{Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	hubs := []int64{jita, amarr, dodixie, rens, thera}
	var packages []string
	for i := range 15 {
		packages = append(packages, zkbPackage(100_000_001+int64(i), hubs[i%len(hubs)]))
	}
	runProducer(t, prod, producer.NewNDJSON(strings.NewReader(strings.Join(packages, "\n")), producer.NDJSONOptions{}), len(packages))
	runProducer(t, prod, producer.NewSynthetic(producer.SyntheticOptions{Count: 12, Seed: 7}), 12)
	var kcatLines []string
	for i := range 10 {
		kcatLines = append(kcatLines, kcatLine(200_000_001+int64(i), hubs[i%len(hubs)]))
	}
	kcatProduce(t, topic, kcatLines)

	nA := len(packages) + 12 + len(kcatLines)
	batchA := readTopic(t, topic, nA)
	checkTopicHolds(t, batchA, packages, kcatLines)
	systems := batchA.systems()
	t.Logf("batch A: %d killmails in %d systems", nA, len(systems))

	pollers := []poller{f.rpcPoller(connectJSON), f.rawConnectPoller(), f.rpcPoller(grpcH2C), f.restPoller()}
	for _, p := range pollers {
		checkExactlyOnce(t, "Poll "+p.Name(), drainPoll(t, p, "poll-"+p.Name(), systems, 7, nA), batchA)
		checkExactlyOnce(t, "Next "+p.Name(), drainNext(t, p, "next-"+p.Name(), systems, nA), batchA)
	}

	// The pollers have seen all of batch A, so the service holds it: a
	// stream opened now must backfill exactly batch A.
	var streams []*stream
	for _, tp := range []transport{connectJSON, grpcH2C} {
		s := subscribe(t, "Subscribe "+tp.name, f.client(tp), &killfeedv1.SubscribeRequest{ClientId: "sub-" + tp.name, SystemIds: systems})
		evs, gaps := s.untilBackfillDone(t, 30*time.Second)
		if len(gaps) > 0 {
			t.Errorf("%s: loss reported on a fresh topic: %v", s.name, gaps)
		}
		checkExactlyOnce(t, s.name+" backfill", evs, batchA)
		streams = append(streams, s)
	}

	// Batch B, live: both producers again, in systems the clients follow.
	var packagesB, kcatB []string
	for i := range 4 {
		packagesB = append(packagesB, zkbPackage(100_001_001+int64(i), hubs[(i+2)%len(hubs)]))
		kcatB = append(kcatB, kcatLine(200_001_001+int64(i), hubs[(i+3)%len(hubs)]))
	}
	runProducer(t, prod, producer.NewNDJSON(strings.NewReader(strings.Join(packagesB, "\n")), producer.NDJSONOptions{}), len(packagesB))
	kcatProduce(t, topic, kcatB)
	all := readTopic(t, topic, nA+len(packagesB)+len(kcatB))
	batchB := all.subset(func(s stored) bool { _, inA := batchA[s.EventID]; return !inA })
	checkTopicHolds(t, batchB, packagesB, kcatB)

	for _, s := range streams {
		checkExactlyOnce(t, s.name+" live", s.events(t, len(batchB), 30*time.Second), batchB)
	}
	for _, s := range streams {
		s.quiet(t, 300*time.Millisecond)
	}
	for _, p := range pollers {
		checkExactlyOnce(t, "Poll "+p.Name()+" after batch B", drainPoll(t, p, "poll-"+p.Name(), systems, 7, len(batchB)), batchB)
		checkExactlyOnce(t, "Next "+p.Name()+" after batch B", drainNext(t, p, "next-"+p.Name(), systems, len(batchB)), batchB)
	}

	// The transports really were the ones named.
	seen := f.transportsSeen()
	for _, want := range []string{
		"HTTP/1.1 application/json",         // Connect unary JSON
		"HTTP/1.1 application/connect+json", // Connect streaming JSON
		"HTTP/2.0 application/grpc",         // gRPC
		"HTTP/1.1 ",                         // REST GET
	} {
		if seen[want] == 0 {
			t.Errorf("no request was served as %q; served: %v", want, seen)
		}
	}
}

// zkbPackage returns a killmail as zKillboard packages it (killID, killmail,
// zkb), spaced out, which the producer normalises before storing.
func zkbPackage(id, system int64) string {
	return fmt.Sprintf(`{"killID": %d, "killmail": {"killmail_id": %d, "killmail_time": "2026-11-24T04:%02d:00Z", "solar_system_id": %d, `+
		`"victim": {"character_id": 2112625428, "ship_type_id": 587, "damage_taken": 2846}, "attackers": [{"character_id": 2116199184, "final_blow": true}]}, `+
		`"zkb": {"locationID": 50014064, "hash": "e5f1b2", "totalValue": 1.25e7, "points": 1, "npc": false, "solo": true}}`, id, id, id%60, system)
}

// kcatLine returns a "key:value" line for kcat: the system id, then a
// killmail JSON whose spacing, escapes, non-ASCII text and number spellings
// only survive if nobody re-encodes it.
func kcatLine(id, system int64) string {
	return fmt.Sprintf(`%d:{"killmail_id":%d, "killmail_time":"2026-11-24T05:00:00Z",  "solar_system_id":%d, `+
		`"victim":{"ship_type_id":670, "name":"Ünïcødé ✓ caf\u00e9 \"q\" \/ \\"}, "attackers":[ ], `+
		`"zkb":{"totalValue":1e3, "points":0.50, "big":12345678901234567, "hash":"caf\u00e9"}}`, system, id, system)
}

// runProducer runs killfeed's producer over src and fails the test unless
// Kafka acknowledged exactly n killmails and nothing was rejected or lost.
func runProducer(t testing.TB, p *producer.Producer, src producer.Source, n int) producer.Stats {
	t.Helper()
	st, err := p.Run(testContext(t), src)
	if err != nil {
		t.Fatalf("producer: %v (stats %+v)", err, st)
	}
	if st.Produced != int64(n) || st.Rejected != 0 || st.Duplicates != 0 {
		t.Fatalf("producer: produced %d, rejected %d (%v), duplicates %d; want %d produced", st.Produced, st.Rejected, st.Rejections, st.Duplicates, n)
	}
	return st
}

// checkTopicHolds checks that the topic holds each package as the producer
// normalises it and each kcat line's value byte for byte, filed under its
// system, plus nothing but the producer's other (synthetic) killmails.
func checkTopicHolds(t testing.TB, tr truth, packages, kcatLines []string) {
	t.Helper()
	byID := map[int64]stored{}
	for _, s := range tr {
		id := killmailID(s.Value)
		if _, dup := byID[id]; dup {
			t.Errorf("killmail %d is in the topic twice", id)
		}
		byID[id] = s
	}
	for _, p := range packages {
		km, err := killmail.Normalize([]byte(p))
		if err != nil {
			t.Fatalf("normalising %s: %v", p, err)
		}
		s, ok := byID[km.ID]
		if !ok || s.SystemID != km.SystemID || string(s.Value) != string(km.JSON) {
			t.Errorf("killmail %d: topic holds %s under system %d; want %s under %d", km.ID, s.Value, s.SystemID, km.JSON, km.SystemID)
		}
	}
	for _, l := range kcatLines {
		key, value, _ := strings.Cut(l, ":")
		id := killmailID([]byte(value))
		s, ok := byID[id]
		if !ok || fmt.Sprint(s.SystemID) != key || string(s.Value) != value {
			t.Errorf("kcat killmail %d: topic holds %s under system %d; want %s under %s", id, s.Value, s.SystemID, value, key)
		}
	}
}

// drainPoll polls (automatic commits) until n events have come and a
// further Poll returns none, and returns what came. It checks that "more"
// is set exactly when the limit cut a response short.
func drainPoll(t testing.TB, p poller, client string, systems []int64, limit int32, n int) []got {
	t.Helper()
	ctx, cancel := context.WithTimeout(testContext(t), time.Minute)
	defer cancel()
	var out []got
	for {
		res, err := p.Poll(ctx, client, systems, limit, killfeedv1.CommitMode_COMMIT_MODE_UNSPECIFIED)
		if err != nil {
			t.Fatalf("%s: Poll after %d of %d events: %v", p.Name(), len(out), n, err)
		}
		if len(res.Gaps) > 0 {
			t.Errorf("%s: loss reported: %v", p.Name(), res.Gaps)
		}
		if res.More && len(res.Events) < int(limit) {
			t.Errorf("%s: more=true with %d events under the limit %d", p.Name(), len(res.Events), limit)
		}
		out = append(out, res.Events...)
		if len(res.Events) == 0 {
			if len(out) >= n {
				return out
			}
			time.Sleep(20 * time.Millisecond) // the service has not read them yet
		}
		if len(out) > n {
			t.Fatalf("%s: got %d events; want %d", p.Name(), len(out), n)
		}
	}
}

// drainNext calls Next (automatic commits) until n events have come and a
// further Next returns none.
func drainNext(t testing.TB, p poller, client string, systems []int64, n int) []got {
	t.Helper()
	ctx, cancel := context.WithTimeout(testContext(t), time.Minute)
	defer cancel()
	var out []got
	for {
		res, err := p.Next(ctx, client, systems, killfeedv1.CommitMode_COMMIT_MODE_UNSPECIFIED)
		if err != nil {
			t.Fatalf("%s: Next after %d of %d events: %v", p.Name(), len(out), n, err)
		}
		if len(res.Gaps) > 0 {
			t.Errorf("%s: loss reported: %v", p.Name(), res.Gaps)
		}
		if len(res.Events) > 1 {
			t.Fatalf("%s: Next returned %d events", p.Name(), len(res.Events))
		}
		out = append(out, res.Events...)
		if len(res.Events) == 0 {
			if len(out) >= n {
				return out
			}
			time.Sleep(20 * time.Millisecond)
		}
		if len(out) > n {
			t.Fatalf("%s: got %d events; want %d", p.Name(), len(out), n)
		}
	}
}

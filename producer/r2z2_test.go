package producer_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/killfeed/killfeed/internal/killmail"
	"github.com/killfeed/killfeed/producer"
	"github.com/killfeed/killfeed/producer/r2z2test"
)

// ingested is what the killmails topic holds: killmail ids in the order
// they were written per solar system, and a count per id.
type ingested struct {
	bySystem map[int64][]int64
	count    map[int64]int
}

func readIngested(t testing.TB, e *r2z2Env) ingested {
	t.Helper()
	got := ingested{bySystem: map[int64][]int64{}, count: map[int64]int{}}
	for _, r := range committedRecords(t, e.cl, producer.DefaultTopic) {
		sys, err := killmail.ParseKey(r.Key)
		if err != nil {
			t.Fatalf("record key: %v", err)
		}
		var v struct {
			ID  int64 `json:"killmail_id"`
			Sys int64 `json:"solar_system_id"`
		}
		if err := json.Unmarshal(r.Value, &v); err != nil || v.Sys != sys {
			t.Fatalf("record value %s: %v (key %d)", r.Value, err, sys)
		}
		if len(r.Headers) != 1 || r.Headers[0].Key != producer.HeaderKillmailID || string(r.Headers[0].Value) != strconv.FormatInt(v.ID, 10) {
			t.Fatalf("record headers %v, want killmail_id=%d", r.Headers, v.ID)
		}
		got.bySystem[sys] = append(got.bySystem[sys], v.ID)
		got.count[v.ID]++
	}
	return got
}

// checkExactlyOnce fails the test unless the topic holds every killmail of
// want exactly once and nothing else, in want's order within each system.
func checkExactlyOnce(t testing.TB, got ingested, want []kmRef) {
	t.Helper()
	wantBySystem := map[int64][]int64{}
	for _, k := range want {
		wantBySystem[k.system] = append(wantBySystem[k.system], k.id)
	}
	missing, dup := 0, 0
	for _, k := range want {
		switch n := got.count[k.id]; {
		case n == 0:
			missing++
		case n > 1:
			dup++
			t.Errorf("killmail %d is stored %d times", k.id, n)
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d killmails are missing from the topic", missing, len(want))
	}
	total := 0
	for _, n := range got.count {
		total += n
	}
	if total != len(want) {
		t.Errorf("the topic holds %d killmails, want %d", total, len(want))
	}
	if missing == 0 && dup == 0 {
		for sys, ids := range wantBySystem {
			if !slices.Equal(got.bySystem[sys], ids) {
				t.Errorf("system %d: killmails in order %v, want %v", sys, got.bySystem[sys], ids)
			}
		}
	}
}

type kmRef struct{ id, system int64 }

// systems spreads killmails over a few real systems, several per partition.
var systems = []int64{30000142, 30002187, 30002659, 30045349, 31000005, 30004759, 30001161}

func publish(srv *r2z2test.Server, from, n int) []kmRef {
	var refs []kmRef
	for i := range n {
		k := kmRef{int64(128_000_000 + from + i), systems[(from+i)%len(systems)]}
		srv.PublishKillmail(k.id, k.system)
		refs = append(refs, k)
	}
	return refs
}

func TestR2Z2IngestsFeedOnceInOrder(t *testing.T) {
	e := newR2Z2Env(t)
	want := publish(e.srv, 0, 40)
	// Re-published killmails: the same killmail at a newer sequence.
	e.srv.Republish(r2z2test.FirstSequence + 3)
	want = append(want, publish(e.srv, 40, 10)...)
	e.srv.Republish(r2z2test.FirstSequence + 45)
	e.srv.Republish(r2z2test.FirstSequence + 3)
	want = append(want, publish(e.srv, 50, 10)...)
	e.srv.SetLatency(30*time.Millisecond, 7) // a slow answer now and then

	opts := e.options()
	opts.Start = r2z2test.FirstSequence
	opts.Contact = "ops@example.org"
	opts.BatchSize = 8
	r := e.ingester(opts)
	stats := e.runToHead(r, 0)

	checkExactlyOnce(t, readIngested(t, e), want)
	if stats.Produced != 60 || stats.Duplicates != 3 || stats.Fetched != 63 || stats.Rejected != 0 {
		t.Errorf("stats %+v: want 60 produced, 3 duplicates, 63 fetched", stats)
	}
	if stats.Cursor != e.srv.Head() {
		t.Errorf("cursor %d, want the head %d", stats.Cursor, e.srv.Head())
	}
	if stats.Commits < 63/8 {
		t.Errorf("%d commits for 63 files in batches of 8", stats.Commits)
	}
	for _, req := range e.srv.Requests() {
		if !strings.HasPrefix(req.UserAgent, "killfeed") || !strings.Contains(req.UserAgent, "ops@example.org") || !strings.Contains(req.UserAgent, "github.com/killfeed/killfeed") {
			t.Fatalf("User-Agent %q does not identify killfeed and its operator", req.UserAgent)
		}
	}
	if got := r.UserAgent(); got != "killfeed (+https://github.com/killfeed/killfeed; ops@example.org)" {
		t.Errorf("UserAgent() = %q", got)
	}
}

// The stored value is the ESI killmail with the zkb block; R2Z2's own
// fields are gone.
func TestR2Z2StoresESIWithZkb(t *testing.T) {
	e := newR2Z2Env(t)
	seq := e.srv.Publish(r2z2test.Sample())
	opts := e.options()
	opts.Start = seq
	e.runToHead(e.ingester(opts), 0)

	recs := committedRecords(t, e.cl, producer.DefaultTopic)
	if len(recs) != 1 {
		t.Fatalf("%d records, want 1", len(recs))
	}
	var v map[string]json.RawMessage
	if err := json.Unmarshal(recs[0].Value, &v); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"killmail_id", "killmail_time", "solar_system_id", "victim", "attackers", "zkb"} {
		if _, ok := v[k]; !ok {
			t.Errorf("stored killmail lacks %q: %s", k, recs[0].Value)
		}
	}
	for _, k := range []string{"esi", "hash", "sequence_id", "uploaded_at"} {
		if _, ok := v[k]; ok {
			t.Errorf("stored killmail has R2Z2's %q: %s", k, recs[0].Value)
		}
	}
	want, err := killmail.Normalize(r2z2test.Sample())
	if err != nil {
		t.Fatal(err)
	}
	if string(recs[0].Value) != string(want.JSON) || string(recs[0].Key) != "30002187" {
		t.Errorf("stored %s = %s, want %s", recs[0].Key, recs[0].Value, want.JSON)
	}
	if !strings.Contains(string(v["zkb"]), `"totalValue":23147343.16`) {
		t.Errorf("zkb block changed: %s", v["zkb"])
	}
}

// Starting live, the ingester begins where sequence.json points, which
// lags the newest file, and reads on past it until R2Z2 answers 404.
// Every wait honours R2Z2's politeness rules: Retry-After when given, else
// exponential back-off, and each kind of trouble is logged once.
func TestR2Z2BacksOffPolitely(t *testing.T) {
	e := newR2Z2Env(t)
	want := publish(e.srv, 0, 3)
	e.srv.SetLag(2)
	e.srv.Script("/ephemeral/sequence.json",
		r2z2test.Response{Status: http.StatusTooManyRequests},
		r2z2test.Response{Status: http.StatusTooManyRequests},
		r2z2test.Response{Status: http.StatusTooManyRequests, RetryAfter: "120"},
		r2z2test.Response{Status: http.StatusServiceUnavailable},
		// Go's transport resends a request once when a reused connection
		// closes without an answer, so it takes two drops to fail one.
		r2z2test.Response{Drop: true}, r2z2test.Response{Drop: true},
		r2z2test.Response{Status: http.StatusOK, Body: []byte(`{"sequence":"soon"}`)},
	)
	second := fmt.Sprintf("/ephemeral/%d.json", r2z2test.FirstSequence+1)
	e.srv.Script(second,
		r2z2test.Response{Status: http.StatusForbidden},
		r2z2test.Response{Status: http.StatusForbidden},
		// An HTTP date: the clock moves only when the ingester sleeps, so
		// by this request it has moved on by the waits before it (760s).
		r2z2test.Response{Status: http.StatusTooManyRequests, RetryAfter: e.clock.Now().Add(760*time.Second + 90*time.Second).Format(http.TimeFormat)},
	)

	stats := e.runToHead(e.ingester(e.options()), 0)
	checkExactlyOnce(t, readIngested(t, e), want)
	if stats.Cursor != e.srv.Head() {
		t.Errorf("cursor %d, want %d", stats.Cursor, e.srv.Head())
	}

	// The clock moves only when the ingester sleeps, so an HTTP date in
	// Retry-After is exact: 90s after the start plus the waits before it.
	wantSleeps := []time.Duration{
		time.Minute, 2 * time.Minute, 120 * time.Second, // 429, 429, 429 with Retry-After: 120
		40 * time.Second, 80 * time.Second, 160 * time.Second, // 503, dropped connection, unreadable body: 5s doubled
		time.Minute, 2 * time.Minute, // 403, 403: a new episode
		90 * time.Second,                 // 429 with Retry-After as a date
		producer.DefaultR2Z2PollInterval, // 404 at the head
	}
	if got := e.clock.Sleeps(); !slices.Equal(got, wantSleeps) {
		t.Errorf("waits %v, want %v", got, wantSleeps)
	}
	for line, n := range map[string]int{
		"R2Z2 is rate limiting killfeed": 2, // once per episode
		"R2Z2 unreachable":               1,
		"R2Z2 refused killfeed":          1,
		"R2Z2 answering again":           2,
	} {
		if got := e.log.Count(line); got != n {
			t.Errorf("%q logged %d times, want %d", line, got, n)
		}
	}
}

// An answer slower than the HTTP timeout counts as a failed request: it is
// retried after the back-off, and the file is ingested once.
func TestR2Z2RetriesAnswersSlowerThanTheTimeout(t *testing.T) {
	e := newR2Z2Env(t)
	want := publish(e.srv, 0, 3)
	e.srv.Script(fmt.Sprintf("/ephemeral/%d.json", r2z2test.FirstSequence+1),
		r2z2test.Response{Status: http.StatusOK, Body: e.srv.File(r2z2test.FirstSequence + 1), Delay: 2 * time.Second})
	opts := e.options()
	opts.Start = r2z2test.FirstSequence
	opts.HTTPClient = &http.Client{Timeout: 200 * time.Millisecond}
	stats := e.runToHead(e.ingester(opts), 0)
	checkExactlyOnce(t, readIngested(t, e), want)
	if got := e.clock.Sleeps(); !slices.Equal(got, []time.Duration{producer.DefaultR2Z2Backoff, producer.DefaultR2Z2PollInterval}) {
		t.Errorf("waits %v, want one back-off and the poll at the head", got)
	}
	if stats.Fetched != 3 {
		t.Errorf("stats %+v", stats)
	}
}

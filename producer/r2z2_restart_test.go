package producer_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/killfeed/killfeed/producer"
	"github.com/killfeed/killfeed/producer/r2z2test"
)

// A killmail R2Z2 re-publishes after a restart was stored before it: the
// new ingester knows it from the topic's tail, not from memory.
func TestR2Z2RepublishedAfterRestartStoredOnce(t *testing.T) {
	e := newR2Z2Env(t)
	want := publish(e.srv, 0, 10)
	opts := e.options()
	opts.Start = r2z2test.FirstSequence
	e.runToHead(e.ingester(opts), 0)

	e.srv.Republish(r2z2test.FirstSequence + 2)
	want = append(want, publish(e.srv, 10, 2)...)
	e.srv.Republish(r2z2test.FirstSequence + 9)
	stats := e.runToHead(e.ingester(opts), 0) // a new process: nothing in memory
	checkExactlyOnce(t, readIngested(t, e), want)
	if stats.Duplicates != 2 || stats.Produced != 2 || stats.Reread != 10 {
		t.Errorf("after the restart: %+v; want 2 duplicates, 2 produced, 10 ids read back", stats)
	}
}

// A restarted ingester continues after the committed cursor: it asks for
// nothing it already has, and ignores a start sequence.
func TestR2Z2ResumesAfterCursor(t *testing.T) {
	e := newR2Z2Env(t)
	want := publish(e.srv, 0, 5)
	opts := e.options()
	opts.Start = r2z2test.FirstSequence + 2 // backfill from here
	first := e.runToHead(e.ingester(opts), 0)
	if first.Produced != 3 {
		t.Fatalf("first run produced %d, want 3 (from the start sequence on)", first.Produced)
	}
	want = want[2:]

	before := len(e.srv.Requests())
	want = append(want, publish(e.srv, 5, 4)...)
	opts.Start = r2z2test.FirstSequence // ignored now: there is a cursor
	e.runToHead(e.ingester(opts), 0)
	checkExactlyOnce(t, readIngested(t, e), want)
	for _, req := range e.srv.Requests()[before:] {
		if req.Path == "/ephemeral/sequence.json" || req.Path <= fmt.Sprintf("/ephemeral/%d.json", first.Cursor) {
			t.Errorf("the restarted ingester asked for %s; its cursor was %d", req.Path, first.Cursor)
		}
	}
	if e.log.Count("the start sequence is only used without one") != 1 {
		t.Errorf("the ignored start sequence was not warned about")
	}
}

// R2Z2 answers 404 for what is not published yet: the ingester waits the
// poll interval and asks again for the same sequence, for as long as the
// feed is quiet, and never skips it while sequence.json does not point past
// it.
func TestR2Z2WaitsForUnpublishedSequences(t *testing.T) {
	e := newR2Z2Env(t)
	want := publish(e.srv, 0, 2)
	opts := e.options()
	opts.Start = r2z2test.FirstSequence
	r := e.ingester(opts)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	polls := 0
	e.clock.OnSleep(func(d time.Duration) {
		if d != producer.DefaultR2Z2PollInterval {
			t.Errorf("waited %v; only the poll interval is expected", d)
			return
		}
		// Publish one more killmail every 15 polls (90s: longer than the
		// gap wait), five times; then stop.
		if polls++; polls%15 == 0 {
			if len(want) == 7 {
				cancel()
				return
			}
			want = append(want, publish(e.srv, len(want), 1)...)
		}
	})
	stats, err := r.Run(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	checkExactlyOnce(t, readIngested(t, e), want)
	if stats.Missing != 0 || stats.Cursor != e.srv.Head() {
		t.Errorf("stats %+v: want nothing missing and the cursor at %d", stats, e.srv.Head())
	}
	// Each wait at the head asked for the next sequence, and nothing else.
	for _, req := range e.srv.Requests() {
		if req.Path == "/ephemeral/sequence.json" {
			continue // the gap check, once a minute
		}
		if req.Path > fmt.Sprintf("/ephemeral/%d.json", e.srv.Head()+1) {
			t.Errorf("asked for %s beyond the head %d", req.Path, e.srv.Head())
		}
	}
}

// A sequence R2Z2 does not have although sequence.json points past it (a
// hole) is skipped after GapWait; a run of them (a cursor older than R2Z2's
// retention) is skipped without waiting for each.
func TestR2Z2SkipsSequencesMissingFromTheFeed(t *testing.T) {
	e := newR2Z2Env(t)
	publish(e.srv, 0, 20)
	e.srv.Expire(r2z2test.FirstSequence + 20) // the first 20 are gone
	want := publish(e.srv, 20, 3)
	hole := e.srv.Hole()
	want = append(want, publish(e.srv, 23, 3)...)

	opts := e.options()
	opts.Start = r2z2test.FirstSequence
	stats := e.runToHead(e.ingester(opts), 0)
	checkExactlyOnce(t, readIngested(t, e), want)
	if stats.Missing != 21 || stats.Cursor != e.srv.Head() {
		t.Errorf("stats %+v: want 21 missing (20 expired and the hole %d), cursor %d", stats, hole, e.srv.Head())
	}
	// Two waits of a minute, polling every 6s: one for the first expired
	// sequence, one for the hole.
	polls := 0
	for _, d := range e.clock.Sleeps() {
		if d == producer.DefaultR2Z2PollInterval {
			polls++
		}
	}
	if want := 2*10 + 1; polls != want {
		t.Errorf("%d polls, want %d", polls, want)
	}
	if n := e.log.Count("skipped R2Z2 sequences missing from the feed"); n != 2 {
		t.Errorf("%d summaries of skipped sequences logged, want 2", n)
	}
	if !strings.Contains(e.log.String(), "count=20") {
		t.Errorf("the run of 20 expired sequences is not summarised in one line")
	}
}

// Files that are not usable killmails are rejected with a reason, once,
// and the cursor moves past them.
func TestR2Z2RejectsUnusableFiles(t *testing.T) {
	e := newR2Z2Env(t)
	want := publish(e.srv, 0, 1)
	e.srv.Publish([]byte(`{"killmail_id":5,"hash":"x","esi":{"killmail_id":5},"zkb":{}}`))
	e.srv.Publish([]byte(`{"killmail_id":`))
	want = append(want, publish(e.srv, 1, 1)...)
	opts := e.options()
	opts.Start = r2z2test.FirstSequence
	stats := e.runToHead(e.ingester(opts), 0)
	checkExactlyOnce(t, readIngested(t, e), want)
	if stats.Rejected != 2 || stats.RejectedBy["no_system_id"] != 1 || stats.RejectedBy["invalid_json"] != 1 {
		t.Errorf("rejections %v, want one no_system_id and one invalid_json", stats.RejectedBy)
	}
	if len(stats.Rejections) != 2 || !strings.HasSuffix(stats.Rejections[0].Where, fmt.Sprintf("/ephemeral/%d.json", r2z2test.FirstSequence+1)) {
		t.Errorf("rejections %+v should name the files", stats.Rejections)
	}
	// A restart does not see them again.
	before := len(e.srv.Requests())
	e.runToHead(e.ingester(opts), 0)
	if got := len(e.srv.Requests()) - before; got != 1 {
		t.Errorf("the restarted ingester made %d requests, want 1 (the head)", got)
	}
}

// R2Z2 unreachable: the ingester says so once, keeps retrying with
// growing back-off, and stops cleanly when told to.
func TestR2Z2OfflineRetriesQuietly(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start int64
	}{{"live start", 0}, {"from a cursor", r2z2test.FirstSequence}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newR2Z2Env(t)
			e.srv.Close() // nothing listens at its address any more
			opts := e.options()
			opts.Start = tc.start
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			e.clock.OnSleep(func(time.Duration) {
				if len(e.clock.Sleeps()) == 12 {
					cancel()
				}
			})
			stats, err := e.ingester(opts).Run(ctx)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Run: %v, want context.Canceled", err)
			}
			want := []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second}
			for range 6 {
				want = append(want, 5*time.Minute)
			}
			if got := e.clock.Sleeps(); !slices.Equal(got, want) {
				t.Errorf("waits %v, want %v", got, want)
			}
			if n := e.log.Count("level=WARN"); n != 1 || e.log.Count("R2Z2 unreachable; retrying") != 1 {
				t.Errorf("%d warnings logged; want exactly one, saying R2Z2 is unreachable and retried", n)
			}
			if stats.Restarts != 0 || stats.Fetched != 0 {
				t.Errorf("stats %+v", stats)
			}
		})
	}
}

// With the real clock, stopping interrupts a back-off at once.
func TestR2Z2StopsDuringBackoff(t *testing.T) {
	e := newR2Z2Env(t)
	e.srv.Close()
	opts := e.options()
	opts.Now, opts.Sleep = nil, nil
	opts.Backoff = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := e.ingester(opts).Run(ctx)
		done <- err
	}()
	deadline := time.Now().Add(20 * time.Second)
	for e.log.Count("R2Z2 unreachable") == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5s of being stopped during an hour's back-off")
	}
}

// The ingester is stopped at random points, thirty times, while R2Z2 keeps
// publishing (with re-published killmails, holes, slow answers and 429s),
// and started again each time as a new process would be. The topic ends up
// holding every killmail exactly once, in feed order.
func TestR2Z2StoppedAtRandomPointsStoresEachOnce(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("KILLFEED_TEST_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("seed %d (set KILLFEED_TEST_SEED to repeat)", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	e := newR2Z2Env(t)
	e.srv.SetLatency(3*time.Millisecond, 5)
	opts := e.options()
	opts.Start = r2z2test.FirstSequence
	opts.BatchSize = 7

	var want []kmRef
	var seqs []int64
	bySeq := map[int64]kmRef{} // every published sequence's killmail
	holes := 0
	const iterations = 30
	var stopped [4]int // by phase: before R2Z2 was asked, while ingesting
	for i := range iterations {
		for range rng.IntN(12) {
			k := kmRef{int64(129_000_000 + len(want)), systems[rng.IntN(len(systems))]}
			seq := e.srv.PublishKillmail(k.id, k.system)
			seqs = append(seqs, seq)
			bySeq[seq] = k
			want = append(want, k)
		}
		if len(seqs) > 0 && rng.IntN(3) == 0 {
			old := seqs[rng.IntN(len(seqs))]
			bySeq[e.srv.Republish(old)] = bySeq[old]
		}
		if rng.IntN(6) == 0 {
			e.srv.Hole()
			holes++
		}
		if rng.IntN(4) == 0 {
			e.srv.Script("", r2z2test.Response{Status: http.StatusTooManyRequests})
		}

		ctx, cancel := context.WithCancel(context.Background())
		var reqs atomic.Int64
		if i%2 == 0 {
			// Stop after a random number of requests to R2Z2.
			n := int64(1 + rng.IntN(25))
			e.srv.OnRequest(func(string) {
				if reqs.Add(1) == n {
					cancel()
				}
			})
		} else {
			// Stop after a random time, which often falls while the
			// ingester fences, reads the cursor or reads back the topic.
			e.srv.OnRequest(func(string) { reqs.Add(1) })
			time.AfterFunc(time.Duration(rng.IntN(120_000))*time.Microsecond, cancel)
		}
		tctx, tcancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := e.ingester(opts).Run(tctx)
		tcancel()
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("iteration %d: Run: %v", i, err)
		}
		if reqs.Load() == 0 {
			stopped[0]++
		} else {
			stopped[1]++
		}

		// Whenever it stops, the topic holds exactly the killmails the
		// committed cursor covers.
		cursor := readR2Z2Cursor(t, e)
		var covered []kmRef
		seen := map[int64]bool{}
		for seq := int64(r2z2test.FirstSequence); seq <= cursor; seq++ {
			if k, ok := bySeq[seq]; ok && !seen[k.id] {
				seen[k.id] = true
				covered = append(covered, k)
			}
		}
		checkExactlyOnce(t, readIngested(t, e), covered)
		if t.Failed() {
			t.Fatalf("iteration %d: the topic does not match the cursor %d", i, cursor)
		}
	}
	e.srv.OnRequest(nil)
	// One more, so that a hole at the end is followed by a file.
	k := kmRef{int64(129_000_000 + len(want)), systems[0]}
	e.srv.PublishKillmail(k.id, k.system)
	want = append(want, k)
	t.Logf("%d killmails, %d holes; stopped %d times before asking R2Z2, %d times while ingesting", len(want), holes, stopped[0], stopped[1])
	stats := e.runToHead(e.ingester(opts), 0)
	checkExactlyOnce(t, readIngested(t, e), want)
	if stats.Cursor != e.srv.Head() {
		t.Errorf("cursor %d, want %d", stats.Cursor, e.srv.Head())
	}
}

// A transaction that fails to commit is not half-stored: the ingester
// starts over from the committed cursor and stores the batch again.
func TestR2Z2StartsOverAfterFailedCommit(t *testing.T) {
	e := newR2Z2Env(t)
	want := publish(e.srv, 0, 12)
	var endTxns atomic.Int64
	e.cluster.ControlKey(kmsg.EndTxn.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		e.cluster.KeepControl()
		// Fail the third commit (the first is the initial cursor).
		if endTxns.Add(1) != 3 {
			return nil, nil, false
		}
		resp := req.(*kmsg.EndTxnRequest).ResponseKind().(*kmsg.EndTxnResponse)
		resp.ErrorCode = kerr.UnknownServerError.Code
		return resp, nil, true
	})
	opts := e.options()
	opts.Start = r2z2test.FirstSequence
	opts.BatchSize = 4
	opts.RestartBackoff = time.Millisecond
	stats := e.runToHead(e.ingester(opts), 0)
	checkExactlyOnce(t, readIngested(t, e), want)
	if stats.Restarts != 1 {
		t.Errorf("%d restarts, want 1: %+v", stats.Restarts, stats)
	}
	if e.log.Count("starting over from the committed cursor") != 1 {
		t.Errorf("the failed commit was not logged once")
	}
}

// Two ingesters of the same cursor: the newer one fences the older, which
// stops, or at worst both start over in turn; either way nothing is stored
// twice.
func TestR2Z2NewerIngesterFencesOlder(t *testing.T) {
	e := newR2Z2Env(t)
	want := publish(e.srv, 0, 5)
	optsA := e.options()
	optsA.Start = r2z2test.FirstSequence
	clockA := newFakeClock()
	optsA.Now, optsA.Sleep = clockA.Now, func(ctx context.Context, d time.Duration) error {
		// A real pause at the head, so the older ingester does not spin.
		if err := clockA.Sleep(ctx, d); err != nil {
			return err
		}
		if d == producer.DefaultR2Z2PollInterval {
			time.Sleep(2 * time.Millisecond)
		}
		return nil
	}
	ctxA, cancelA := context.WithTimeout(context.Background(), time.Minute)
	defer cancelA()
	doneA := make(chan error, 1)
	var statsA producer.R2Z2Stats
	go func() {
		var err error
		statsA, err = e.ingester(optsA).Run(ctxA)
		doneA <- err
	}()
	for e.srv.Head()+1 != lastFileRequested(e.srv) {
		time.Sleep(5 * time.Millisecond)
	}

	want = append(want, publish(e.srv, 5, 5)...)
	statsB := e.runToHead(e.ingester(e.options()), 0)
	want = append(want, publish(e.srv, 10, 5)...)
	e.runToHead(e.ingester(e.options()), 0)
	cancelA()
	errA := <-doneA
	t.Logf("older ingester: %v; %+v; newer: %+v", errA, statsA, statsB)
	if errA != nil && !errors.Is(errA, context.Canceled) && !strings.Contains(errA.Error(), "took over") {
		t.Errorf("the older ingester stopped with %v", errA)
	}
	checkExactlyOnce(t, readIngested(t, e), want)
}

func lastFileRequested(s *r2z2test.Server) int64 {
	reqs := s.Requests()
	for i := len(reqs) - 1; i >= 0; i-- {
		var n int64
		if _, err := fmt.Sscanf(reqs[i].Path, "/ephemeral/%d.json", &n); err == nil {
			return n
		}
	}
	return 0
}

// A cursor topic holding another killmails topic's cursor is refused, and
// the other deployment's ingester is not fenced.
func TestR2Z2RefusesAnotherTopicsCursor(t *testing.T) {
	e := newR2Z2Env(t)
	publish(e.srv, 0, 3)
	opts := e.options()
	opts.Start = r2z2test.FirstSequence
	first := e.runToHead(e.ingester(opts), 0)

	if _, err := kadmCreate(e, "killmails-staging"); err != nil {
		t.Fatal(err)
	}
	other := e.options()
	other.Topic = "killmails-staging"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := e.ingester(other).Run(ctx)
	if err == nil || !strings.Contains(err.Error(), `holds the cursor of topic "killmails"`) {
		t.Fatalf("Run on another topic's cursor: %v", err)
	}
	// The first deployment resumes where it was.
	publish(e.srv, 3, 1)
	if stats := e.runToHead(e.ingester(opts), 0); stats.Produced != 1 || stats.Cursor != first.Cursor+1 {
		t.Errorf("the first deployment after the refusal: %+v", stats)
	}
}

// A first transaction reported committed that was aborted (franz-go v1.22
// can do that; here the broker is asked to abort instead) is caught by
// reading the cursor back, and redone with a new client, without a restart
// and without a warning. Were it not, an ingester stopped before its first
// batch would leave no cursor, and the next start, live, would skip what was
// published in between.
func TestR2Z2RedoesFirstCommitThatDidNotHappen(t *testing.T) {
	e := newR2Z2Env(t)
	want := publish(e.srv, 0, 5)
	e.srv.SetLag(4) // sequence.json points at the first
	var faked atomic.Int64
	e.cluster.ControlKey(kmsg.EndTxn.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		e.cluster.KeepControl()
		end := req.(*kmsg.EndTxnRequest)
		if end.Commit && faked.Add(1) == 1 {
			// Abort instead, and let the client believe it committed.
			end.Commit = false
		}
		return nil, nil, false
	})
	opts := e.options() // live: no start sequence
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e.srv.OnRequest(func(path string) {
		if path != "/ephemeral/sequence.json" {
			cancel() // stop before the first killmail is read
		}
	})
	if _, err := e.ingester(opts).Run(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("first run: %v", err)
	}
	e.srv.OnRequest(nil)
	if faked.Load() == 0 {
		t.Fatal("no commit was turned into an abort")
	}
	if strings.Contains(e.log.String(), "level=WARN") {
		t.Errorf("the redone first commit caused a warning")
	}

	want = append(want, publish(e.srv, 5, 5)...) // sequence.json moves on
	stats := e.runToHead(e.ingester(opts), 0)
	checkExactlyOnce(t, readIngested(t, e), want)
	if stats.Restarts != 0 {
		t.Errorf("restarts: %+v", stats)
	}
}

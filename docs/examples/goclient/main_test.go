package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/killfeed/killfeed/internal/testkit"
	killfeedv1 "github.com/killfeed/killfeed/proto/killfeed/v1"
	"github.com/killfeed/killfeed/proto/killfeed/v1/killfeedv1connect"
)

const (
	jita  = 30000142
	amarr = 30002187
	rens  = 30002510 // produced to, never followed
)

// TestRunResumesExactlyOnce runs the client loop against a service that
// keeps receiving killmails while the client's connections are cut in the
// middle of a batch, its commits fail, the service restarts, and the client
// itself is stopped and started again: every killmail of the followed
// systems must be processed exactly once, in order, and the committed
// positions must end at the last event processed.
func TestRunResumesExactlyOnce(t *testing.T) {
	for _, protocol := range []string{"grpc", "connect"} {
		t.Run(protocol, func(t *testing.T) {
			env := testkit.Start(t)
			prod := startProducing(t, env)
			faults := &faultyTransport{base: newHTTPClient().Transport}
			logs := &logBuffer{}
			cfg := Config{
				URL:        env.URL,
				ClientID:   "example-" + protocol,
				Systems:    []int64{jita, amarr},
				Protocol:   protocol,
				MinBackoff: 20 * time.Millisecond,
				MaxBackoff: 200 * time.Millisecond,
				HTTPClient: &http.Client{Transport: faults},
				Logger:     slog.New(slog.NewTextHandler(logs, nil)),
			}
			// Faults injected while the client is processing: the
			// connection goes away mid-batch, and the batch's commit and the
			// first retry fail too.
			rec := &recorder{at: map[int]func(){
				30: func() {
					faults.failCommits.Store(2)
					env.DropConnections()
				},
				120: env.DropConnections,
			}}

			run1 := startRun(t, cfg, rec)
			rec.waitFor(t, 60)
			env.Restart()
			rec.waitFor(t, 90)
			// The client stops (as on SIGTERM) and a new process starts with
			// nothing but the same client id.
			run1.stop(t)
			run2 := startRun(t, cfg, rec)
			rec.waitFor(t, 150)

			produced := prod.stop()
			want := slices.Concat(produced[jita], produced[amarr])
			rec.waitFor(t, len(want))
			time.Sleep(200 * time.Millisecond) // time for duplicates to show
			run2.stop(t)

			got := rec.snapshot()
			counts := map[int64]int{}
			for _, k := range got {
				counts[k.KillmailID]++
				if k.SystemID != jita && k.SystemID != amarr {
					t.Errorf("processed killmail %d of system %d, which is not followed", k.KillmailID, k.SystemID)
				}
			}
			for _, id := range want {
				if counts[id] != 1 {
					t.Errorf("killmail %d processed %d times, want exactly once", id, counts[id])
				}
			}
			if len(got) != len(want) {
				t.Errorf("processed %d killmails, produced %d in followed systems", len(got), len(want))
			}
			if n := logs.count("stream ended; reconnecting"); n < 3 {
				t.Errorf("the client reconnected %d times; the test broke its stream at least 3 times", n)
			}
			if n := logs.count("injected commit failure"); n < 2 {
				t.Errorf("%d commits failed; the test failed 2", n)
			}
			if t.Failed() {
				t.Logf("client log:\n%s", logs.String())
			}
			checkCommitted(t, env, cfg.ClientID, got)
		})
	}
}

// checkCommitted checks that the server's positions are the last event
// processed in each system.
func checkCommitted(t *testing.T, env *testkit.Env, clientID string, kills []Kill) {
	t.Helper()
	last := map[int64]int64{}
	for _, k := range kills {
		if k.EventID <= last[k.SystemID] {
			t.Errorf("system %d: event %d processed after event %d", k.SystemID, k.EventID, last[k.SystemID])
		}
		last[k.SystemID] = k.EventID
	}
	c := killfeedv1connect.NewKillfeedServiceClient(http.DefaultClient, env.URL)
	res, err := c.GetPositions(context.Background(), connect.NewRequest(&killfeedv1.GetPositionsRequest{ClientId: clientID}))
	if err != nil {
		t.Fatal(err)
	}
	committed := map[int64]int64{}
	for _, p := range res.Msg.GetPositions() {
		committed[p.GetSystemId()] = p.GetEventId()
	}
	for sys, ev := range last {
		if committed[sys] != ev {
			t.Errorf("system %d: committed position is event %d, last processed is %d", sys, committed[sys], ev)
		}
	}
}

func TestParseSystems(t *testing.T) {
	if ids, err := parseSystems(" 30000142, 30002187,"); err != nil || len(ids) != 2 || ids[0] != jita || ids[1] != amarr {
		t.Errorf("parseSystems = %v, %v", ids, err)
	}
	for _, bad := range []string{"", "jita", "-1", "0", "1,x"} {
		if _, err := parseSystems(bad); err == nil {
			t.Errorf("parseSystems(%q) accepted it", bad)
		}
	}
}

func TestRunStopsOnInvalidRequest(t *testing.T) {
	env := testkit.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The server refuses a client id longer than 128 characters; retrying
	// cannot help, so Run returns the error.
	cfg := Config{URL: env.URL, ClientID: strings.Repeat("x", 129), Systems: []int64{jita}}
	err := Run(ctx, cfg, func(context.Context, Kill) error { return nil })
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("Run = %v, want invalid_argument", err)
	}
	if _, err := (Config{}).withDefaults(); err == nil {
		t.Error("an empty config was accepted")
	}
}

// producer writes killmails to jita, amarr and rens until stopped.
type producer struct {
	cancel context.CancelFunc
	done   chan struct{}
	ids    map[int64][]int64
}

func startProducing(t *testing.T, env *testkit.Env) *producer {
	ctx, cancel := context.WithCancel(context.Background())
	p := &producer{cancel: cancel, done: make(chan struct{}), ids: map[int64][]int64{}}
	go func() {
		defer close(p.done)
		systems := []int64{jita, amarr, rens}
		for i := 0; ctx.Err() == nil; i++ {
			sys := systems[i%len(systems)]
			if id := env.Produce(sys); id != 0 {
				p.ids[sys] = append(p.ids[sys], id)
			}
			time.Sleep(time.Millisecond)
		}
	}()
	t.Cleanup(func() { p.stop() })
	return p
}

// stop stops producing and returns the killmail ids produced per system.
func (p *producer) stop() map[int64][]int64 {
	p.cancel()
	<-p.done
	return p.ids
}

// recorder collects what the client processed, and runs at[n] while the
// client processes the n-th killmail.
type recorder struct {
	mu    sync.Mutex
	kills []Kill
	at    map[int]func()
}

func (r *recorder) add(k Kill) {
	r.mu.Lock()
	r.kills = append(r.kills, k)
	f := r.at[len(r.kills)]
	r.mu.Unlock()
	if f != nil {
		f()
	}
}

func (r *recorder) snapshot() []Kill {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Kill(nil), r.kills...)
}

func (r *recorder) waitFor(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for len(r.snapshot()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("processed %d killmails after 30s, want %d", len(r.snapshot()), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// run is one Run in the background, as one process of the client.
type run struct {
	cancel context.CancelFunc
	err    chan error
}

func startRun(t *testing.T, cfg Config, rec *recorder) *run {
	ctx, cancel := context.WithCancel(context.Background())
	r := &run{cancel: cancel, err: make(chan error, 1)}
	go func() {
		r.err <- Run(ctx, cfg, func(_ context.Context, k Kill) error {
			rec.add(k)
			return nil
		})
	}()
	t.Cleanup(cancel)
	return r
}

func (r *run) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.err:
		if err != context.Canceled {
			t.Errorf("Run = %v, want context.Canceled", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after its context was cancelled")
	}
}

// logBuffer keeps the client's log to count what happened.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) count(s string) int { return strings.Count(l.String(), s) }

// faultyTransport fails the next failCommits Commit calls.
type faultyTransport struct {
	base        http.RoundTripper
	failCommits atomic.Int32
}

func (f *faultyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.HasSuffix(r.URL.Path, "/Commit") {
		for n := f.failCommits.Load(); n > 0; n = f.failCommits.Load() {
			if f.failCommits.CompareAndSwap(n, n-1) {
				if r.Body != nil {
					r.Body.Close()
				}
				return nil, errors.New("injected commit failure")
			}
		}
	}
	return f.base.RoundTrip(r)
}

package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/killfeed/killfeed/feedsvc"
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

func TestRunSendsAPIKey(t *testing.T) {
	file := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(file, []byte("example-key-0123456789 tool-\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keys, err := feedsvc.LoadKeys(file)
	if err != nil {
		t.Fatal(err)
	}
	env := testkit.Start(t, testkit.WithServiceOptions(feedsvc.Options{Keys: keys}))
	want := env.Produce(jita)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	cfg := Config{URL: env.URL, ClientID: "tool-a", Systems: []int64{jita}, MaxEvents: 1, APIKey: "example-key-0123456789"}
	var got []int64
	if err := Run(ctx, cfg, func(_ context.Context, k Kill) error { got = append(got, k.KillmailID); return nil }); err != nil {
		t.Fatalf("Run with a valid key = %v", err)
	}
	if !slices.Equal(got, []int64{want}) {
		t.Errorf("processed %v, want [%d]", got, want)
	}
	// A refusal is final: no retries.
	for _, key := range []string{"", "wrong-key-0123456789"} {
		cfg.APIKey = key
		if err := Run(ctx, cfg, func(context.Context, Kill) error { return nil }); connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Errorf("Run with key %q = %v, want unauthenticated", key, err)
		}
	}
	cfg.APIKey, cfg.ClientID = "example-key-0123456789", "other-tool"
	if err := Run(ctx, cfg, func(context.Context, Kill) error { return nil }); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Errorf("Run for a client id outside the key's prefix = %v, want permission_denied", err)
	}
}

// TestRunStopsWhenTakenOver: a second consumer with the same client id
// takes the stream over; the first stops instead of taking it back.
func TestRunStopsWhenTakenOver(t *testing.T) {
	env := testkit.Start(t)
	cfg := Config{URL: env.URL, ClientID: "one-consumer", Systems: []int64{jita}, MinBackoff: 10 * time.Millisecond}
	rec := &recorder{}
	first := startRun(t, cfg, rec)
	env.Produce(jita)
	rec.waitFor(t, 1)
	second := startRun(t, cfg, rec)
	select {
	case err := <-first.err:
		if connect.CodeOf(err) != connect.CodeAborted {
			t.Errorf("first Run = %v, want aborted", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the first consumer kept running after a second one subscribed")
	}
	env.Produce(jita)
	rec.waitFor(t, 2)
	second.stop(t)
}

// silentServer sends a loss report and one event, then nothing at all, as
// a server behind a half-open connection would look.
type silentServer struct {
	killfeedv1connect.UnimplementedKillfeedServiceHandler
	subscribes atomic.Int32
	commits    chan *killfeedv1.CommitRequest
}

func (s *silentServer) Subscribe(ctx context.Context, _ *connect.Request[killfeedv1.SubscribeRequest], stream *connect.ServerStream[killfeedv1.SubscribeResponse]) error {
	if s.subscribes.Add(1) == 1 {
		gap := &killfeedv1.Gap{SystemId: jita, FromEventId: 1024, ToEventId: 5120, LostEvents: 4}
		km, _ := structpb.NewStruct(map[string]any{"killmail_id": 130000001, "zkb": map[string]any{"totalValue": 1.5e6}})
		ev := &killfeedv1.Event{EventId: 5120, SystemId: jita, Killmail: km}
		for _, m := range []*killfeedv1.SubscribeResponse{
			{Kind: &killfeedv1.SubscribeResponse_Gap{Gap: gap}},
			{Kind: &killfeedv1.SubscribeResponse_Events{Events: &killfeedv1.Events{Events: []*killfeedv1.Event{ev}}}},
		} {
			if err := stream.Send(m); err != nil {
				return err
			}
		}
	}
	<-ctx.Done()
	return ctx.Err()
}

func (s *silentServer) Commit(_ context.Context, req *connect.Request[killfeedv1.CommitRequest]) (*connect.Response[killfeedv1.CommitResponse], error) {
	s.commits <- req.Msg
	return connect.NewResponse(&killfeedv1.CommitResponse{}), nil
}

// TestRunReportsGapsAndLeavesSilentStreams: a loss report is logged with
// its system, range and count, and a stream that stays silent for three
// heartbeats is abandoned for a new one.
func TestRunReportsGapsAndLeavesSilentStreams(t *testing.T) {
	fake := &silentServer{commits: make(chan *killfeedv1.CommitRequest, 10)}
	mux := http.NewServeMux()
	mux.Handle(killfeedv1connect.NewKillfeedServiceHandler(fake))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := feedsvc.NewHTTPServer("", mux)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	logs := &logBuffer{}
	cfg := Config{
		URL:        "http://" + ln.Addr().String(),
		ClientID:   "silent",
		Systems:    []int64{jita},
		Heartbeat:  time.Second,
		MinBackoff: 10 * time.Millisecond,
		Logger:     slog.New(slog.NewTextHandler(logs, nil)),
	}
	rec := &recorder{}
	r := startRun(t, cfg, rec)
	rec.waitFor(t, 1)
	select {
	case c := <-fake.commits:
		if cur := c.GetCursors(); len(cur) != 1 || cur[0].GetSystemId() != jita || cur[0].GetEventId() != 5120 {
			t.Errorf("committed %v, want system %d event 5120", cur, jita)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no commit")
	}
	deadline := time.Now().Add(15 * time.Second)
	for fake.subscribes.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	r.stop(t)
	if n := fake.subscribes.Load(); n < 2 {
		t.Errorf("%d subscribes; the client did not leave the silent stream", n)
	}
	out := logs.String()
	for _, want := range []string{
		`msg="events lost" system=30000142 from_event_id=1024 to_event_id=5120 lost_events=4`,
		`no message from the server for three heartbeat intervals`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if k := rec.snapshot()[0]; k.KillmailID != 130000001 || k.TotalValue != 1.5e6 || k.EventID != 5120 {
		t.Errorf("processed %+v", k)
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

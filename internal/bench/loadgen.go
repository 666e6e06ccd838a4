package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/killfeed/killfeed/internal/killmail"
	killfeedv1 "github.com/killfeed/killfeed/proto/killfeed/v1"
)

// RoleEnv, set to "loadgen", makes the benchmark binary (or its test binary)
// serve load-generator requests on stdin and stdout instead of running the
// benchmark: the parent re-executes itself this way so that clients do not
// share the measured process.
const RoleEnv = "KILLFEED_BENCH_ROLE"

// Ops of the load generator.
const (
	// OpOpen opens Streams and waits until each has finished its backfill;
	// they stay open, idle, for OpLatency and OpClose.
	OpOpen = "open"
	// OpLatency produces stamped killmails at Rate for Duration into
	// Produce, while a raw franz-go consumer tails the same topic, and
	// reports the delivery latency on the open streams and on the raw tail.
	OpLatency = "latency"
	// OpClose closes the open streams.
	OpClose = "close"
	// OpDrain opens Streams, reads each until its backfill is done, closes
	// them and reports the events received and the time taken.
	OpDrain = "drain"
	// OpRawRead reads Topic from start to end with a plain consumer.
	OpRawRead = "rawread"
)

// Request is one load-generator request.
type Request struct {
	Op       string   `json:"op"`
	URL      string   `json:"url,omitempty"`
	Brokers  []string `json:"brokers,omitempty"`
	Topic    string   `json:"topic,omitempty"`
	Protocol string   `json:"protocol,omitempty"`
	// Streams lists each stream's systems (OpOpen, OpDrain).
	Streams [][]int64 `json:"streams,omitempty"`
	// ClientPrefix starts each stream's client id; the stream's index ends
	// it.
	ClientPrefix string `json:"client_prefix,omitempty"`
	// PerConn is how many streams share one HTTP/2 connection.
	PerConn int `json:"per_conn,omitempty"`
	// Identity asks for uncompressed messages; by default the streams
	// accept gzip, as connect-go clients do.
	Identity bool `json:"identity,omitempty"`
	// AutoCommit uses automatic commit mode; the default is explicit mode
	// with no commits, like a raw consumer that commits nothing.
	AutoCommit bool `json:"auto_commit,omitempty"`
	// Rate (killmails/s), Duration and Produce (systems, used in turn)
	// drive OpLatency's producer. FirstID is its first killmail id.
	Rate     float64       `json:"rate,omitempty"`
	Duration time.Duration `json:"duration,omitempty"`
	Produce  []int64       `json:"produce,omitempty"`
	FirstID  int64         `json:"first_id,omitempty"`
}

// Response answers a Request.
type Response struct {
	Err string `json:"err,omitempty"`
	// Streams opened or drained, and how long that took.
	Streams int           `json:"streams,omitempty"`
	Took    time.Duration `json:"took,omitempty"`
	// Events received (OpDrain, OpLatency) and message bytes (OpDrain).
	Events int64 `json:"events,omitempty"`
	Bytes  int64 `json:"bytes,omitempty"`
	// WireBytes is what OpDrain's connections read from the network:
	// Bytes after compression, plus HTTP/2 framing.
	WireBytes int64 `json:"wire_bytes,omitempty"`
	// OpLatency: killmails produced, deliveries expected (produced × the
	// streams following each one's system), and the latencies.
	Produced int64   `json:"produced,omitempty"`
	Expected int64   `json:"expected,omitempty"`
	Stream   Summary `json:"stream"`
	Raw      Summary `json:"raw"`
	// Read is OpRawRead's result.
	Read ReadResult `json:"read"`
	// CPU is the load generator's CPU time during the request.
	CPU time.Duration `json:"cpu,omitempty"`
}

// Agent executes load-generator requests. The benchmark talks to one in a
// child process through LoadGen; it can also be used directly.
type Agent struct {
	group *streamGroup
}

// Do executes one request.
func (a *Agent) Do(ctx context.Context, req Request) Response {
	cpu := CPUTime()
	resp, err := a.do(ctx, req)
	if err != nil {
		resp.Err = err.Error()
	}
	resp.CPU = CPUTime() - cpu
	return resp
}

func (a *Agent) do(ctx context.Context, req Request) (Response, error) {
	switch req.Op {
	case OpOpen:
		if a.group != nil {
			return Response{}, errors.New("streams are already open")
		}
		g, took, err := openGroup(ctx, req)
		if err != nil {
			return Response{}, err
		}
		a.group = g
		return Response{Streams: len(g.streams), Took: took}, nil
	case OpLatency:
		if a.group == nil {
			return Response{}, errors.New("no open streams")
		}
		return a.group.latency(ctx, req)
	case OpClose:
		if a.group != nil {
			a.group.close()
			a.group = nil
		}
		return Response{}, nil
	case OpDrain:
		return drain(ctx, req)
	case OpRawRead:
		r, err := ReadAll(ctx, req.Brokers, req.Topic)
		return Response{Read: r}, err
	}
	return Response{}, fmt.Errorf("unknown op %q", req.Op)
}

// Close closes whatever is open.
func (a *Agent) Close() {
	if a.group != nil {
		a.group.close()
		a.group = nil
	}
}

func subscribeRequest(req Request, i int, systems []int64) *killfeedv1.SubscribeRequest {
	mode := killfeedv1.CommitMode_COMMIT_MODE_EXPLICIT
	if req.AutoCommit {
		mode = killfeedv1.CommitMode_COMMIT_MODE_AUTO
	}
	return &killfeedv1.SubscribeRequest{
		ClientId:   req.ClientPrefix + strconv.Itoa(i),
		SystemIds:  systems,
		CommitMode: mode,
		// Idle streams must stay idle while memory is measured.
		HeartbeatSeconds: 300,
	}
}

func httpClients(n, perConn int, wire *atomic.Int64) []*http.Client {
	perConn = max(1, perConn)
	out := make([]*http.Client, (n+perConn-1)/perConn)
	for i := range out {
		out[i] = NewH2CClient(wire)
	}
	return out
}

// streamGroup is a set of open streams that record delivery latency.
type streamGroup struct {
	cancel    context.CancelFunc
	clients   []*http.Client
	streams   []*Stream
	followers map[int64]int64 // system → streams following it
	done      sync.WaitGroup

	recording atomic.Bool
	delivered atomic.Int64
	mu        sync.Mutex
	samples   []time.Duration
	failed    atomic.Pointer[error]
}

// openGroup opens the streams, a few at a time, and waits for every
// backfill to finish.
func openGroup(ctx context.Context, req Request) (*streamGroup, time.Duration, error) {
	began := time.Now()
	sctx, cancel := context.WithCancel(context.Background())
	g := &streamGroup{cancel: cancel, clients: httpClients(len(req.Streams), req.PerConn, nil), followers: map[int64]int64{}}
	ready := make(chan error, len(req.Streams))
	// Opening thousands at once only measures the accept queue; a bounded
	// number in flight opens them about as fast.
	sem := make(chan struct{}, 64)
	var openErr atomic.Pointer[error]
	for i, systems := range req.Streams {
		for _, s := range systems {
			g.followers[s]++
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			g.close()
			return nil, 0, ctx.Err()
		}
		if p := openErr.Load(); p != nil {
			g.close()
			return nil, 0, *p
		}
		st, err := OpenStream(sctx, g.clients[i/max(1, req.PerConn)], req.URL, req.Protocol, req.Identity, subscribeRequest(req, i, systems))
		if err != nil {
			g.close()
			return nil, 0, err
		}
		g.streams = append(g.streams, st)
		g.done.Add(1)
		go func() {
			defer g.done.Done()
			g.run(st, func(err error) {
				<-sem
				if err != nil {
					openErr.CompareAndSwap(nil, &err)
				}
				ready <- err
			})
		}()
	}
	for range req.Streams {
		select {
		case err := <-ready:
			if err != nil {
				g.close()
				return nil, 0, fmt.Errorf("waiting for backfill: %w", err)
			}
		case <-ctx.Done():
			g.close()
			return nil, 0, ctx.Err()
		}
	}
	return g, time.Since(began), nil
}

// run reads one stream until it ends, calling backfilled once.
func (g *streamGroup) run(st *Stream, backfilled func(error)) {
	signalled := false
	signal := func(err error) {
		if !signalled {
			signalled = true
			backfilled(err)
		}
	}
	for {
		f, err := st.Next(true)
		now := time.Now()
		if err != nil {
			signal(err)
			if g.recording.Load() {
				g.failed.CompareAndSwap(nil, &err)
			}
			return
		}
		switch f.Kind {
		case FrameBackfillDone:
			signal(nil)
		case FrameEvents:
			if !g.recording.Load() {
				continue
			}
			g.delivered.Add(int64(f.Events))
			g.mu.Lock()
			for _, us := range f.Stamps {
				g.samples = append(g.samples, now.Sub(time.UnixMicro(us)))
			}
			g.mu.Unlock()
		}
	}
}

func (g *streamGroup) close() {
	g.cancel()
	for _, st := range g.streams {
		_ = st.Close()
	}
	g.done.Wait()
	for _, c := range g.clients {
		c.CloseIdleConnections()
	}
}

// latency runs OpLatency on the group's streams.
func (g *streamGroup) latency(ctx context.Context, req Request) (Response, error) {
	if len(req.Produce) == 0 || req.Rate <= 0 || req.Duration <= 0 {
		return Response{}, errors.New("latency: produce, rate and duration are required")
	}
	ends, err := EndOffsets(ctx, req.Brokers, req.Topic)
	if err != nil {
		return Response{}, err
	}
	from := map[int32]kgo.Offset{}
	for p, o := range ends {
		from[p] = kgo.NewOffset().At(o)
	}
	raw, err := kgo.NewClient(kgo.SeedBrokers(req.Brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{req.Topic: from}))
	if err != nil {
		return Response{}, fmt.Errorf("creating raw consumer: %w", err)
	}
	defer raw.Close()
	prod, err := kgo.NewClient(kgo.SeedBrokers(req.Brokers...), kgo.DefaultProduceTopic(req.Topic),
		// Every killmail leaves at once: the producer must not add
		// latency that both sides would then share.
		kgo.ProducerLinger(0))
	if err != nil {
		return Response{}, fmt.Errorf("creating producer: %w", err)
	}
	defer prod.Close()

	rawCtx, stopRaw := context.WithCancel(ctx)
	defer stopRaw()
	var rawSamples []time.Duration
	var rawCount atomic.Int64
	rawDone := make(chan struct{})
	go func() {
		defer close(rawDone)
		for {
			fs := raw.PollFetches(rawCtx)
			now := time.Now()
			if rawCtx.Err() != nil {
				return
			}
			fs.EachRecord(func(r *kgo.Record) {
				if us, ok := Stamp(r.Value); ok {
					rawSamples = append(rawSamples, now.Sub(time.UnixMicro(us)))
					rawCount.Add(1)
				}
			})
		}
	}()
	// Let the raw consumer issue its first fetch, so it tails like the
	// service's does.
	time.Sleep(500 * time.Millisecond)

	g.mu.Lock()
	g.samples = g.samples[:0]
	g.mu.Unlock()
	g.delivered.Store(0)
	g.failed.Store(nil)
	g.recording.Store(true)

	var produced, expected int64
	var produceErr atomic.Pointer[error]
	began := time.Now()
	n := int64(req.Rate * req.Duration.Seconds())
	for i := range n {
		due := began.Add(time.Duration(float64(i) / req.Rate * float64(time.Second)))
		if wait := time.Until(due); wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return Response{}, ctx.Err()
			}
		}
		sys := req.Produce[int(i)%len(req.Produce)]
		rec := &kgo.Record{Key: killmail.Key(sys), Value: Killmail(req.FirstID+i, sys, time.Now().UnixMicro())}
		prod.Produce(ctx, rec, func(_ *kgo.Record, err error) {
			if err != nil {
				produceErr.CompareAndSwap(nil, &err)
			}
		})
		produced++
		expected += g.followers[sys]
	}
	if err := prod.Flush(ctx); err != nil {
		return Response{}, fmt.Errorf("producing: %w", err)
	}
	if p := produceErr.Load(); p != nil {
		return Response{}, fmt.Errorf("producing: %w", *p)
	}
	// Wait for the stragglers, but not for ever: a missing delivery is
	// reported, not waited for.
	deadline := time.Now().Add(10 * time.Second)
	for (g.delivered.Load() < expected || rawCount.Load() < produced) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	g.recording.Store(false)
	stopRaw()
	<-rawDone
	if p := g.failed.Load(); p != nil {
		return Response{}, fmt.Errorf("a stream failed during the measurement: %w", *p)
	}
	g.mu.Lock()
	samples := append([]time.Duration(nil), g.samples...)
	g.mu.Unlock()
	return Response{
		Streams:  len(g.streams),
		Produced: produced,
		Expected: expected,
		Events:   g.delivered.Load(),
		Stream:   Summarize(samples),
		Raw:      Summarize(rawSamples),
		Took:     time.Since(began),
	}, nil
}

// drain runs OpDrain.
func drain(ctx context.Context, req Request) (Response, error) {
	var wire atomic.Int64
	clients := httpClients(len(req.Streams), req.PerConn, &wire)
	defer func() {
		for _, c := range clients {
			c.CloseIdleConnections()
		}
	}()
	type result struct {
		events, bytes int64
		err           error
	}
	results := make(chan result, len(req.Streams))
	began := time.Now()
	for i, systems := range req.Streams {
		go func() {
			var r result
			defer func() { results <- r }()
			sctx, cancel := context.WithCancel(ctx)
			defer cancel()
			st, err := OpenStream(sctx, clients[i/max(1, req.PerConn)], req.URL, req.Protocol, req.Identity, subscribeRequest(req, i, systems))
			if err != nil {
				r.err = err
				return
			}
			defer st.Close()
			for {
				f, err := st.Next(false)
				if err != nil {
					r.err = err
					return
				}
				r.events += int64(f.Events)
				if f.Kind == FrameBackfillDone {
					r.bytes = st.Bytes
					return
				}
			}
		}()
	}
	var resp Response
	var errs []error
	for range req.Streams {
		r := <-results
		resp.Events += r.events
		resp.Bytes += r.bytes
		errs = append(errs, r.err)
	}
	resp.Took = time.Since(began)
	resp.Streams = len(req.Streams)
	resp.WireBytes = wire.Load()
	return resp, errors.Join(errs...)
}

// Serve answers requests read as JSON lines from r with JSON lines on w,
// until r ends: the load generator's side of LoadGen.
func Serve(ctx context.Context, r io.Reader, w io.Writer) error {
	var a Agent
	defer a.Close()
	dec := json.NewDecoder(bufio.NewReader(r))
	enc := json.NewEncoder(w)
	for {
		var req Request
		if err := dec.Decode(&req); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("reading request: %w", err)
		}
		if err := enc.Encode(a.Do(ctx, req)); err != nil {
			return fmt.Errorf("writing response: %w", err)
		}
	}
}

// LoadGen is the benchmark's handle on its load generator: a child process
// running the same binary with RoleEnv set, or an Agent in this process.
type LoadGen struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	enc   *json.Encoder
	dec   *json.Decoder
	agent *Agent
}

// StartLoadGen starts the load generator: a child process re-executing this
// binary, or, with inProcess, an Agent sharing this process.
func StartLoadGen(inProcess bool) (*LoadGen, error) {
	if inProcess {
		return &LoadGen{agent: &Agent{}}, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding this executable to start the load generator: %w", err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), RoleEnv+"=loadgen")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("starting the load generator: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("starting the load generator: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the load generator: %w", err)
	}
	return &LoadGen{cmd: cmd, stdin: stdin, enc: json.NewEncoder(stdin), dec: json.NewDecoder(stdout)}, nil
}

// Separate reports whether the load generator runs in its own process.
func (l *LoadGen) Separate() bool { return l.agent == nil }

// Do sends a request and waits for its response; a response carrying an
// error is returned as an error.
func (l *LoadGen) Do(ctx context.Context, req Request) (Response, error) {
	var resp Response
	if l.agent != nil {
		resp = l.agent.Do(ctx, req)
	} else {
		if err := l.enc.Encode(req); err != nil {
			return Response{}, fmt.Errorf("load generator %s: sending: %w", req.Op, err)
		}
		if err := l.dec.Decode(&resp); err != nil {
			return Response{}, fmt.Errorf("load generator %s: reading the response: %w", req.Op, err)
		}
	}
	if resp.Err != "" {
		return resp, fmt.Errorf("load generator %s: %s", req.Op, resp.Err)
	}
	return resp, nil
}

// Close stops the load generator.
func (l *LoadGen) Close() error {
	if l.agent != nil {
		l.agent.Close()
		return nil
	}
	_ = l.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- l.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("load generator: %w", err)
		}
		return nil
	case <-time.After(10 * time.Second):
		_ = l.cmd.Process.Kill()
		return fmt.Errorf("load generator did not exit; killed it")
	}
}

// Command killfeed-bench measures killfeed against references run on the
// same machine in the same run, and prints a table (see BENCHMARKS.md):
//
//  1. Poll latency against a Go port of the seeds' algorithm;
//  2. produce-to-Subscribe latency against a raw franz-go consumer;
//  3. delivered events/s across many streams against the raw consumer;
//  4. memory per idle stream;
//  5. backfill rate of one client (gRPC and Connect JSON);
//  6. positions rebuild rate at start against a raw read of the topic;
//  7. a 1,000-system subscription against a 1-system one.
//
// Usage:
//
//	go run ./cmd/killfeed-bench            # full run, embedded broker, a few minutes
//	go run ./cmd/killfeed-bench --quick    # tiny sizes, seconds
//	go run ./cmd/killfeed-bench --brokers 127.0.0.1:9092   # against Apache Kafka
//
// The service runs in this process; stream clients and their raw-consumer
// reference run in a child process (this binary re-executed), so the
// service's memory and CPU are its own. Progress goes to standard error,
// the table to standard output.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/killfeed/killfeed/feedsvc"
	"github.com/killfeed/killfeed/internal/bench"
	"github.com/killfeed/killfeed/internal/broker"
	"github.com/killfeed/killfeed/offsets"
)

func main() {
	if os.Getenv(bench.RoleEnv) == "loadgen" {
		if err := bench.Serve(context.Background(), os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "killfeed-bench load generator:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "killfeed-bench:", err)
		os.Exit(1)
	}
}

// config is the command line.
type config struct {
	quick       bool
	brokers     []string
	only        map[int]bool
	markdown    bool
	cpuProfile  string
	memProfile  string
	sameProcess bool
	// Overrides of the mode's latency sizes (measurements 2 and 4).
	streams    []int
	rate       float64
	latencyFor time.Duration
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("killfeed-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c config
	var brokers, only string
	fs.BoolVar(&c.quick, "quick", false, "tiny sizes: checks that every measurement runs, in seconds; the numbers mean little")
	fs.StringVar(&brokers, "brokers", "", "comma-separated Kafka brokers (host:port) to run against; empty runs the embedded broker (kfake)")
	fs.StringVar(&only, "only", "", "comma-separated measurement numbers to run (1-7); empty runs all")
	fs.BoolVar(&c.markdown, "markdown", false, "print the table as Markdown")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of the service process to this file")
	fs.StringVar(&c.memProfile, "memprofile", "", "write a heap profile of the service process to this file while the most streams are open and idle (measurement 4)")
	fs.BoolVar(&c.sameProcess, "same-process", false, "run stream clients in this process instead of a child process (memory per stream then includes the clients)")
	var streams string
	fs.StringVar(&streams, "streams", "", "comma-separated stream counts for measurements 2 and 4 (default 1,100,10000; --quick 1,10,100)")
	fs.Float64Var(&c.rate, "rate", 0, "killmails/s produced while measuring latency (default 100)")
	fs.DurationVar(&c.latencyFor, "latency-for", 0, "how long each latency measurement produces (default 20s; --quick 2s)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: killfeed-bench [flags]\n\nMeasures killfeed against references run in the same process and run; see BENCHMARKS.md.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for b := range strings.SplitSeq(brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			c.brokers = append(c.brokers, b)
		}
	}
	for f := range strings.SplitSeq(streams, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return c, fmt.Errorf("--streams: %q is not a stream count", f)
		}
		c.streams = append(c.streams, n)
	}
	if c.rate < 0 || c.latencyFor < 0 {
		return c, fmt.Errorf("--rate and --latency-for must be positive")
	}
	for f := range strings.SplitSeq(only, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n > 7 {
			return c, fmt.Errorf("--only: %q is not a measurement number (1 to 7)", f)
		}
		if c.only == nil {
			c.only = map[int]bool{}
		}
		c.only[n] = true
	}
	return c, nil
}

// sizes are a mode's workload sizes.
type sizes struct {
	// Poll (1): events retained, systems they spread over, the systems a
	// client follows, and measuring time per variant and size.
	pollEvents  []int
	pollSystems int
	pollFollow  int
	pollBudget  time.Duration
	// Latency and memory (2, 4): concurrent streams, systems each follows,
	// produce rate and duration.
	latencyStreams []int
	latencyFollow  int
	latencyRate    float64
	latencyFor     time.Duration
	// Streams per HTTP/2 connection for the latency streams.
	perConn int
	// Backfill, throughput and filter cost (3, 5, 7): group A is
	// fillSystems systems of fillPerSystem events; group B one system of
	// filterEvents events; group C filterSystems systems sharing
	// filterEvents events.
	fillSystems   int
	fillPerSystem int
	filterEvents  int
	filterSystems int
	filterRounds  int
	// Measurement 7, live: filterStreams streams, filterRate killmails/s
	// for filterFor.
	filterStreams    int
	filterRate       float64
	filterFor        time.Duration
	filterLiveRounds int
	// rawReads is how many times the plain consumer reads the topic.
	rawReads int
	// Positions rebuild (6): clients × systems records, and runs.
	rebuildClients, rebuildSystems, rebuildRuns int
}

var fullSizes = sizes{
	pollEvents: []int{10_000, 100_000, 1_000_000}, pollSystems: 5000, pollFollow: 10, pollBudget: 2 * time.Second,
	latencyStreams: []int{1, 100, 10_000}, latencyFollow: 10, latencyRate: 100, latencyFor: 20 * time.Second, perConn: 100,
	fillSystems: 100, fillPerSystem: 1000, filterEvents: 100_000, filterSystems: 1000, filterRounds: 41, rawReads: 3,
	filterStreams: 50, filterRate: 400, filterFor: 4 * time.Second, filterLiveRounds: 3,
	rebuildClients: 10_000, rebuildSystems: 100, rebuildRuns: 3,
}

var quickSizes = sizes{
	pollEvents: []int{2_000, 20_000}, pollSystems: 5000, pollFollow: 10, pollBudget: 150 * time.Millisecond,
	latencyStreams: []int{1, 10, 100}, latencyFollow: 10, latencyRate: 100, latencyFor: 2 * time.Second, perConn: 100,
	fillSystems: 100, fillPerSystem: 20, filterEvents: 1000, filterSystems: 1000, filterRounds: 2, rawReads: 1,
	filterStreams: 5, filterRate: 200, filterFor: time.Second, filterLiveRounds: 1,
	rebuildClients: 200, rebuildSystems: 100, rebuildRuns: 1,
}

// runner holds what the measurements share.
type runner struct {
	cfg    config
	sz     sizes
	out    io.Writer // progress
	kafka  *bench.Kafka
	store  *offsets.Store
	load   *bench.LoadGen
	rows   []bench.Row
	nextID int64 // killmail ids, unique in the run
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	r := &runner{cfg: cfg, sz: fullSizes, out: stderr, nextID: 200_000_000}
	mode := "full"
	if cfg.quick {
		r.sz, mode = quickSizes, "quick"
	}
	if cfg.streams != nil {
		r.sz.latencyStreams = cfg.streams
	}
	if cfg.rate > 0 {
		r.sz.latencyRate = cfg.rate
	}
	if cfg.latencyFor > 0 {
		r.sz.latencyFor = cfg.latencyFor
	}
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return fmt.Errorf("creating CPU profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("starting CPU profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}

	began := time.Now()
	brokers, where := cfg.brokers, "Apache Kafka at "+strings.Join(cfg.brokers, ",")
	if len(brokers) == 0 {
		b, err := broker.Start(broker.Options{Listen: "127.0.0.1:0"})
		if err != nil {
			return err
		}
		defer b.Close()
		brokers, where = []string{b.Addr()}, "embedded broker (kfake) in the service process"
	}
	prefix := fmt.Sprintf("killfeed-bench-%d-", time.Now().UnixNano())
	r.kafka, err = bench.NewKafka(ctx, brokers, prefix)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := r.kafka.Close(cctx); err != nil {
			r.progress("cleaning up topics: %v", err)
		}
	}()
	offsetsTopic, err := r.kafka.CreateCompacted(ctx, "offsets")
	if err != nil {
		return err
	}
	r.store, err = offsets.Open(ctx, brokers, offsets.Options{Topic: offsetsTopic})
	if err != nil {
		return err
	}
	defer r.store.Close()
	r.load, err = bench.StartLoadGen(cfg.sameProcess)
	if err != nil {
		return err
	}
	defer func() {
		if err := r.load.Close(); err != nil {
			r.progress("%v", err)
		}
	}()
	clients := "stream clients in a child process"
	if cfg.sameProcess {
		clients = "stream clients in the service process"
	}
	machine := bench.Machine()
	r.progress("killfeed-bench, %s mode: %s; %s; %s", mode, machine, where, clients)

	steps := []struct {
		ids []int
		fn  func(context.Context) error
	}{
		{[]int{1}, r.measurePoll},
		{[]int{1}, r.measureReadPath},
		{[]int{6}, r.measureRebuild},
		{[]int{3, 5, 7}, r.measureBackfill},
		{[]int{2, 4, 7}, r.measureLive},
	}
	for _, s := range steps {
		if cfg.only != nil && !slices.ContainsFunc(s.ids, func(id int) bool { return cfg.only[id] }) {
			continue
		}
		if err := s.fn(ctx); err != nil {
			return err
		}
	}
	slices.SortStableFunc(r.rows, func(a, b bench.Row) int { return strings.Compare(a.ID, b.ID) })

	fmt.Fprintf(stdout, "killfeed-bench (%s mode), %s\n", mode, time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(stdout, "Machine: %s\n", machine)
	fmt.Fprintf(stdout, "Kafka: %s; %s; took %s\n\n", where, clients, time.Since(began).Round(time.Second))
	if cfg.markdown {
		return bench.WriteMarkdown(stdout, r.rows)
	}
	return bench.WriteText(stdout, r.rows)
}

// wants reports whether measurement id is to run.
func (r *runner) wants(id int) bool { return r.cfg.only == nil || r.cfg.only[id] }

func (r *runner) add(row bench.Row) { r.rows = append(r.rows, row) }

// progress prints a line on standard error.
func (r *runner) progress(format string, args ...any) {
	fmt.Fprintf(r.out, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// fillProgress returns a Fill progress callback printing what is done.
func (r *runner) fillProgress(what string, total int) func(int) {
	return func(done int) {
		r.progress("  %s: %s of %s records written (%d%%)", what, bench.FormatCount(int64(done)), bench.FormatCount(int64(total)), done*100/max(1, total))
	}
}

// ids reserves n killmail ids.
func (r *runner) ids(n int) int64 {
	first := r.nextID
	r.nextID += int64(n)
	return first
}

// served is a feed service on a topic, behind an HTTP server on a free
// loopback port.
type served struct {
	svc *feedsvc.Service
	srv *http.Server
	url string
}

// serve starts a feed service on topic (loading what it holds) and serves
// it over HTTP as killfeed serve does. maxPerSystem, if not 0, overrides
// MaxEventsPerSystem.
func (r *runner) serve(ctx context.Context, topic string, maxPerSystem int) (*served, error) {
	began := time.Now()
	svc, err := feedsvc.New(ctx, r.store, feedsvc.Options{
		Brokers:            r.kafka.Brokers,
		Topic:              topic,
		MaxEventsPerSystem: maxPerSystem,
		Logger:             slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		svc.Close()
		return nil, fmt.Errorf("listening: %w", err)
	}
	srv := feedsvc.NewHTTPServer("", svc.Handler())
	go func() { _ = srv.Serve(ln) }()
	r.progress("  service loaded %s in %s, serving on %s", topic, time.Since(began).Round(time.Millisecond), ln.Addr())
	return &served{svc: svc, srv: srv, url: "http://" + ln.Addr().String()}, nil
}

func (s *served) Close() {
	// Close ends the streams first, so the server need not wait for them.
	s.svc.Close()
	_ = s.srv.Close()
}

// met says whether a target was reached.
func met(ok bool) string {
	if ok {
		return "yes"
	}
	return "NO"
}

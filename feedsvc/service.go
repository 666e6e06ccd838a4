package feedsvc

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/killfeed/killfeed/offsets"
)

// Options configures a Service. The zero value of each field means the
// default noted beside it.
type Options struct {
	// Brokers are the seed brokers of the Kafka cluster. Required.
	Brokers []string
	// KafkaOpts are extra franz-go options (TLS, SASL, ...).
	KafkaOpts []kgo.Opt
	// Topic is the killmails topic. Default "killmails". It must exist.
	Topic string
	// MaxEventsPerSystem bounds memory: at most this many events per system
	// (per partition) are held; older ones are read from Kafka on demand.
	// Default 10000.
	MaxEventsPerSystem int
	// MaxSystemsPerRequest bounds system_ids in a request. Default 1000.
	MaxSystemsPerRequest int
	// DefaultLimit is the Poll limit when a request gives none. Default 500.
	DefaultLimit int
	// MaxLimit is the largest Poll limit accepted. Default 10000.
	MaxLimit int
	// MaxResponseBytes bounds the killmail JSON in one Poll response (at
	// least one event is always returned), so responses stay under common
	// client message limits (gRPC's 4 MiB). Default 3 MiB.
	MaxResponseBytes int
	// SyncPositions makes every request first catch up with positions
	// committed by other replicas, so a client may alternate between
	// replicas. Costs one ListOffsets round trip per request; not needed
	// with a single replica. Default false.
	SyncPositions bool
	// TrimConsumed deletes (Kafka DeleteRecords) records every client with
	// a position on a partition has consumed, like the seeds' min-offset GC.
	// Default false: Kafka retention alone removes events.
	TrimConsumed bool
	// MaintainEvery is how often log start offsets are refreshed (and
	// consumed records trimmed). Default 30s.
	MaintainEvery time.Duration
	// MaxRequestBytes bounds a request body. Default 1 MiB.
	MaxRequestBytes int
	// Keys, when set, turns authentication on: every request needs a
	// bearer API key, and a key may only act for client ids starting with
	// its prefix. Default nil: no authentication.
	Keys *Keys
	// RequestsPerSecond and RequestBurst bound each caller's request rate
	// (a caller is an API key, or an IP address without auth). Default 0:
	// no limit.
	RequestsPerSecond float64
	RequestBurst      int
	// MaxStreamsPerKey and MaxStreamsPerIP bound open Subscribe streams.
	// Default 0: no limit.
	MaxStreamsPerKey int
	MaxStreamsPerIP  int
	// Registerer receives the service's Prometheus metrics. Default nil:
	// metrics are kept but not exported.
	Registerer prometheus.Registerer
	// Heartbeat is how often an idle Subscribe stream gets a heartbeat,
	// unless the request asks otherwise. Default 15s.
	Heartbeat time.Duration
	// Logger receives lifecycle lines. Default: discard.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Topic == "" {
		o.Topic = "killmails"
	}
	if o.MaxEventsPerSystem == 0 {
		o.MaxEventsPerSystem = 10000
	}
	if o.MaxSystemsPerRequest == 0 {
		o.MaxSystemsPerRequest = 1000
	}
	if o.DefaultLimit == 0 {
		o.DefaultLimit = 500
	}
	if o.MaxLimit == 0 {
		o.MaxLimit = 10000
	}
	if o.MaxResponseBytes == 0 {
		o.MaxResponseBytes = 3 << 20
	}
	if o.MaintainEvery == 0 {
		o.MaintainEvery = 30 * time.Second
	}
	if o.MaxRequestBytes == 0 {
		o.MaxRequestBytes = 1 << 20
	}
	if o.RequestBurst == 0 {
		o.RequestBurst = max(1, int(2*o.RequestsPerSecond))
	}
	if o.Heartbeat == 0 {
		o.Heartbeat = 15 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Service is the feed service. Create it with New; serve Handler.
type Service struct {
	opts    Options
	log     *slog.Logger
	store   *offsets.Store
	mem     *memory
	tail    *tail
	locks   clientLocks
	lookups positionLookups
	streams *registry
	limits  *limits
	metrics *metrics
	// draining is set when shutdown begins: readiness fails and new streams
	// are refused.
	draining  atomic.Bool
	cancel    context.CancelFunc
	closeOnce sync.Once
	done      sync.WaitGroup
}

// New starts the service: it loads what the killmails topic retains into
// memory (bounded by MaxEventsPerSystem) and returns once memory holds
// everything that was in the topic at the start, so no request sees a
// partial feed. Positions come from store, which the caller opened and
// closes.
func New(ctx context.Context, store *offsets.Store, opts Options) (*Service, error) {
	opts = opts.withDefaults()
	if len(opts.Brokers) == 0 {
		return nil, fmt.Errorf("feedsvc: no brokers given")
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(opts.Brokers...),
		kgo.ConsumeTopics(opts.Topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// Transactional producers' aborted records are never served.
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(250 * time.Millisecond),
		kgo.MetadataMaxAge(time.Minute),
	}, opts.KafkaOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("creating killmails consumer: %w", err)
	}
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(ctx, opts.Topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		cl.Close()
		return nil, fmt.Errorf("listing end offsets of %q (does the topic exist?): %w", opts.Topic, err)
	}
	s := &Service{
		opts:    opts,
		log:     opts.Logger,
		store:   store,
		mem:     newMemory(opts.MaxEventsPerSystem),
		streams: newRegistry(),
		limits:  newLimits(opts),
	}
	s.metrics = newMetrics(opts.Registerer, s)
	s.tail = &tail{svc: s, cl: cl, adm: adm, loaded: make(chan struct{})}
	// Know every partition and its log start before reading, so a
	// partition whose records retention deleted counts as read.
	if err := s.tail.refreshLogStarts(ctx); err != nil {
		cl.Close()
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.done.Add(2)
	go func() { defer s.done.Done(); s.tail.run(runCtx, ends) }()

	began := time.Now()
	select {
	case <-s.tail.loaded:
	case <-ctx.Done():
		s.Close()
		return nil, fmt.Errorf("loading killmails topic %q: %w", opts.Topic, ctx.Err())
	}
	if err := s.tail.refreshLogStarts(ctx); err != nil {
		s.Close()
		return nil, err
	}
	go func() { defer s.done.Done(); s.tail.maintain(runCtx, opts.MaintainEvery) }()
	events, systems := s.mem.stats()
	s.log.Info("killmails loaded", "topic", opts.Topic, "events", events, "systems", systems,
		"skipped", s.tail.skipped.Load(), "took", time.Since(began).Round(time.Millisecond))
	return s, nil
}

// Close stops the service's background work. Streams end; the positions
// store is the caller's to close.
func (s *Service) Close() {
	s.closeOnce.Do(func() {
		s.Drain()
		s.cancel()
		s.done.Wait()
		s.tail.cl.Close()
	})
}

// Skipped is the number of killmails records skipped as unusable (bad key or
// value) since the service started.
func (s *Service) Skipped() int64 { return s.tail.skipped.Load() }

// RefreshRetention applies the partitions' current log starts to memory now,
// rather than at the next maintenance tick: what retention deleted leaves
// memory, and clients behind it get a loss report.
func (s *Service) RefreshRetention(ctx context.Context) error {
	return s.tail.refreshLogStarts(ctx)
}

// TrimConsumed runs the consumed-records trim now (see Options.TrimConsumed)
// and applies the new log starts to memory.
func (s *Service) TrimConsumed(ctx context.Context) error {
	if err := s.tail.trimConsumed(ctx); err != nil {
		return err
	}
	return s.tail.refreshLogStarts(ctx)
}

// clientLocks serialises each client's read-modify-commit, so two
// concurrent requests of one client never deliver the same event twice.
type clientLocks struct {
	mu sync.Mutex
	m  map[string]*clientLock
}

type clientLock struct {
	sync.Mutex
	refs int
}

// lock takes the client's lock; the caller releases it with unlock.
func (l *clientLocks) lock(id string) heldLock {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[string]*clientLock{}
	}
	cl := l.m[id]
	if cl == nil {
		cl = &clientLock{}
		l.m[id] = cl
	}
	cl.refs++
	l.mu.Unlock()
	cl.Lock()
	return heldLock{l, cl, id}
}

// heldLock is a client's lock, held. A value rather than a closure: every
// Poll takes one, and the closure was an allocation.
type heldLock struct {
	locks *clientLocks
	cl    *clientLock
	id    string
}

// unlock releases the lock, forgetting it once no one waits for it.
func (h heldLock) unlock() {
	h.cl.Unlock()
	h.locks.mu.Lock()
	if h.cl.refs--; h.cl.refs == 0 {
		delete(h.locks.m, h.id)
	}
	h.locks.mu.Unlock()
}

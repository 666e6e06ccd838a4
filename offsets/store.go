package offsets

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/killfeed/killfeed/internal/topics"
)

// commitTimeout bounds a commit whose caller set no deadline.
const commitTimeout = 15 * time.Second

// inFlightGrace is how long after its deadline a commit still waits for
// Kafka's answer about records franz-go cannot fail (see produceAndApply).
// franz-go fails the others at its next metadata refresh, within 5s.
const inFlightGrace = 7 * time.Second

// Position is a client's committed position in one solar system on one
// partition of the killmails topic.
type Position struct {
	SystemID  int64
	Partition int32
	// Offset is the next offset the client has not consumed: every record of
	// the system below it has been delivered (Kafka's convention).
	Offset int64
	// UpdatedAt is when the position was last committed.
	UpdatedAt time.Time
}

// Options configures a Store. The zero value of each field means the default
// noted beside it.
type Options struct {
	// Topic is the compacted topic holding positions. Default
	// "killfeed-offsets". It is created if missing; an existing topic that
	// is not compacted is refused.
	Topic string
	// ReplicationFactor used when creating the topic. Default -1 (the
	// broker's default).
	ReplicationFactor int16
	// Retention is how long a client may stay idle before its positions are
	// deleted, as Kafka's offsets.retention.minutes does for empty groups.
	// Default 7 days.
	Retention time.Duration
	// KafkaOpts are extra franz-go options (TLS, SASL, ...) for the store's
	// client. Seed brokers are given to Open.
	KafkaOpts []kgo.Opt
	// Logger receives lifecycle lines (rebuild progress, expiry). Default:
	// discard.
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	if o.Topic == "" {
		o.Topic = "killfeed-offsets"
	}
	if o.Retention == 0 {
		o.Retention = 7 * 24 * time.Hour
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// entry is one (client, system) record as last applied.
type entry struct {
	offsets map[int32]int64
	// single is set when offsets holds exactly one position, as nearly
	// every entry does (a system's killmails live on one partition), and
	// onePartition and oneOffset are that position: PositionsIn, on every
	// request, then reads it without iterating a map, which was most of
	// its cost. Kept inline, not as a *Position, so that applying a record
	// (a million of them at start-up) allocates nothing more.
	single       bool
	onePartition int32
	oneOffset    int64
	updated      time.Time
	// version is the offsets-topic offset of the record applied, so a
	// record applied directly after its produce is not undone when the tail
	// reads it (or an older one) again. A key always lands on the same
	// partition, so the offset alone orders its records.
	version int64
}

type clientState struct {
	systems map[int64]*entry
	// lastSeen is when this process last served the client; it keeps an
	// active client that commits nothing from expiring.
	lastSeen time.Time
	// newest is the latest commit time applied for the client, kept as
	// records are applied so that Touch, called on every request, does not
	// walk all of a client's systems.
	newest time.Time
}

// Store is the Kafka-backed position store. Create it with Open.
type Store struct {
	opts   Options
	cl     *kgo.Client
	adm    *kadm.Client
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.RWMutex
	clients  map[string]*clientState
	consumed map[int32]int64 // next offset to read, per offsets-topic partition
	advanced chan struct{}   // closed and replaced whenever consumed moves
	tailErr  error
}

// Open connects to the cluster, creates or checks the offsets topic, and
// rebuilds every client's positions from it before returning, so the first
// request served sees the positions of the previous run.
func Open(ctx context.Context, seeds []string, opts Options) (*Store, error) {
	opts = opts.withDefaults()
	admCl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(seeds...)}, opts.KafkaOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("creating offsets admin client: %w", err)
	}
	adm := kadm.NewClient(admCl)
	if err := topics.EnsureCompacted(ctx, adm, opts.Topic, opts.ReplicationFactor); err != nil {
		admCl.Close()
		return nil, err
	}
	ends, err := adm.ListEndOffsets(ctx, opts.Topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		admCl.Close()
		return nil, fmt.Errorf("listing end offsets of %q: %w", opts.Topic, err)
	}
	starts, err := adm.ListStartOffsets(ctx, opts.Topic)
	if err == nil {
		err = starts.Error()
	}
	admCl.Close()
	if err != nil {
		return nil, fmt.Errorf("listing start offsets of %q: %w", opts.Topic, err)
	}

	start := map[int32]kgo.Offset{}
	consumed := map[int32]int64{}
	starts.Each(func(o kadm.ListedOffset) {
		start[o.Partition] = kgo.NewOffset().AtStart()
		// Nothing below the log start exists, so a partition whose records
		// were all compacted away counts as read.
		consumed[o.Partition] = o.Offset
	})
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(seeds...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{opts.Topic: start}),
		kgo.FetchMaxWait(500 * time.Millisecond),
	}, opts.KafkaOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("creating offsets client: %w", err)
	}
	tailCtx, cancel := context.WithCancel(context.Background())
	s := &Store{
		opts:     opts,
		cl:       cl,
		adm:      kadm.NewClient(cl),
		cancel:   cancel,
		done:     make(chan struct{}),
		clients:  map[string]*clientState{},
		consumed: consumed,
		advanced: make(chan struct{}),
	}
	go s.tail(tailCtx)

	began := opts.Now()
	if err := s.waitFor(ctx, ends, s.logProgress(ends)); err != nil {
		s.Close()
		return nil, fmt.Errorf("rebuilding positions from %q: %w", opts.Topic, err)
	}
	n, c := s.counts()
	opts.Logger.Info("positions rebuilt", "topic", opts.Topic, "clients", c, "positions", n, "took", opts.Now().Sub(began).Round(time.Millisecond))
	go s.expireLoop(tailCtx)
	return s, nil
}

// Close stops the store's background work and closes its Kafka client.
func (s *Store) Close() {
	s.cancel()
	<-s.done
	s.cl.Close()
}

// Topic is the offsets topic's name.
func (s *Store) Topic() string { return s.opts.Topic }

// Positions returns a copy of a client's positions, ordered by system and
// partition. A client never seen has none.
func (s *Store) Positions(clientID string) []Position {
	s.mu.RLock()
	defer s.mu.RUnlock()
	c := s.clients[clientID]
	if c == nil {
		return nil
	}
	var out []Position
	for _, sys := range slices.Sorted(maps.Keys(c.systems)) {
		e := c.systems[sys]
		if e.deleted() {
			continue
		}
		for _, p := range slices.Sorted(maps.Keys(e.offsets)) {
			out = append(out, Position{SystemID: sys, Partition: p, Offset: e.offsets[p], UpdatedAt: e.updated})
		}
	}
	return out
}

// PositionsIn returns a client's positions in the given systems, in no
// particular order. Unlike Positions it neither copies nor sorts the
// client's other systems, so it costs what is asked for: feedsvc calls it on
// every read, for clients that may follow a thousand systems.
func (s *Store) PositionsIn(clientID string, systems []int64) []Position {
	return s.AppendPositionsIn(nil, clientID, systems)
}

// AppendPositionsIn appends to dst what PositionsIn returns, and returns
// the extended slice. A caller reusing dst from one read to the next
// allocates nothing: a caught-up Poll is mostly this lookup, and its slice
// was a sixth of the bytes a Poll allocated.
func (s *Store) AppendPositionsIn(dst []Position, clientID string, systems []int64) []Position {
	s.mu.RLock()
	defer s.mu.RUnlock()
	c := s.clients[clientID]
	if c == nil {
		return dst
	}
	if dst == nil {
		// Nearly every system lives on one partition: one allocation, not
		// a growing slice.
		dst = make([]Position, 0, len(systems))
	}
	for _, sys := range systems {
		e := c.systems[sys]
		if e == nil || e.deleted() {
			continue
		}
		if e.single {
			dst = append(dst, Position{SystemID: sys, Partition: e.onePartition, Offset: e.oneOffset, UpdatedAt: e.updated})
			continue
		}
		for p, o := range e.offsets {
			dst = append(dst, Position{SystemID: sys, Partition: p, Offset: o, UpdatedAt: e.updated})
		}
	}
	return dst
}

// Commit durably sets the given positions of a client, leaving its other
// positions as they are. It returns once Kafka has acknowledged every record;
// the new positions are visible to Positions from then on.
func (s *Store) Commit(ctx context.Context, clientID string, ps []Position) error {
	if len(ps) == 0 {
		return nil
	}
	// Refuse what the store could not read back (see parseKey, decodeValue):
	// it would be acknowledged, then skipped.
	if clientID == "" {
		return errors.New("committing positions: empty client id")
	}
	for _, p := range ps {
		if p.SystemID <= 0 || p.Partition < 0 || p.Offset < 0 {
			return fmt.Errorf("committing positions of client %s: invalid position (system %d, partition %d, offset %d)", clientID, p.SystemID, p.Partition, p.Offset)
		}
	}
	now := s.opts.Now()
	bySystem := map[int64]map[int32]int64{}
	s.mu.RLock()
	for _, p := range ps {
		m := bySystem[p.SystemID]
		if m == nil {
			m = map[int32]int64{}
			if c := s.clients[clientID]; c != nil {
				if e := c.systems[p.SystemID]; e != nil {
					maps.Copy(m, e.offsets)
				}
			}
			bySystem[p.SystemID] = m
		}
		m[p.Partition] = p.Offset
	}
	s.mu.RUnlock()

	recs := make([]*kgo.Record, 0, len(bySystem))
	for sys, m := range bySystem {
		recs = append(recs, &kgo.Record{Topic: s.opts.Topic, Key: recordKey(clientID, sys), Value: encodeValue(m, now)})
	}
	return s.produceAndApply(ctx, recs, "committing positions of client "+clientID)
}

// DeleteClient durably removes every position of a client (tombstones).
func (s *Store) DeleteClient(ctx context.Context, clientID string) error {
	s.mu.RLock()
	var recs []*kgo.Record
	if c := s.clients[clientID]; c != nil {
		for sys := range c.systems {
			recs = append(recs, &kgo.Record{Topic: s.opts.Topic, Key: recordKey(clientID, sys)})
		}
	}
	s.mu.RUnlock()
	if len(recs) == 0 {
		return nil
	}
	return s.produceAndApply(ctx, recs, "deleting client "+clientID)
}

func (s *Store) produceAndApply(ctx context.Context, recs []*kgo.Record, what string) error {
	// A cancelled record fails every record queued behind it on its
	// partition (an idempotent producer cannot skip a sequence number), so
	// one caller hanging up would fail other clients' commits. Records are
	// therefore produced under a context that outlives the caller's, bounded
	// by the caller's deadline or commitTimeout.
	deadline, hasDeadline := ctx.Deadline()
	if !hasDeadline {
		deadline = time.Now().Add(commitTimeout)
	}
	pctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
	defer cancel()
	// ProduceSync alone may not return by the deadline: franz-go never
	// fails an idempotent record that is in flight (sent, no answer yet, as
	// when the broker stops mid-request), since a retry could then write it
	// twice, so during a Kafka outage it would block until Kafka is back, and
	// with it the client's requests (feedsvc holds the client's lock while it
	// commits). Give up waiting a little after the deadline, which leaves
	// franz-go time to fail the records it can (then nothing is written, as
	// before). A record still in flight may be written later; the tail then
	// applies it, as it does the records of a partly failed commit.
	done := make(chan kgo.ProduceResults, 1)
	go func() { done <- s.cl.ProduceSync(pctx, recs...) }()
	wait := time.NewTimer(time.Until(deadline) + inFlightGrace)
	defer wait.Stop()
	var results kgo.ProduceResults
	select {
	case results = <-done:
	case <-wait.C:
		return fmt.Errorf("%s: Kafka did not answer in time; it may still apply the commit", what)
	}
	if err := results.FirstErr(); err != nil && !hasDeadline && errors.Is(err, context.DeadlineExceeded) {
		// commitTimeout passed, not a deadline of the caller's: Kafka is
		// unavailable (not wrapped, so feedsvc does not answer
		// deadline_exceeded to a client that set no deadline).
		return fmt.Errorf("%s: Kafka did not acknowledge it within %s: %v", what, commitTimeout, err)
	}
	if err := results.FirstErr(); err != nil {
		// Records that did succeed are applied by the tail; the caller
		// retries the whole commit, which is idempotent.
		return fmt.Errorf("%s: %w", what, err)
	}
	s.mu.Lock()
	for _, r := range results {
		s.applyLocked(r.Record)
	}
	s.mu.Unlock()
	return nil
}

// Touch notes that a client is active. A client that only reads (and so
// commits nothing) for longer than half the retention has its positions
// rewritten, so neither a restart nor another replica's expiry forgets it.
func (s *Store) Touch(ctx context.Context, clientID string) error {
	now := s.opts.Now()
	s.mu.Lock()
	c := s.clients[clientID]
	if c == nil {
		s.mu.Unlock()
		return nil
	}
	c.lastSeen = now
	var ps []Position
	if now.Sub(c.newest) > s.opts.Retention/2 {
		for sys, e := range c.systems {
			for p, o := range e.offsets {
				ps = append(ps, Position{SystemID: sys, Partition: p, Offset: o})
			}
		}
	}
	s.mu.Unlock()
	return s.Commit(ctx, clientID, ps)
}

func (c *clientState) newestUpdate() time.Time {
	var t time.Time
	for _, e := range c.systems {
		if e.updated.After(t) {
			t = e.updated
		}
	}
	return t
}

// Sync waits until every position committed to the topic before the call
// (by this process or any other replica) is visible to Positions. Call it
// before serving a client when several replicas share the cluster.
func (s *Store) Sync(ctx context.Context) error {
	ends, err := s.adm.ListEndOffsets(ctx, s.opts.Topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("listing end offsets of %q: %w", s.opts.Topic, err)
	}
	return s.waitFor(ctx, ends, nil)
}

// waitFor blocks until the tail has consumed up to ends, calling progress
// (if any) every few seconds.
func (s *Store) waitFor(ctx context.Context, ends kadm.ListedOffsets, progress func()) error {
	tick := time.NewTicker(3 * time.Second)
	defer tick.Stop()
	for {
		s.mu.RLock()
		caught, wake, tailErr := true, s.advanced, s.tailErr
		ends.Each(func(o kadm.ListedOffset) {
			if s.consumed[o.Partition] < o.Offset {
				caught = false
			}
		})
		s.mu.RUnlock()
		if caught {
			return nil
		}
		if tailErr != nil {
			return tailErr
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wake:
		case <-tick.C:
			if progress != nil {
				progress()
			}
		}
	}
}

func (s *Store) logProgress(ends kadm.ListedOffsets) func() {
	var total int64
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	return func() {
		s.mu.RLock()
		var done int64
		for _, o := range s.consumed {
			done += o
		}
		s.mu.RUnlock()
		s.opts.Logger.Info("rebuilding positions", "topic", s.opts.Topic, "records_read", done, "records_total", total)
	}
}

func (s *Store) counts() (positions, clients int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, c := range s.clients {
		for _, e := range c.systems {
			if !e.deleted() {
				positions++
			}
		}
	}
	return positions, len(s.clients)
}

// tail applies every record of the offsets topic, for ever: first the
// rebuild, then other replicas' commits.
func (s *Store) tail(ctx context.Context) {
	defer close(s.done)
	for {
		fs := s.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return
		}
		fs.EachError(func(t string, p int32, err error) {
			if errors.Is(err, context.Canceled) {
				return
			}
			s.opts.Logger.Warn("reading offsets topic", "topic", t, "partition", p, "err", err)
		})
		s.mu.Lock()
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			for _, r := range p.Records {
				s.applyLocked(r)
			}
			if n := len(p.Records); n > 0 {
				s.consumed[p.Partition] = p.Records[n-1].Offset + 1
			}
		})
		close(s.advanced)
		s.advanced = make(chan struct{})
		s.mu.Unlock()
	}
}

// applyLocked applies one record unless a newer record of the same key was
// already applied. s.mu must be held.
func (s *Store) applyLocked(r *kgo.Record) {
	clientID, sys, err := parseKey(r.Key)
	if err != nil {
		s.opts.Logger.Warn("skipping offsets record", "offset", r.Offset, "err", err)
		return
	}
	c := s.clients[clientID]
	if e := c.entry(sys); e != nil && e.version >= r.Offset {
		return
	}
	if r.Value == nil {
		if c != nil {
			// Keep the tombstone's version until the tail has passed it, so
			// an older record read late cannot bring the position back.
			c.systems[sys] = &entry{version: r.Offset}
		}
		return
	}
	v, err := decodeValue(r.Value)
	if err != nil {
		s.opts.Logger.Warn("skipping offsets record", "offset", r.Offset, "key", string(r.Key), "err", err)
		return
	}
	if c == nil {
		c = &clientState{systems: map[int64]*entry{}}
		s.clients[clientID] = c
	}
	e := &entry{offsets: v.Offsets, updated: time.UnixMilli(v.UpdatedMS), version: r.Offset}
	if len(e.offsets) == 1 {
		for p, o := range e.offsets {
			e.single, e.onePartition, e.oneOffset = true, p, o
		}
	}
	c.systems[sys] = e
	if e.updated.After(c.newest) {
		c.newest = e.updated
	}
}

// deleted reports whether the entry is a tombstone kept for its version.
func (e *entry) deleted() bool { return e.offsets == nil }

func (c *clientState) entry(sys int64) *entry {
	if c == nil {
		return nil
	}
	return c.systems[sys]
}

// MinOffsets returns, per killmails partition, the lowest position any
// client holds there: every client has consumed everything of its systems
// below it. Partitions no client has a position on are absent. It drives the
// optional trim of consumed records.
func (s *Store) MinOffsets() map[int32]int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := map[int32]int64{}
	for _, c := range s.clients {
		for _, e := range c.systems {
			for p, o := range e.offsets {
				if cur, ok := out[p]; !ok || o < cur {
					out[p] = o
				}
			}
		}
	}
	return out
}

package producer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Defaults for Options.
const (
	DefaultTopic            = "killmails"
	DefaultDedupeWindow     = 1_000_000
	DefaultReread           = 50_000
	DefaultRereadTimeout    = 30 * time.Second
	DefaultMaxInFlight      = 10_000
	DefaultFlushTimeout     = 30 * time.Second
	DefaultProgressInterval = 5 * time.Second
	DefaultLogRejections    = 10
)

// Rejection reasons the producer adds to killmail.Reason and the sources'
// own (such as ReasonLineTooLong).
const (
	// ReasonTooLarge: the normalised killmail is larger than
	// Options.MaxValueBytes, so Kafka would refuse it.
	ReasonTooLarge = "too_large"
	// ReasonOther: Normalize failed without a *killmail.RejectError. It
	// should not happen; it is counted rather than lost.
	ReasonOther = "other"
)

// HeaderKillmailID is the record header carrying the killmail id in
// decimal, so the producer can read back which killmails a topic holds
// without parsing every value.
const HeaderKillmailID = "killmail_id"

// Options configures a Producer. The zero value of each field means the
// default given beside it.
type Options struct {
	// Topic is the killmails topic. It must exist. Default "killmails".
	Topic string

	// DedupeWindow is how many of the most recent killmail ids the
	// producer remembers to drop a killmail it has already written (sources
	// re-publish). About 40 bytes per id: 40 MB for the default 1,000,000,
	// which is weeks of EVE's kills. Negative disables deduplication.
	DedupeWindow int
	// Reread is how many records at the end of the topic, across its
	// partitions, are read back when the producer first runs, so that
	// deduplication survives a restart of the producer. Partitions share
	// it in proportion to their length. Default 50,000; negative disables.
	Reread int
	// RereadTimeout bounds reading back. When it passes, the producer goes
	// on with the ids it has, and logs a warning. Default 30s.
	RereadTimeout time.Duration

	// MaxInFlight bounds the killmails handed to the client but not yet
	// acknowledged, and so the memory a slow cluster can make the producer
	// hold. Default 10,000.
	MaxInFlight int
	// MaxValueBytes is the largest normalised killmail produced; a larger
	// one is rejected with ReasonTooLarge instead of failing the run.
	// Default: the client's ProducerBatchMaxBytes less 1 KiB for the record
	// and batch overhead (999 KB with franz-go's defaults).
	MaxValueBytes int
	// FlushTimeout bounds waiting for Kafka to acknowledge what was sent
	// when the source ends or ctx is done. Default 30s.
	FlushTimeout time.Duration

	// Logger gets progress lines, the first rejections and warnings.
	// Default: no logging.
	Logger *slog.Logger
	// ProgressInterval is how often Logger and Progress hear about a
	// running Run; runs shorter than it report nothing. Default 5s.
	ProgressInterval time.Duration
	// Progress, if set, is called with the counts so far every
	// ProgressInterval, from another goroutine.
	Progress func(Stats)
	// LogRejections is how many rejections are logged, with where and why;
	// later ones are only counted. Default 10; negative logs none.
	LogRejections int
}

// Stats counts what a Run did. When Run returns, Read = Produced + Rejected
// + Duplicates + Failed + Unconfirmed.
type Stats struct {
	// Read is the number of records the source delivered, including those
	// it reported as unreadable.
	Read int64
	// Produced is the number of killmails Kafka acknowledged.
	Produced int64
	// Bytes is the size of the produced values.
	Bytes int64
	// Rejected is the number of records not stored because they were not
	// usable killmails; RejectedBy breaks it down by reason.
	Rejected int64
	// RejectedBy counts rejections by reason: a killmail.Reason, a
	// source's reason such as ReasonLineTooLong, or ReasonTooLarge.
	RejectedBy map[string]int64
	// Rejections describes the first few rejections (Options.LogRejections).
	Rejections []Rejection
	// Duplicates is the number of killmails dropped because their id was
	// already produced.
	Duplicates int64
	// Failed is the number of killmails Kafka did not take after the
	// client's retries. Run returns an error when it is not zero.
	Failed int64
	// Unconfirmed is the number of killmails still unacknowledged when
	// FlushTimeout passed. Run returns an error when it is not zero.
	Unconfirmed int64
	// InFlight is the number of killmails sent but not yet acknowledged;
	// only progress reports see it above zero.
	InFlight int64
	// Reread is the number of killmail ids read back from the topic when
	// the producer first ran.
	Reread int64
	// Elapsed is the time since Run started.
	Elapsed time.Duration
}

// PerSecond returns the produced killmails per second of Elapsed.
func (s Stats) PerSecond() float64 { return perSecond(s.Produced, s.Elapsed) }

// perSecond is n per second of d, 0 before any time has passed.
func perSecond(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// Rejection describes one record that was not stored.
type Rejection struct {
	// Where the record came from, from the source's Locator, or "record N"
	// counting from 1.
	Where string
	// Reason classifies it, as in Stats.RejectedBy.
	Reason string
	// Err says what is wrong.
	Err error
}

// Producer writes killmails from a Source to the killmails topic. It is
// safe to call Run again after it returns (deduplication carries over), but
// not concurrently.
type Producer struct {
	cl   *kgo.Client
	opts Options
	ids  *idWindow // nil when deduplication is off

	runMu  sync.Mutex // held by Run
	reread bool       // the topic's tail has been read back
	nRead  int64      // ids read back
}

// New returns a Producer writing with cl. cl must be a producing client with
// franz-go's defaults for what matters to killfeed, and New refuses one
// without them: idempotent writes and acks from all in-sync replicas (so a
// retry never writes a killmail twice and an acknowledged one survives a
// broker loss), no transactional id, and no consuming of its own (the
// producer reads the topic's tail with a client derived from cl). Keep the
// default partitioner too: it puts keyed records where Kafka's murmur2
// partitioner does, which every consumer of the topic relies on.
//
// The caller keeps ownership of cl: New and Run do not close it.
func New(cl *kgo.Client, opts Options) (*Producer, error) {
	if err := checkClient(cl); err != nil {
		return nil, err
	}
	if opts.Topic == "" {
		opts.Topic = DefaultTopic
	}
	if opts.DedupeWindow == 0 {
		opts.DedupeWindow = DefaultDedupeWindow
	}
	if opts.Reread == 0 {
		opts.Reread = DefaultReread
	}
	if opts.RereadTimeout <= 0 {
		opts.RereadTimeout = DefaultRereadTimeout
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = DefaultMaxInFlight
	}
	if opts.MaxValueBytes <= 0 {
		opts.MaxValueBytes = defaultMaxValueBytes(cl)
	}
	if opts.FlushTimeout <= 0 {
		opts.FlushTimeout = DefaultFlushTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ProgressInterval <= 0 {
		opts.ProgressInterval = DefaultProgressInterval
	}
	if opts.LogRejections == 0 {
		opts.LogRejections = DefaultLogRejections
	}
	p := &Producer{cl: cl, opts: opts}
	if opts.DedupeWindow > 0 {
		p.ids = newIDWindow(opts.DedupeWindow)
	}
	return p, nil
}

func checkClient(cl *kgo.Client) error {
	if cl == nil {
		return errors.New("producer: nil Kafka client")
	}
	if off, _ := cl.OptValue(kgo.DisableIdempotentWrite).(bool); off {
		return errors.New("producer: the Kafka client has idempotent writes disabled; killfeed needs them so that a retried write cannot store a killmail twice")
	}
	if acks, ok := cl.OptValue(kgo.RequiredAcks).(kgo.Acks); ok && acks != kgo.AllISRAcks() {
		return errors.New("producer: the Kafka client does not require acks from all in-sync replicas (acks=all); killfeed needs them so that an acknowledged killmail survives losing a broker")
	}
	if vs := cl.OptValues(kgo.TransactionalID); len(vs) == 2 && vs[1] == true {
		return errors.New("producer: the Kafka client is transactional; pass a plain idempotent client")
	}
	consuming := false
	if g, _ := cl.OptValue(kgo.ConsumerGroup).(string); g != "" {
		consuming = true
	}
	if g, _ := cl.OptValue(kgo.ShareGroup).(string); g != "" {
		consuming = true
	}
	if ts, ok := cl.OptValue(kgo.ConsumeTopics).(map[string]*regexp.Regexp); ok && len(ts) > 0 {
		consuming = true
	}
	if ps, _ := cl.OptValue(kgo.ConsumePartitions).(map[string]map[int32]kgo.Offset); len(ps) > 0 {
		consuming = true
	}
	if consuming {
		return errors.New("producer: the Kafka client consumes topics; pass a client used only for producing")
	}
	return nil
}

// counters are a Run's counts, shared with the promise callbacks and the
// progress reporter.
type counters struct {
	read, produced, bytes, rejected, duplicates, failed, inFlight atomic.Int64

	mu         sync.Mutex
	rejectedBy map[string]int64
	rejections []Rejection
	firstErr   error // first produce failure
}

func (c *counters) snapshot(start time.Time, reread int64) Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Stats{
		Read:       c.read.Load(),
		Produced:   c.produced.Load(),
		Bytes:      c.bytes.Load(),
		Rejected:   c.rejected.Load(),
		RejectedBy: maps.Clone(c.rejectedBy),
		Rejections: append([]Rejection(nil), c.rejections...),
		Duplicates: c.duplicates.Load(),
		Failed:     c.failed.Load(),
		InFlight:   c.inFlight.Load(),
		Reread:     reread,
		Elapsed:    time.Since(start),
	}
}

func (c *counters) failure() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.firstErr
}

// Run reads src until it returns io.EOF or ctx is done, and produces every
// usable, new killmail: key killmail.Key(system id), value the normalised
// JSON, header HeaderKillmailID. Records keep the order the source gave
// them within each solar system. Unusable records are counted by reason in
// Stats and the first few logged; repeated killmail ids are counted and
// dropped.
//
// On its first call Run reads back the tail of the topic (Options.Reread)
// so that killmails produced before a restart are recognised.
//
// Run returns once everything it sent is acknowledged or FlushTimeout has
// passed. It returns an error if a killmail could not be stored (Stats.Failed
// or Stats.Unconfirmed not zero), if the source failed, or, when nothing
// else went wrong, ctx's error if ctx ended the run before the source did.
// After a produce failure Run stops reading: it does not skip killmails.
func (p *Producer) Run(ctx context.Context, src Source) (Stats, error) {
	if !p.runMu.TryLock() {
		return Stats{}, errors.New("producer: Run called while another Run is in progress")
	}
	defer p.runMu.Unlock()
	start := time.Now()

	if !p.reread && p.ids != nil && p.opts.Reread > 0 {
		n, err := p.readBack(ctx)
		if err != nil {
			return Stats{Elapsed: time.Since(start)}, err
		}
		p.reread, p.nRead = true, n
	}

	c := &counters{rejectedBy: map[string]int64{}}
	stopProgress := p.startProgress(c, start)
	defer stopProgress()

	// Records must outlive ctx: once a killmail is handed to the client it
	// is flushed even if the run is being stopped, so stopping loses
	// nothing.
	produceCtx := context.WithoutCancel(ctx)
	slots := make(chan struct{}, p.opts.MaxInFlight)
	locator, _ := src.(Locator)

	var srcErr error
	var unsent int64 // read and new, but never handed to the client
	for ctx.Err() == nil && c.failure() == nil {
		raw, err := src.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil && ctx.Err() != nil {
			break
		}
		if err != nil {
			var rerr *RecordError
			if errors.As(err, &rerr) {
				c.read.Add(1)
				p.reject(c, rerr.Where, rerr.Reason, rerr.Err)
				continue
			}
			srcErr = fmt.Errorf("reading killmail source: %w", err)
			break
		}
		n := c.read.Add(1)
		where := func() string {
			if locator != nil {
				return locator.Location()
			}
			return "record " + strconv.FormatInt(n, 10)
		}

		km, reason, err := normalizeRecord(raw, p.opts.MaxValueBytes)
		if err != nil {
			p.reject(c, where(), reason, err)
			continue
		}
		if p.ids != nil && !p.ids.add(km.ID) {
			c.duplicates.Add(1)
			continue
		}

		if !p.acquire(ctx, slots) {
			// Kafka is not taking records, and the run is being stopped.
			unsent++
			if p.ids != nil {
				p.ids.remove(km.ID)
			}
			continue
		}
		c.inFlight.Add(1)
		rec := newRecord(p.opts.Topic, km)
		id, size := km.ID, int64(len(km.JSON))
		p.cl.Produce(produceCtx, rec, func(r *kgo.Record, err error) {
			defer func() { <-slots }()
			c.inFlight.Add(-1)
			if err == nil {
				c.produced.Add(1)
				c.bytes.Add(size)
				return
			}
			c.failed.Add(1)
			if p.ids != nil {
				// Let a later run produce it when a source delivers it again.
				p.ids.remove(id)
			}
			c.mu.Lock()
			if c.firstErr == nil {
				c.firstErr = fmt.Errorf("producing killmail %d (solar system %s) to topic %q: %w", id, r.Key, r.Topic, err)
			}
			c.mu.Unlock()
		})
	}

	unconfirmed, flushErr := p.flush(ctx, slots)
	stopProgress()
	stats := c.snapshot(start, p.nRead)
	stats.Unconfirmed = unconfirmed + unsent
	stats.InFlight = 0
	if flushErr == nil && unsent > 0 {
		flushErr = fmt.Errorf("producing to topic %q: %d killmails were not sent: Kafka took no more records before the run was stopped", p.opts.Topic, unsent)
	}

	switch {
	case stats.Failed > 0:
		return stats, fmt.Errorf("%d killmails were not stored; first: %w", stats.Failed, c.failure())
	case flushErr != nil:
		return stats, flushErr
	case srcErr != nil:
		return stats, srcErr
	}
	return stats, ctx.Err()
}

// acquire takes an in-flight slot. When ctx is done it still waits up to
// FlushTimeout, so that a killmail already read is produced rather than
// dropped by stopping; it returns false if no slot came free in that time.
func (p *Producer) acquire(ctx context.Context, slots chan struct{}) bool {
	select {
	case slots <- struct{}{}:
		return true
	case <-ctx.Done():
	}
	t := time.NewTimer(p.opts.FlushTimeout)
	defer t.Stop()
	select {
	case slots <- struct{}{}:
		return true
	case <-t.C:
		return false
	}
}

// flush waits until every record Run handed to the client has its promise
// called, or FlushTimeout passes, and returns how many were left waiting.
func (p *Producer) flush(ctx context.Context, slots chan struct{}) (int64, error) {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.opts.FlushTimeout)
	defer cancel()
	err := p.cl.Flush(fctx)
	// Flush covers the whole client; holding every slot proves that each of
	// this run's promises has finished updating the counts.
	for held := 0; held < cap(slots); held++ {
		select {
		case slots <- struct{}{}:
		case <-fctx.Done():
			left := int64(cap(slots) - held)
			return left, fmt.Errorf("flushing to topic %q: %d killmails not acknowledged by Kafka within %v: %w",
				p.opts.Topic, left, p.opts.FlushTimeout, fctx.Err())
		}
	}
	if err != nil {
		return 0, fmt.Errorf("flushing to topic %q: %w", p.opts.Topic, err)
	}
	return 0, nil
}

func (p *Producer) reject(c *counters, where, reason string, err error) {
	n := c.rejected.Add(1)
	c.mu.Lock()
	c.rejectedBy[reason]++
	if int64(len(c.rejections)) < int64(p.opts.LogRejections) {
		c.rejections = append(c.rejections, Rejection{Where: where, Reason: reason, Err: err})
	}
	c.mu.Unlock()
	logRejection(p.opts.Logger, n, int64(p.opts.LogRejections), where, reason, err)
}

// startProgress reports the counts every ProgressInterval until the
// returned function is called (it may be called more than once).
func (p *Producer) startProgress(c *counters, start time.Time) func() {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(p.opts.ProgressInterval)
		defer t.Stop()
		last, lastAt := int64(0), start
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				s := c.snapshot(start, p.nRead)
				rate := float64(s.Produced-last) / now.Sub(lastAt).Seconds()
				last, lastAt = s.Produced, now
				p.opts.Logger.Info("produce progress",
					"topic", p.opts.Topic,
					"read", s.Read,
					"produced", s.Produced,
					"per_second", int64(rate),
					"rejected", s.Rejected,
					"duplicates", s.Duplicates,
					"in_flight", s.InFlight,
					"mb", s.Bytes>>20)
				if p.opts.Progress != nil {
					p.opts.Progress(s)
				}
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(done) })
		<-finished
	}
}

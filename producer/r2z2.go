package producer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Defaults for R2Z2Options.
const (
	DefaultR2Z2URL                 = "https://r2z2.zkillboard.com"
	DefaultR2Z2CursorTopic         = "killfeed-r2z2-cursor"
	DefaultR2Z2UserAgent           = "killfeed (+https://github.com/killfeed/killfeed)"
	DefaultR2Z2RequestInterval     = 100 * time.Millisecond
	DefaultR2Z2PollInterval        = 6 * time.Second
	DefaultR2Z2Backoff             = 5 * time.Second
	DefaultR2Z2MaxBackoff          = 5 * time.Minute
	DefaultR2Z2RateLimitBackoff    = time.Minute
	DefaultR2Z2MaxRateLimitBackoff = time.Hour
	DefaultR2Z2GapWait             = time.Minute
	DefaultR2Z2HTTPTimeout         = 30 * time.Second
	DefaultR2Z2BatchSize           = 500
	DefaultR2Z2BatchDelay          = time.Second
	DefaultR2Z2CommitTimeout       = 30 * time.Second
	DefaultR2Z2TransactionTimeout  = time.Minute
	DefaultR2Z2RestartBackoff      = time.Second
	DefaultR2Z2MaxRestartBackoff   = time.Minute
)

// r2z2BatchBytes bounds the killmail bytes of one transaction, so a backlog
// of unusually large killmails does not make one huge transaction.
const r2z2BatchBytes = 16 << 20

// R2Z2Options configures an R2Z2 ingester. The zero value of each field
// means the default given beside it; so does a negative wait, timeout or
// size where none is documented for it.
type R2Z2Options struct {
	// URL is R2Z2's base URL; files are read from URL/ephemeral/. It is
	// also the cursor's key, so it should be written the same way on
	// every start (a trailing slash is ignored). Default DefaultR2Z2URL.
	URL string
	// Topic is the killmails topic. It must exist. Default "killmails".
	Topic string
	// CursorTopic is the compacted topic holding the last ingested
	// sequence, under the key URL. It is created (one partition,
	// cleanup.policy=compact, no time bound) if missing. Two deployments
	// writing different killmails topics on one cluster need different
	// cursor topics; killfeed refuses to start on another topic's cursor.
	// Default DefaultR2Z2CursorTopic.
	CursorTopic string
	// Start is the first sequence to ingest when there is no cursor yet,
	// e.g. to backfill the hours R2Z2 still holds. Default 0: the
	// sequence R2Z2's sequence.json points at, i.e. live. Ignored (with a
	// warning) once a cursor exists.
	Start int64

	// UserAgent identifies killfeed to zKillboard. Default
	// DefaultR2Z2UserAgent.
	UserAgent string
	// Contact, e.g. an email address, is added to the User-Agent so that
	// zKillboard can reach the operator instead of blocking them. Default
	// none.
	Contact string
	// HTTPClient sends the requests. Default: a client with a 30s
	// timeout (DefaultR2Z2HTTPTimeout) and Go's default transport.
	HTTPClient *http.Client

	// RequestInterval is the least time between two requests. Default
	// 100ms (10 requests a second at most, under zKillboard's limit);
	// negative for none, which only tests should use.
	RequestInterval time.Duration
	// PollInterval is the wait after a 404, before asking for the same
	// sequence again. zKillboard asks for at least 6s. Default 6s.
	PollInterval time.Duration
	// Backoff is the first wait after a failed request (no answer, 5xx);
	// it doubles with each consecutive failure up to MaxBackoff. Defaults
	// 5s and 5m.
	Backoff, MaxBackoff time.Duration
	// RateLimitBackoff is the first wait after a 429 or 403 that carries
	// no Retry-After; it doubles up to MaxRateLimitBackoff. A Retry-After
	// is always honoured instead. Defaults 1m and 1h.
	RateLimitBackoff, MaxRateLimitBackoff time.Duration
	// GapWait is how long a sequence must stay missing (404) while
	// sequence.json points past it before it is skipped as a gap, with a
	// warning. Sequences missing right after it, up to where
	// sequence.json pointed, are skipped at once: that is a cursor older
	// than R2Z2's retention. Default 1m.
	GapWait time.Duration

	// BatchSize is the most killmails written in one transaction. Default
	// 500.
	BatchSize int
	// BatchDelay is the longest a killmail read from R2Z2 waits before
	// its transaction is committed while catching up; at the head of the
	// feed every batch is committed as soon as R2Z2 answers 404. Default
	// 1s.
	BatchDelay time.Duration
	// CommitTimeout bounds writing and committing one transaction, also
	// when stopping. Default 30s.
	CommitTimeout time.Duration
	// TransactionTimeout is Kafka's transaction.timeout.ms for the
	// transactional client: how long the broker lets a transaction of a
	// vanished ingester stay open. Default 1m.
	TransactionTimeout time.Duration
	// RestartBackoff is the first wait before starting over after a
	// Kafka failure; it doubles up to MaxRestartBackoff. Defaults 1s and
	// 1m.
	RestartBackoff, MaxRestartBackoff time.Duration

	// DedupeWindow, Reread and RereadTimeout are as in Options: killmail
	// ids remembered (R2Z2 re-publishes killmails at new sequences), and
	// records read back from the end of the topic at start so that a
	// re-published killmail is recognised across restarts. Defaults
	// 1,000,000, 50,000 and 30s; negative disables.
	DedupeWindow, Reread int
	RereadTimeout        time.Duration
	// MaxValueBytes is as in Options. Default: the client's
	// ProducerBatchMaxBytes less 1 KiB.
	MaxValueBytes int

	// Logger gets progress lines, the first rejections and warnings.
	// Default: no logging.
	Logger *slog.Logger
	// ProgressInterval is how often Logger and Progress hear about a
	// running Run, when something was read since. Default 5s.
	ProgressInterval time.Duration
	// Progress, if set, is called with the counts so far every
	// ProgressInterval, from another goroutine.
	Progress func(R2Z2Stats)
	// LogRejections is how many rejections are logged. Default 10;
	// negative logs none.
	LogRejections int

	// Now and Sleep are the clock R2Z2 requests are paced by: every wait
	// between requests (RequestInterval, PollInterval, back-offs) goes
	// through Sleep, which must return ctx's error early when ctx is
	// done. Tests replace them to check waits without waiting. Defaults
	// time.Now and a timer.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
}

// R2Z2Stats counts what a Run did. Counts of files include files read
// again after a restart of the Kafka side.
type R2Z2Stats struct {
	// Fetched is the number of killmail files read from R2Z2.
	Fetched int64
	// Produced is the number of killmails committed to the topic.
	Produced int64
	// Bytes is the size of the produced values.
	Bytes int64
	// Rejected is the number of files not stored because they were not
	// usable killmails; RejectedBy breaks it down by reason.
	Rejected   int64
	RejectedBy map[string]int64
	// Rejections describes the first few (R2Z2Options.LogRejections).
	Rejections []Rejection
	// Duplicates is the number of files holding a killmail already
	// stored: R2Z2 re-publishes killmails.
	Duplicates int64
	// Missing is the number of sequences skipped because R2Z2 does not
	// have them (see R2Z2Options.GapWait).
	Missing int64
	// Commits is the number of transactions committed.
	Commits int64
	// Restarts is the number of times the Kafka side started over from
	// the committed cursor after a failure.
	Restarts int64
	// Cursor is the last committed sequence; 0 before the first commit.
	Cursor int64
	// Reread is the number of killmail ids read back from the topic.
	Reread int64
	// Elapsed is the time since Run started.
	Elapsed time.Duration
}

// PerSecond returns the produced killmails per second of Elapsed.
func (s R2Z2Stats) PerSecond() float64 { return perSecond(s.Produced, s.Elapsed) }

// R2Z2 ingests zKillboard's R2Z2 feed into the killmails topic exactly
// once: every killmail in the feed is stored, none twice, whenever and
// however the process stops.
//
// It reads the files in sequence order and writes them in batches, each
// batch in one Kafka transaction together with a cursor record holding the
// batch's last sequence. On start it fences any earlier ingester of the same
// cursor (a transactional id derived from the cursor), reads the cursor with
// read_committed and continues after it: a killmail is in the topic if and
// only if the cursor covers it. A killmail R2Z2 re-publishes at a newer
// sequence is dropped by killmail id, across restarts too (the recent tail
// of the topic is read back on start).
//
// R2Z2 is treated politely: see R2Z2Options for the pacing and back-off.
type R2Z2 struct {
	base  *kgo.Client
	opts  R2Z2Options
	key   string // the cursor key: the base URL
	txnID string
	feed  *r2z2Feed

	runMu sync.Mutex // held by Run; guards the fields below
	ids   *idWindow  // nil when deduplication is off; rebuilt by each session
	// start is where ingestion began when there was no cursor (0 until
	// then), so that a restart after the first cursor failed to commit
	// continues there rather than at a newer head.
	start int64
}

// NewR2Z2 returns an ingester writing through clients made from cl's
// options (brokers, TLS, SASL). cl must meet New's requirements; the caller
// keeps ownership of it.
func NewR2Z2(cl *kgo.Client, opts R2Z2Options) (*R2Z2, error) {
	if err := checkClient(cl); err != nil {
		return nil, err
	}
	if opts.URL == "" {
		opts.URL = DefaultR2Z2URL
	}
	base := strings.TrimRight(opts.URL, "/")
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("producer: R2Z2 URL %q is not an http(s) base URL such as %s", opts.URL, DefaultR2Z2URL)
	}
	if opts.Start < 0 {
		return nil, fmt.Errorf("producer: R2Z2 start sequence %d is negative", opts.Start)
	}
	if opts.UserAgent == "" {
		opts.UserAgent = DefaultR2Z2UserAgent
	}
	if !printable(opts.UserAgent) || !printable(opts.Contact) {
		return nil, errors.New("producer: the R2Z2 User-Agent and contact must be printable ASCII")
	}
	setDefault(&opts.Topic, DefaultTopic)
	setDefault(&opts.CursorTopic, DefaultR2Z2CursorTopic)
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: DefaultR2Z2HTTPTimeout}
	}
	setDefault(&opts.RequestInterval, DefaultR2Z2RequestInterval)
	positive(&opts.PollInterval, DefaultR2Z2PollInterval)
	positive(&opts.Backoff, DefaultR2Z2Backoff)
	positive(&opts.MaxBackoff, DefaultR2Z2MaxBackoff)
	positive(&opts.RateLimitBackoff, DefaultR2Z2RateLimitBackoff)
	positive(&opts.MaxRateLimitBackoff, DefaultR2Z2MaxRateLimitBackoff)
	positive(&opts.GapWait, DefaultR2Z2GapWait)
	positive(&opts.BatchSize, DefaultR2Z2BatchSize)
	positive(&opts.BatchDelay, DefaultR2Z2BatchDelay)
	positive(&opts.CommitTimeout, DefaultR2Z2CommitTimeout)
	positive(&opts.TransactionTimeout, DefaultR2Z2TransactionTimeout)
	positive(&opts.RestartBackoff, DefaultR2Z2RestartBackoff)
	positive(&opts.MaxRestartBackoff, DefaultR2Z2MaxRestartBackoff)
	setDefault(&opts.DedupeWindow, DefaultDedupeWindow)
	setDefault(&opts.Reread, DefaultReread)
	positive(&opts.RereadTimeout, DefaultRereadTimeout)
	if opts.MaxValueBytes <= 0 {
		opts.MaxValueBytes = defaultMaxValueBytes(cl)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	positive(&opts.ProgressInterval, DefaultProgressInterval)
	setDefault(&opts.LogRejections, DefaultLogRejections)
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Sleep == nil {
		opts.Sleep = sleepCtx
	}

	r := &R2Z2{
		base: cl,
		opts: opts,
		key:  base,
		// Derived from the cursor (its topic and key), so that every
		// ingester that would write this cursor shares it: starting one
		// fences the others.
		txnID: "killfeed-r2z2 " + opts.CursorTopic + " " + base,
	}
	ua := opts.UserAgent
	if opts.Contact != "" {
		if strings.HasSuffix(ua, ")") {
			ua = ua[:len(ua)-1] + "; " + opts.Contact + ")"
		} else {
			ua += " (" + opts.Contact + ")"
		}
	}
	r.feed = &r2z2Feed{base: base, ua: ua, hc: opts.HTTPClient, opts: &r.opts}
	return r, nil
}

// setDefault sets *v to def when it is the zero value.
func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// positive sets *v to def unless it is positive: a negative wait would
// make a busy loop of what should be a pause.
func positive[T int | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

func printable(s string) bool {
	for _, c := range s {
		if c < ' ' || c > '~' {
			return false
		}
	}
	return true
}

// UserAgent returns the User-Agent header sent to R2Z2.
func (r *R2Z2) UserAgent() string { return r.feed.ua }

// permanentError is a failure that starting over cannot fix, such as a
// missing topic or another deployment's cursor: Run returns it.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// r2z2Counters are a Run's counts, shared with the progress reporter.
type r2z2Counters struct {
	fetched, produced, bytes, rejected, duplicates, missing, commits, restarts, cursor, reread atomic.Int64

	mu         sync.Mutex
	rejectedBy map[string]int64
	rejections []Rejection
}

func (c *r2z2Counters) snapshot(elapsed time.Duration) R2Z2Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return R2Z2Stats{
		Fetched:    c.fetched.Load(),
		Produced:   c.produced.Load(),
		Bytes:      c.bytes.Load(),
		Rejected:   c.rejected.Load(),
		RejectedBy: maps.Clone(c.rejectedBy),
		Rejections: append([]Rejection(nil), c.rejections...),
		Duplicates: c.duplicates.Load(),
		Missing:    c.missing.Load(),
		Commits:    c.commits.Load(),
		Restarts:   c.restarts.Load(),
		Cursor:     c.cursor.Load(),
		Reread:     c.reread.Load(),
		Elapsed:    elapsed,
	}
}

// Run ingests R2Z2 until ctx is done, and then commits what it has read
// before returning ctx's error. A Kafka failure (a broker down, a
// transaction that could not commit) does not end it: it waits, with
// back-off, and starts over from the committed cursor. R2Z2 being
// unreachable does not end it either: it retries politely, for as long as
// it takes. Run returns early only for what starting over cannot fix: the
// killmails topic is missing, the cursor belongs to another killmails topic
// or is unreadable, or another ingester of the same cursor took over.
//
// Run must not be called concurrently with itself.
func (r *R2Z2) Run(ctx context.Context) (R2Z2Stats, error) {
	if !r.runMu.TryLock() {
		return R2Z2Stats{}, errors.New("producer: R2Z2.Run called while another Run is in progress")
	}
	defer r.runMu.Unlock()
	start := time.Now()
	c := &r2z2Counters{rejectedBy: map[string]int64{}}
	stopProgress := r.startProgress(c, start)
	defer stopProgress()

	var failures int
	for {
		ready := false
		err := r.session(ctx, c, func() { ready = true })
		if ready {
			failures = 0
		}
		stats := func() R2Z2Stats { stopProgress(); return c.snapshot(time.Since(start)) }
		if ctx.Err() != nil {
			if err != nil && !errorsIsCtx(err) {
				// Nothing is lost: what was read since the last commit is
				// read again on the next start.
				r.opts.Logger.Warn("R2Z2 ingestion could not commit its last batch while stopping; the next start reads it again", "error", err)
			}
			return stats(), ctx.Err()
		}
		var perm *permanentError
		if errors.As(err, &perm) || errors.Is(err, errFenced) {
			return stats(), err
		}
		failures++
		c.restarts.Add(1)
		wait := backoff(r.opts.RestartBackoff, r.opts.MaxRestartBackoff, failures)
		attrs := []any{"error", err, "retry_in", wait, "failures", failures}
		if failures == 1 {
			r.opts.Logger.Warn("R2Z2 ingestion failed; starting over from the committed cursor, logged once until it works again", attrs...)
		} else {
			r.opts.Logger.Debug("R2Z2 ingestion failed again", attrs...)
		}
		// Kafka's back-off is real time, not the R2Z2 pacing clock.
		if err := sleepCtx(ctx, wait); err != nil {
			return stats(), err
		}
	}
}

// session is one incarnation of the ingester: fence, read the cursor, then
// ingest until ctx is done or something fails. ready is called once it is
// ingesting.
func (r *R2Z2) session(ctx context.Context, c *r2z2Counters, ready func()) error {
	if err := r.checkTopics(ctx); err != nil {
		return err
	}
	// Refuse another deployment's cursor before fencing it: fencing would
	// stop that deployment's ingester.
	if err := r.checkCursorOwner(ctx); err != nil {
		return err
	}
	w, next, err := r.open(ctx, c)
	if err != nil {
		return err
	}
	defer w.close()
	c.cursor.Store(next - 1)
	ready()
	return r.ingest(ctx, w, next, c)
}

// openAttempts bounds how often open retries a cursor write that did not
// commit before the session fails.
const openAttempts = 3

// open fences earlier incarnations, reads the committed cursor, rebuilds
// the killmail ids from the topic, and writes the cursor it starts from in
// a first transaction. It returns the writer and the sequence to ingest
// next.
//
// The first transaction records the start at once when there was no
// cursor, so a restart before the first killmail continues there rather
// than at a newer head; with a cursor it rewrites the same value. It is
// read back, because franz-go (v1.22) can end a client's first transaction
// with an abort while reporting a commit; the client is then unusable (its
// sequence numbers are out of step), so open starts again with a new one.
// Later transactions of a client are not affected.
func (r *R2Z2) open(ctx context.Context, c *r2z2Counters) (*txWriter, int64, error) {
	o := &r.opts
	for attempt := 1; ; attempt++ {
		w, err := newTxWriter(ctx, r.base, r.txnID, o.TransactionTimeout)
		if err != nil {
			return nil, 0, err
		}
		next, how, err := r.startAt(ctx, c, attempt == 1)
		if err != nil {
			w.close()
			return nil, 0, err
		}
		rec := cursorRecord(o.CursorTopic, r.key, r2z2Cursor{Sequence: next - 1, Topic: o.Topic})
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.CommitTimeout)
		err = w.commit(cctx, nil, rec)
		cancel()
		if err != nil {
			w.close()
			return nil, 0, fmt.Errorf("writing the R2Z2 cursor: %w", err)
		}
		// Kafka answers EndTxn before the commit markers are written:
		// wait until the transaction is decided for readers, then look.
		if err := waitStable(ctx, r.base, rec, o.CommitTimeout); err != nil {
			w.close()
			return nil, 0, err
		}
		stored, found, err := readCursor(ctx, r.base, o.CursorTopic, r.key)
		if err != nil {
			w.close()
			return nil, 0, err
		}
		if found && stored.offset == rec.Offset && stored.Sequence == next-1 {
			o.Logger.Info("R2Z2 ingestion starting", "url", r.key, "next", next, "from", how, "cursor_topic", o.CursorTopic)
			return w, next, nil
		}
		w.close()
		if attempt == openAttempts {
			return nil, 0, fmt.Errorf("writing the R2Z2 cursor: the transaction was reported committed but is not, %d times", attempt)
		}
		o.Logger.Debug("the first transaction was not committed though reported so; starting with a new Kafka client", "attempt", attempt)
	}
}

// startAt reads the committed cursor (the caller has fenced earlier
// incarnations, so it is final) and returns the sequence to ingest next and
// where it came from. On the first attempt of a session it also rebuilds the
// killmail ids from the topic: what this process remembered is only a cache
// of what Kafka holds, and a failed or doubtful transaction must not leave
// anything in it that counts as stored.
func (r *R2Z2) startAt(ctx context.Context, c *r2z2Counters, rebuild bool) (int64, string, error) {
	o := &r.opts
	cur, found, err := readCursor(ctx, r.base, o.CursorTopic, r.key)
	if err != nil {
		return 0, "", err
	}
	if err := r.ownCursor(cur.r2z2Cursor, found); err != nil {
		return 0, "", err
	}
	if rebuild {
		r.ids = nil
		if o.DedupeWindow > 0 {
			r.ids = newIDWindow(o.DedupeWindow)
			if o.Reread > 0 {
				n, err := readBackIDs(ctx, r.base, o.Topic, o.Reread, o.RereadTimeout, o.Logger, r.ids)
				if err != nil {
					return 0, "", err
				}
				c.reread.Store(n)
			}
		}
	}

	switch {
	case found:
		if rebuild && o.Start > 0 && o.Start != cur.Sequence+1 && r.start == 0 {
			o.Logger.Warn("R2Z2 cursor found; the start sequence is only used without one", "start", o.Start, "cursor", cur.Sequence)
		}
		return cur.Sequence + 1, "cursor", nil
	case r.start > 0:
		return r.start, "start of this run", nil
	case o.Start > 0:
		r.start = o.Start
		return o.Start, "given start", nil
	}
	next, err := r.feed.sequence(ctx)
	if err != nil {
		return 0, "", err
	}
	r.start = next
	return next, "live: sequence.json", nil
}

// checkTopics fails permanently when the killmails topic is missing, and
// creates the cursor topic when it is.
func (r *R2Z2) checkTopics(ctx context.Context) error {
	tds, err := kadm.NewClient(r.base).ListTopics(ctx, r.opts.Topic)
	if err != nil {
		return fmt.Errorf("listing topic %q: %w", r.opts.Topic, err)
	}
	if td, ok := tds[r.opts.Topic]; !ok || td.Err != nil {
		return &permanentError{fmt.Errorf("killmails topic %q does not exist", r.opts.Topic)}
	}
	return ensureCursorTopic(ctx, r.base, r.opts.CursorTopic)
}

// checkCursorOwner fails permanently if the cursor belongs to another
// killmails topic.
func (r *R2Z2) checkCursorOwner(ctx context.Context) error {
	cur, found, err := readCursor(ctx, r.base, r.opts.CursorTopic, r.key)
	if err != nil {
		return err
	}
	return r.ownCursor(cur.r2z2Cursor, found)
}

// ownCursor fails permanently if cur names another killmails topic.
func (r *R2Z2) ownCursor(cur r2z2Cursor, found bool) error {
	if found && cur.Topic != "" && cur.Topic != r.opts.Topic {
		return &permanentError{fmt.Errorf("R2Z2 cursor topic %q holds the cursor of topic %q, not %q: give each killmails topic its own cursor topic", r.opts.CursorTopic, cur.Topic, r.opts.Topic)}
	}
	return nil
}

// batch is what has been read from R2Z2 but not yet committed.
type batch struct {
	recs  []*kgo.Record
	bytes int
	since time.Time // when the first sequence of the batch was read
}

// ingest reads sequences from next on and commits them in batches until ctx
// is done (then it commits what it read and returns ctx's error) or a
// commit fails.
func (r *R2Z2) ingest(ctx context.Context, w *txWriter, next int64, c *r2z2Counters) error {
	o := &r.opts
	committed := next - 1
	var b batch
	commit := func() error {
		if next-1 == committed {
			return nil
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.CommitTimeout)
		defer cancel()
		err := w.commit(cctx, b.recs, cursorRecord(o.CursorTopic, r.key, r2z2Cursor{Sequence: next - 1, Topic: o.Topic}))
		if err != nil {
			// The session ends; the next one reads what is stored.
			return fmt.Errorf("writing R2Z2 sequences %d to %d: %w", committed+1, next-1, err)
		}
		c.produced.Add(int64(len(b.recs)))
		c.bytes.Add(int64(b.bytes))
		c.commits.Add(1)
		c.cursor.Store(next - 1)
		committed = next - 1
		b = batch{}
		return nil
	}

	var gap gapState
	for {
		if ctx.Err() != nil {
			if err := commit(); err != nil {
				return err
			}
			return ctx.Err()
		}
		if len(b.recs) >= o.BatchSize || b.bytes >= r2z2BatchBytes ||
			(next-1 > committed && o.Now().Sub(b.since) >= o.BatchDelay) {
			if err := commit(); err != nil {
				return err
			}
		}

		body, found, tooLarge, err := r.feed.file(ctx, next)
		if err != nil {
			continue // ctx is done
		}
		if !found {
			// At the head of the feed: what was read is complete, make
			// it visible now rather than after BatchDelay.
			if err := commit(); err != nil {
				return err
			}
			skip, err := gap.missing(ctx, r, next)
			if err != nil {
				continue // ctx is done
			}
			if !skip {
				_ = o.Sleep(ctx, o.PollInterval)
				continue
			}
			c.missing.Add(1)
		} else {
			gap.found(o.Logger, next)
			c.fetched.Add(1)
			r.take(c, &b, next, body, tooLarge)
		}
		if next-1 == committed {
			b.since = o.Now()
		}
		next++
	}
}

// take adds the file of sequence seq to b, or counts it as rejected or a
// duplicate.
func (r *R2Z2) take(c *r2z2Counters, b *batch, seq int64, body []byte, tooLarge bool) {
	where := func() string { return r.key + "/ephemeral/" + strconv.FormatInt(seq, 10) + ".json" }
	if tooLarge {
		r.reject(c, where(), ReasonTooLarge, fmt.Errorf("the file is larger than %d bytes", r2z2MaxFileBytes))
		return
	}
	km, reason, err := normalizeRecord(body, r.opts.MaxValueBytes)
	if err != nil {
		r.reject(c, where(), reason, err)
		return
	}
	if r.ids != nil && !r.ids.add(km.ID) {
		c.duplicates.Add(1)
		return
	}
	b.recs = append(b.recs, newRecord(r.opts.Topic, km))
	b.bytes += len(km.JSON)
}

func (r *R2Z2) reject(c *r2z2Counters, where, reason string, err error) {
	n := c.rejected.Add(1)
	c.mu.Lock()
	c.rejectedBy[reason]++
	if int64(len(c.rejections)) < int64(r.opts.LogRejections) {
		c.rejections = append(c.rejections, Rejection{Where: where, Reason: reason, Err: err})
	}
	c.mu.Unlock()
	logRejection(r.opts.Logger, n, int64(r.opts.LogRejections), where, reason, err)
}

// gapState tells a sequence not published yet from one R2Z2 does not have.
// R2Z2 publishes in order and sequence.json lags the newest file, so a
// sequence at or below what sequence.json points at should exist; one that
// stays 404 for GapWait is missing (a hole in the feed, or a file expired
// because the cursor is older than R2Z2's retention) and is skipped, with a
// warning, rather than waited for forever.
type gapState struct {
	seq     int64     // the sequence last found 404
	since   time.Time // since when seq has been 404, or sequence.json last read for it
	pointer int64     // in a run of missing sequences: where sequence.json pointed
	first   int64     // in a run of missing sequences: the first one
}

// missing is called when seq is 404. It reports whether to skip seq; its
// only error is ctx's.
func (g *gapState) missing(ctx context.Context, r *R2Z2, seq int64) (bool, error) {
	o := &r.opts
	if g.first != 0 && seq <= g.pointer {
		return true, nil // a run of missing sequences continues
	}
	g.endRun(o.Logger, seq)
	now := o.Now()
	if g.seq != seq {
		g.seq, g.since = seq, now
		return false, nil
	}
	if now.Sub(g.since) < o.GapWait {
		return false, nil
	}
	pointer, err := r.feed.sequence(ctx)
	if err != nil {
		return false, err
	}
	g.since = o.Now()
	if pointer <= seq {
		return false, nil // not published yet: the feed is quiet
	}
	o.Logger.Warn("R2Z2 does not have a sequence below the one sequence.json points at; skipping it and any missing right after it",
		"sequence", seq, "sequence_json", pointer, "waited", o.GapWait)
	g.first, g.pointer = seq, pointer
	return true, nil
}

// found is called when seq exists; it ends a run of missing sequences.
func (g *gapState) found(log *slog.Logger, seq int64) {
	g.endRun(log, seq)
	g.seq = 0
}

func (g *gapState) endRun(log *slog.Logger, seq int64) {
	if g.first == 0 {
		return
	}
	log.Warn("skipped R2Z2 sequences missing from the feed", "first", g.first, "last", seq-1, "count", seq-g.first)
	g.first, g.pointer = 0, 0
}

// startProgress reports the counts every ProgressInterval, when something
// was read since the last report, until the returned function is called
// (it may be called more than once).
func (r *R2Z2) startProgress(c *r2z2Counters, start time.Time) func() {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(r.opts.ProgressInterval)
		defer t.Stop()
		var last, lastFetched, lastMissing int64
		lastAt := start
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				s := c.snapshot(now.Sub(start))
				if s.Fetched == lastFetched && s.Missing == lastMissing {
					continue // quiet feed, or R2Z2 unreachable (logged already)
				}
				rate := float64(s.Produced-last) / now.Sub(lastAt).Seconds()
				last, lastFetched, lastMissing, lastAt = s.Produced, s.Fetched, s.Missing, now
				r.opts.Logger.Info("R2Z2 progress",
					"cursor", s.Cursor,
					"fetched", s.Fetched,
					"produced", s.Produced,
					"per_second", int64(rate),
					"rejected", s.Rejected,
					"duplicates", s.Duplicates,
					"missing", s.Missing,
					"commits", s.Commits)
				if r.opts.Progress != nil {
					r.opts.Progress(s)
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

package producer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"
)

// r2z2MaxFileBytes bounds the memory one R2Z2 file may take. Real files are
// a few KB, a few hundred for a citadel with its contents; a larger one is
// rejected as too large rather than read.
const r2z2MaxFileBytes = DefaultMaxLineBytes

// maxRetryAfter caps a server's Retry-After, so a garbled header cannot
// stop ingestion for years.
const maxRetryAfter = 24 * time.Hour

// r2z2Feed speaks R2Z2's HTTP protocol politely: one request at a time, at
// most one per RequestInterval, a descriptive User-Agent, and on anything
// but an answer an exponential back-off, honouring Retry-After. zKillboard
// bans clients that hammer it for an hour, so every retry waits.
type r2z2Feed struct {
	base string // without a trailing slash
	ua   string
	hc   *http.Client
	opts *R2Z2Options // intervals, Sleep, Now, Logger

	last    time.Time // when the last request was sent
	trouble episode   // the failures since the last answer
}

// fetched is the outcome of one request.
type fetched struct {
	status     int
	body       []byte        // for 200 only
	tooLarge   bool          // 200, but the body is over r2z2MaxFileBytes
	retryAfter time.Duration // from Retry-After; -1 when absent
	err        error         // transport error: no status
}

// file returns the R2Z2 file of sequence seq, or found false when R2Z2
// answers 404 (not published yet, or missing). It retries everything else
// with back-off for as long as it takes, so its only error is ctx's.
// tooLarge reports a file that exists but is too large to read.
func (f *r2z2Feed) file(ctx context.Context, seq int64) (body []byte, found, tooLarge bool, err error) {
	res, err := f.get(ctx, "/ephemeral/"+strconv.FormatInt(seq, 10)+".json", true, nil)
	if err != nil {
		return nil, false, false, err
	}
	return res.body, res.status == http.StatusOK, res.tooLarge, nil
}

// sequence returns the sequence R2Z2's sequence.json points at: a recent
// one, not necessarily the newest. It retries until it gets one, so its
// only error is ctx's.
func (f *r2z2Feed) sequence(ctx context.Context) (int64, error) {
	var seq int64
	_, err := f.get(ctx, "/ephemeral/sequence.json", false, func(body []byte) error {
		var v struct {
			Sequence *int64 `json:"sequence"`
		}
		if err := json.Unmarshal(body, &v); err != nil {
			return fmt.Errorf("sequence.json is not JSON: %w", err)
		}
		if v.Sequence == nil || *v.Sequence < 1 {
			return fmt.Errorf("sequence.json has no positive \"sequence\": %.100q", body)
		}
		seq = *v.Sequence
		return nil
	})
	return seq, err
}

// get requests path until it answers 200 with a body check accepts (check
// may be nil), or 404 when ok404. Anything else (no answer, 429, 403, 5xx,
// another status, a body check rejects) is retried after a back-off.
func (f *r2z2Feed) get(ctx context.Context, path string, ok404 bool, check func([]byte) error) (fetched, error) {
	url := f.base + path
	for {
		res := f.attempt(ctx, url)
		if err := ctx.Err(); err != nil {
			return fetched{}, err
		}
		if res.err == nil && res.status == http.StatusOK && check != nil {
			err := fmt.Errorf("%s is larger than %d bytes", url, r2z2MaxFileBytes)
			if !res.tooLarge {
				err = check(res.body)
			}
			if err != nil {
				res = fetched{status: res.status, retryAfter: -1, err: err}
			}
		}
		if res.err == nil && (res.status == http.StatusOK || res.status == http.StatusNotFound && ok404) {
			f.trouble.over(f.opts.Logger, f.opts.Now())
			return res, nil
		}
		wait := f.trouble.fail(f.opts, url, res)
		if err := f.opts.Sleep(ctx, wait); err != nil {
			return fetched{}, err
		}
	}
}

// attempt sends one request, after waiting out RequestInterval since the
// previous one.
func (f *r2z2Feed) attempt(ctx context.Context, url string) fetched {
	if f.opts.RequestInterval > 0 && !f.last.IsZero() {
		if wait := f.last.Add(f.opts.RequestInterval).Sub(f.opts.Now()); wait > 0 {
			if err := f.opts.Sleep(ctx, wait); err != nil {
				return fetched{retryAfter: -1, err: err}
			}
		}
	}
	f.last = f.opts.Now()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fetched{retryAfter: -1, err: err}
	}
	req.Header.Set("User-Agent", f.ua)
	req.Header.Set("Accept", "application/json")
	resp, err := f.hc.Do(req)
	if err != nil {
		return fetched{retryAfter: -1, err: err}
	}
	defer resp.Body.Close()
	res := fetched{status: resp.StatusCode, retryAfter: retryAfter(resp.Header.Get("Retry-After"), f.opts.Now())}
	if resp.StatusCode != http.StatusOK {
		// Drain a little so the connection can be reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return res
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, r2z2MaxFileBytes+1))
	switch {
	case err != nil:
		// A body cut short is a failed request, never a killmail to
		// judge: the file is fetched again.
		return fetched{status: resp.StatusCode, retryAfter: -1, err: fmt.Errorf("reading %s: %w", url, err)}
	case len(body) > r2z2MaxFileBytes:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		res.tooLarge = true
	default:
		res.body = body
	}
	return res
}

// retryAfter parses a Retry-After header, in seconds or as an HTTP date; -1
// when absent or unreadable.
func retryAfter(h string, now time.Time) time.Duration {
	if h == "" {
		return -1
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(h, 10, 64); err == nil {
		if secs < 0 {
			return -1
		}
		d = time.Duration(min(secs, int64(maxRetryAfter/time.Second))) * time.Second
	} else if t, err := http.ParseTime(h); err == nil {
		d = max(t.Sub(now), 0)
	} else {
		return -1
	}
	return min(d, maxRetryAfter)
}

// Kinds of trouble, for the log and the back-off.
const (
	troubleUnreachable = "unreachable"  // no answer, 5xx, an unexpected status or body
	troubleRateLimited = "rate_limited" // 429
	troubleRefused     = "refused"      // 403: zKillboard blocks impolite clients
)

// episode tracks a run of consecutive failures: it sizes the back-off and
// makes sure that a long outage is logged once, not once per retry.
type episode struct {
	failures int
	since    time.Time
	logged   map[string]bool // kinds already logged in this episode
}

// fail records a failed request and returns how long to wait before the
// next one: Retry-After if the server sent one, else the back-off for the
// kind of failure, doubling with each consecutive failure up to its cap.
func (e *episode) fail(o *R2Z2Options, url string, res fetched) time.Duration {
	if e.failures == 0 {
		e.since = o.Now()
		e.logged = map[string]bool{}
	}
	e.failures++
	kind, first, limit := troubleUnreachable, o.Backoff, o.MaxBackoff
	switch res.status {
	case http.StatusTooManyRequests:
		kind, first, limit = troubleRateLimited, o.RateLimitBackoff, o.MaxRateLimitBackoff
	case http.StatusForbidden:
		kind, first, limit = troubleRefused, o.RateLimitBackoff, o.MaxRateLimitBackoff
	}
	wait := backoff(first, limit, e.failures)
	if res.retryAfter >= 0 {
		wait = max(res.retryAfter, o.RequestInterval)
	}

	attrs := []any{"url", url, "retry_in", wait}
	if res.err != nil {
		attrs = append(attrs, "error", res.err)
	} else {
		attrs = append(attrs, "status", res.status)
	}
	if e.logged[kind] {
		o.Logger.Debug("R2Z2 request failed; retrying", append(attrs, "failures", e.failures)...)
		return wait
	}
	e.logged[kind] = true
	switch kind {
	case troubleRateLimited:
		o.Logger.Warn("R2Z2 is rate limiting killfeed (HTTP 429); backing off and retrying, logged once until it answers", attrs...)
	case troubleRefused:
		o.Logger.Warn("R2Z2 refused killfeed (HTTP 403; zKillboard blocks impolite clients for an hour); backing off and retrying, logged once until it answers", attrs...)
	default:
		o.Logger.Warn("R2Z2 unreachable; retrying with back-off, logged once until it answers", attrs...)
	}
	return wait
}

// over ends the episode, if there was one, saying so once.
func (e *episode) over(log *slog.Logger, now time.Time) {
	if e.failures == 0 {
		return
	}
	log.Info("R2Z2 answering again", "failures", e.failures, "after", now.Sub(e.since).Round(time.Second))
	e.failures = 0
}

// backoff returns first doubled n-1 times, capped at limit.
func backoff(first, limit time.Duration, n int) time.Duration {
	d := first
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

// sleepCtx waits for d or until ctx is done, returning ctx's error then.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// errorsIsCtx reports whether err is a context's cancellation or deadline.
func errorsIsCtx(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

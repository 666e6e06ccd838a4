package feedsvc

import (
	"fmt"
	"sync"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/time/rate"
)

// limits enforces the per-caller request rate and stream counts. A caller
// is an API key, or an IP address when auth is off.
type limits struct {
	rps           float64
	burst         int
	streamsPerKey int
	streamsPerIP  int

	mu       sync.Mutex
	rates    map[string]*rateEntry
	byKey    map[string]int
	byIP     map[string]int
	lastTrim time.Time
}

type rateEntry struct {
	lim  *rate.Limiter
	used time.Time
}

func newLimits(o Options) *limits {
	return &limits{
		rps: o.RequestsPerSecond, burst: o.RequestBurst,
		streamsPerKey: o.MaxStreamsPerKey, streamsPerIP: o.MaxStreamsPerIP,
		rates: map[string]*rateEntry{}, byKey: map[string]int{}, byIP: map[string]int{},
	}
}

// allow takes one request from the caller's rate.
func (l *limits) allow(c caller) error {
	if l.rps <= 0 {
		return nil
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastTrim) > time.Minute {
		// Forget callers idle long enough to have a full bucket again.
		for k, e := range l.rates {
			if now.Sub(e.used) > time.Minute {
				delete(l.rates, k)
			}
		}
		l.lastTrim = now
	}
	k := c.limitKey()
	e := l.rates[k]
	if e == nil {
		e = &rateEntry{lim: rate.NewLimiter(rate.Limit(l.rps), max(l.burst, 1))}
		l.rates[k] = e
	}
	e.used = now
	if !e.lim.AllowN(now, 1) {
		return &callError{connect.CodeResourceExhausted, fmt.Sprintf("rate limit: more than %g requests per second (burst %d); slow down", l.rps, l.burst)}
	}
	return nil
}

// openStream counts a new stream against the caller's limits; call the
// returned function when it ends.
func (l *limits) openStream(c caller) (func(), error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.key != "" && l.streamsPerKey > 0 && l.byKey[c.key] >= l.streamsPerKey {
		return nil, &callError{connect.CodeResourceExhausted, fmt.Sprintf("stream limit: this API key already has %d streams open", l.streamsPerKey)}
	}
	if l.streamsPerIP > 0 && l.byIP[c.ip] >= l.streamsPerIP {
		return nil, &callError{connect.CodeResourceExhausted, fmt.Sprintf("stream limit: %s already has %d streams open", c.ip, l.streamsPerIP)}
	}
	if c.key != "" {
		l.byKey[c.key]++
	}
	l.byIP[c.ip]++
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if c.key != "" {
			if l.byKey[c.key]--; l.byKey[c.key] <= 0 {
				delete(l.byKey, c.key)
			}
		}
		if l.byIP[c.ip]--; l.byIP[c.ip] <= 0 {
			delete(l.byIP, c.ip)
		}
	}, nil
}

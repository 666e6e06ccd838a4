package producer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/killfeed/killfeed/producer"
	"github.com/killfeed/killfeed/producer/r2z2test"
)

// fakeClock is the R2Z2 ingester's pacing clock in tests: Sleep returns at
// once, moving Now forward and remembering the wait, so tests check every
// back-off without waiting for it.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	sleeps  []time.Duration
	onSleep func(time.Duration)
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.sleeps = append(c.sleeps, d)
	on := c.onSleep
	c.mu.Unlock()
	if on != nil {
		on(d)
	}
	return ctx.Err()
}

// Sleeps returns the waits so far.
func (c *fakeClock) Sleeps() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.sleeps...)
}

func (c *fakeClock) OnSleep(fn func(time.Duration)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onSleep = fn
}

// logBuffer collects log output for assertions and passes it on to the
// test log.
type logBuffer struct {
	t  testing.TB
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.b.Write(p)
	l.mu.Unlock()
	l.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Count returns how many logged lines contain s.
func (l *logBuffer) Count(s string) int {
	n := 0
	for _, line := range strings.Split(l.String(), "\n") {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n
}

// r2z2Env is a broker with a killmails topic, a fake R2Z2 and a fake clock.
type r2z2Env struct {
	t       testing.TB
	cluster *kfake.Cluster
	cl      *kgo.Client
	srv     *r2z2test.Server
	clock   *fakeClock
	log     *logBuffer
}

func newR2Z2Env(t testing.TB) *r2z2Env {
	t.Helper()
	c := newCluster(t, 4, producer.DefaultTopic)
	return &r2z2Env{
		t:       t,
		cluster: c,
		cl:      newClient(t, c),
		srv:     r2z2test.New(t),
		clock:   newFakeClock(),
		log:     &logBuffer{t: t},
	}
}

// options are R2Z2Options for the env: the fake server, the fake clock, no
// pacing between requests.
func (e *r2z2Env) options() producer.R2Z2Options {
	return producer.R2Z2Options{
		URL:              e.srv.URL,
		RequestInterval:  -1,
		Now:              e.clock.Now,
		Sleep:            e.clock.Sleep,
		Logger:           slog.New(slog.NewTextHandler(e.log, &slog.HandlerOptions{Level: slog.LevelInfo})),
		ProgressInterval: time.Hour,
		RereadTimeout:    20 * time.Second,
	}
}

func (e *r2z2Env) ingester(opts producer.R2Z2Options) *producer.R2Z2 {
	e.t.Helper()
	r, err := producer.NewR2Z2(e.cl, opts)
	if err != nil {
		e.t.Fatalf("NewR2Z2: %v", err)
	}
	return r
}

// runToHead runs r until it has asked for the sequence after the server's
// newest and is waiting for it to be published: everything up to the head
// is then committed. It fails the test if that takes over a minute.
func (e *r2z2Env) runToHead(r *producer.R2Z2, poll time.Duration) producer.R2Z2Stats {
	e.t.Helper()
	if poll == 0 {
		poll = producer.DefaultR2Z2PollInterval
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	want := fmt.Sprintf("/ephemeral/%d.json", e.srv.Head()+1)
	e.clock.OnSleep(func(d time.Duration) {
		reqs := e.srv.Requests()
		if d == poll && len(reqs) > 0 && reqs[len(reqs)-1].Path == want {
			cancel()
		}
	})
	defer e.clock.OnSleep(nil)
	stats, err := r.Run(ctx)
	if ctx.Err() == context.DeadlineExceeded {
		e.t.Fatalf("the ingester did not reach sequence %d within a minute; stats %+v", e.srv.Head(), stats)
	}
	if err != context.Canceled {
		e.t.Fatalf("Run returned %v, want context.Canceled; stats %+v", err, stats)
	}
	return stats
}

// kadmCreate creates a killmails-like topic with 2 partitions.
func kadmCreate(e *r2z2Env, topic string) (kadm.CreateTopicResponse, error) {
	return kadm.NewClient(e.cl).CreateTopic(context.Background(), 2, 1, nil, topic)
}

// readR2Z2Cursor returns the committed cursor of the env's feed, or
// FirstSequence-1 when there is none.
func readR2Z2Cursor(t testing.TB, e *r2z2Env) int64 {
	t.Helper()
	cursor := int64(r2z2test.FirstSequence - 1)
	for _, r := range committedRecords(t, e.cl, producer.DefaultR2Z2CursorTopic) {
		if string(r.Key) != e.srv.URL {
			continue
		}
		var v struct {
			Sequence int64  `json:"sequence"`
			Topic    string `json:"topic"`
		}
		if err := json.Unmarshal(r.Value, &v); err != nil || v.Topic != producer.DefaultTopic {
			t.Fatalf("cursor record %s: %v", r.Value, err)
		}
		cursor = v.Sequence
	}
	return cursor
}

// committedRecords reads topic as feedsvc does; see r2z2test.CommittedRecords.
func committedRecords(t testing.TB, cl *kgo.Client, topic string) []*kgo.Record {
	t.Helper()
	return r2z2test.CommittedRecords(t, cl.OptValue(kgo.SeedBrokers).([]string), topic)
}

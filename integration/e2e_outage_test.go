//go:build integration

package integration

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/killfeed/killfeed/feedsvc"
	"github.com/killfeed/killfeed/producer"
	killfeedv1 "github.com/killfeed/killfeed/proto/killfeed/v1"
	"github.com/killfeed/killfeed/proto/killfeed/v1/killfeedv1connect"
)

// TestE2EKafkaOutage stops the broker (docker stop) and starts it again while
// killfeed runs and killfeed's producer keeps producing, and checks what
// users notice:
//
//   - during the outage the service stays up (/healthz), says it is not
//     ready (/readyz 503), and calls that need Kafka (Commit, a Poll that
//     commits) fail with unavailable, the code clients retry;
//   - afterwards it recovers by itself, with no restart: it is ready again,
//     commits work, and killmails produced after the outage are served;
//   - the producer rides the outage: its run ends with every killmail read
//     from its source acknowledged by Kafka, none failed;
//   - nothing is lost and nothing is doubled: a client with explicit commits
//     that keeps polling and committing through the outage ends with every
//     acknowledged killmail exactly once. Precisely: the killmail ids it
//     processed are exactly the ids the producer got acknowledged, no event
//     it had committed was ever delivered to it again (an event is only
//     redelivered when its commit failed, and then it is not processed
//     twice: processing is idempotent by event id, as the README asks), and
//     no killmail id appears under two event ids (the producer's retries
//     wrote nothing twice). A stream (explicit mode, so it never needs Kafka
//     to commit) open through the outage delivers the same set, each event
//     once.
//
// No t.Parallel: it stops the broker every test shares.
func TestE2EKafkaOutage(t *testing.T) {
	topic := newKillmailsTopic(t, 4)
	f := startFeed(t, "a", topic, offsetsTopicName(t), feedsvc.Options{MaintainEvery: time.Second})
	systems := []int64{jita, amarr, dodixie, rens, thera}

	// The producer: 50 killmails a second from a source that records every
	// killmail it hands over, until told to stop.
	src := &tickerSource{every: 20 * time.Millisecond, systems: systems, firstID: 400_000_000, stop: make(chan struct{})}
	prodLog := &syncBuffer{}
	// The client as killfeed's commands build it (producer.ClientOpts):
	// without kgo.AlwaysRetryEOF, the connections Docker's port proxy
	// accepts and closes while the broker is down fail every buffered
	// killmail and end the run.
	prod, err := producer.New(newClient(t, producer.ClientOpts()...), producer.Options{Topic: topic, FlushTimeout: 2 * time.Minute,
		Logger: slog.New(slog.NewTextHandler(prodLog, nil)), ProgressInterval: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	type runResult struct {
		stats producer.Stats
		err   error
	}
	ran := make(chan runResult, 1)
	go func() {
		st, err := prod.Run(context.Background(), src)
		ran <- runResult{st, err}
	}()
	stopProducer := sync.OnceValue(func() runResult {
		close(src.stop)
		select {
		case r := <-ran:
			return r
		case <-time.After(3 * time.Minute):
			t.Fatal("the producer did not finish")
			return runResult{}
		}
	})
	t.Cleanup(func() {
		r := stopProducer()
		if t.Failed() {
			t.Logf("producer: %v, stats %+v\nlog:\n%s", r.err, r.stats, prodLog.String())
		}
	})

	// The client: polls and commits (explicit mode, gRPC) for the whole
	// test.
	cons := &explicitConsumer{name: "consumer", p: f.rpcPoller(grpcH2C), c: f.client(grpcH2C), systems: systems}
	consCtx, stopConsumer := context.WithCancel(context.Background())
	consDone := make(chan struct{})
	go func() { defer close(consDone); cons.run(consCtx) }()
	defer func() { stopConsumer(); <-consDone }()

	// The watcher: one stream, open through the outage.
	watcher := subscribe(t, "watcher", f.client(connectJSON), &killfeedv1.SubscribeRequest{
		ClientId: "watcher", SystemIds: systems, CommitMode: killfeedv1.CommitMode_COMMIT_MODE_EXPLICIT, HeartbeatSeconds: 1,
	})
	var watchMu sync.Mutex
	var watched []got
	var watchGaps []*killfeedv1.Gap
	go func() {
		for m := range watcher.msgs {
			watchMu.Lock()
			watched = append(watched, protoEvents(m.GetEvents().GetEvents())...)
			if g := m.GetGap(); g != nil {
				watchGaps = append(watchGaps, g)
			}
			watchMu.Unlock()
		}
	}()

	eventually(t, time.Minute, "consumer processing before the outage", func() error {
		if n := cons.processedCount(); n < 30 {
			return fmt.Errorf("processed %d", n)
		}
		return nil
	})

	outageStart := time.Now()
	stopKafka(t)
	cons.markOutage(true)
	t.Logf("broker stopped after %d killmails emitted (stop took %s)", src.count(), time.Since(outageStart).Round(time.Millisecond))

	// What users see during the outage.
	hc := http1Client()
	if status, body, _, err := httpGet(testContext(t), hc, f.baseURL()+"/healthz"); err != nil || status != http.StatusOK {
		t.Errorf("/healthz during the outage: %d %s %v; want 200 (the process is alive)", status, body, err)
	}
	eventually(t, 30*time.Second, "/readyz failing during the outage", func() error {
		status, body, _, err := httpGet(testContext(t), hc, f.baseURL()+"/readyz")
		if err != nil || status != http.StatusServiceUnavailable {
			return fmt.Errorf("/readyz answered %d %s %v; want 503", status, body, err)
		}
		return nil
	})
	var probes sync.WaitGroup
	for _, p := range []poller{f.rpcPoller(connectJSON), f.restPoller()} {
		probes.Add(1)
		go func() {
			defer probes.Done()
			// No deadline (connect-go would send it to the server, which
			// would then wait that long): the server must bound the call.
			ctx, cancel := context.WithCancel(context.Background())
			defer time.AfterFunc(2*time.Minute, cancel).Stop()
			began := time.Now()
			_, err := p.Poll(ctx, "auto-"+p.Name(), systems, 0, killfeedv1.CommitMode_COMMIT_MODE_AUTO)
			if codeOf(err) != connect.CodeUnavailable {
				t.Errorf("%s: Poll (automatic commits) during the outage: %v; want unavailable", p.Name(), err)
			} else {
				t.Logf("%s: Poll during the outage: unavailable after %s: %v", p.Name(), time.Since(began).Round(time.Millisecond), err)
			}
		}()
	}
	probes.Add(1)
	go func() {
		defer probes.Done()
		ctx, cancel := context.WithCancel(context.Background())
		defer time.AfterFunc(2*time.Minute, cancel).Stop()
		_, err := f.client(grpcH2C).Commit(ctx, connect.NewRequest(&killfeedv1.CommitRequest{
			ClientId: "prober", Cursors: []*killfeedv1.Cursor{{SystemId: jita, EventId: 1}},
		}))
		if codeOf(err) != connect.CodeUnavailable {
			t.Errorf("Commit during the outage: %v; want unavailable", err)
		}
	}()
	probes.Wait()

	restartBegan := time.Now()
	startKafka(t)
	cons.markOutage(false)
	t.Logf("broker back after %s (start took %s)", time.Since(outageStart).Round(time.Second), time.Since(restartBegan).Round(time.Millisecond))

	// Recovery, by itself.
	lastBody := ""
	eventually(t, time.Minute, "/readyz after the outage", func() error {
		status, body, _, err := httpGet(testContext(t), hc, f.baseURL()+"/readyz")
		if string(body) != lastBody {
			lastBody = string(body)
			t.Logf("%s after restart: /readyz %d %s", time.Since(restartBegan).Round(time.Millisecond), status, body)
		}
		if err != nil || status != http.StatusOK {
			return fmt.Errorf("/readyz answered %d %s %v", status, body, err)
		}
		return nil
	})
	t.Logf("ready %s after the broker came back", time.Since(restartBegan).Round(time.Millisecond))
	emittedAtRecovery := src.count()
	eventually(t, time.Minute, "producing after the outage", func() error {
		if n := src.count(); n < emittedAtRecovery+50 {
			return fmt.Errorf("%d killmails emitted since the recovery", n-emittedAtRecovery)
		}
		return nil
	})

	r := stopProducer()
	emitted := src.ids()
	if r.err != nil || r.stats.Failed != 0 || r.stats.Unconfirmed != 0 || r.stats.Produced != int64(len(emitted)) {
		t.Fatalf("producer: %v; %d emitted, stats %+v; want every one acknowledged", r.err, len(emitted), r.stats)
	}
	t.Logf("producer: %d killmails acknowledged", r.stats.Produced)

	eventually(t, time.Minute, "consumer processing every acknowledged killmail", func() error {
		if n := cons.processedCount(); n < len(emitted) {
			return fmt.Errorf("processed %d of %d", n, len(emitted))
		}
		return nil
	})
	stopConsumer()
	<-consDone

	// The topic holds each acknowledged killmail once: the producer's
	// retries wrote nothing twice.
	records := int64(0)
	for _, end := range endOffsets(t, newAdmin(t), topic) {
		records += end
	}
	if records != int64(len(emitted)) {
		t.Errorf("the topic holds %d records; the producer got %d killmails acknowledged", records, len(emitted))
	}
	topicNow := readTopic(t, topic, len(emitted))
	ids := map[int64]int64{} // killmail id -> event id
	for _, st := range topicNow {
		id := killmailID(st.Value)
		if other, dup := ids[id]; dup {
			t.Errorf("killmail %d is in the topic twice: events %d and %d", id, other, st.EventID)
		}
		ids[id] = st.EventID
	}
	for _, id := range emitted {
		if _, ok := ids[id]; !ok {
			t.Errorf("acknowledged killmail %d is not in the topic", id)
		}
	}

	cons.check(t, topicNow)

	// The stream open through the outage got the same, each once.
	eventually(t, time.Minute, "the watcher stream catching up", func() error {
		watchMu.Lock()
		defer watchMu.Unlock()
		if len(watched) < len(emitted) {
			return fmt.Errorf("the stream delivered %d of %d (ended: %v)", len(watched), len(emitted), streamEnded(watcher))
		}
		return nil
	})
	watchMu.Lock()
	checkExactlyOnce(t, "watcher stream", watched, topicNow)
	if len(watchGaps) > 0 {
		t.Errorf("watcher stream reported losses: %v", watchGaps)
	}
	watchMu.Unlock()
}

// streamEnded says whether a stream has ended, and why.
func streamEnded(s *stream) string {
	select {
	case <-s.done:
		return fmt.Sprintf("yes: %v", s.err)
	default:
		return "no"
	}
}

// tickerSource is a producer.Source handing over a killmail every interval,
// round-robin over systems, with ids from firstID up, until stop is closed.
type tickerSource struct {
	every   time.Duration
	systems []int64
	firstID int64
	stop    chan struct{}

	mu      sync.Mutex
	emitted []int64
}

func (s *tickerSource) Next(ctx context.Context) ([]byte, error) {
	select {
	case <-s.stop:
		return nil, io.EOF
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(s.every):
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.firstID + int64(len(s.emitted))
	s.emitted = append(s.emitted, id)
	return testKillmail(id, s.systems[len(s.emitted)%len(s.systems)]), nil
}

func (s *tickerSource) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.emitted)
}

func (s *tickerSource) ids() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.emitted)
}

// explicitConsumer is a client that polls in explicit mode, processes each
// event once (idempotently, by event id) and commits after each batch,
// retrying whatever fails, as the README tells clients to.
type explicitConsumer struct {
	name    string
	p       poller
	c       killfeedv1connect.KillfeedServiceClient
	systems []int64

	mu          sync.Mutex
	processed   map[int64]got   // by event id
	order       []got           // processed events, in processing order
	committed   map[int64]int64 // system -> last event id whose commit succeeded
	inOutage    bool
	outageFails int
	redelivered int // events delivered again after a failed commit
	violations  []string
	errCodes    map[connect.Code]int
}

func (c *explicitConsumer) run(ctx context.Context) {
	c.mu.Lock()
	c.processed, c.committed, c.errCodes = map[int64]got{}, map[int64]int64{}, map[connect.Code]int{}
	c.mu.Unlock()
	// No deadline on the calls: the server must bound them itself.
	for ctx.Err() == nil {
		res, err := c.p.Poll(ctx, c.name, c.systems, 100, killfeedv1.CommitMode_COMMIT_MODE_EXPLICIT)
		if err != nil {
			c.failed(ctx, "Poll", err)
			continue
		}
		c.mu.Lock()
		if len(res.Gaps) > 0 {
			c.violation("loss reported: %v", res.Gaps)
		}
		if len(res.Events) == 0 {
			c.mu.Unlock()
			time.Sleep(50 * time.Millisecond)
			continue
		}
		for _, ev := range res.Events {
			if last, ok := c.committed[ev.SystemID]; ok && ev.EventID <= last {
				c.violation("event %d (system %d) delivered again after its commit (up to %d) succeeded", ev.EventID, ev.SystemID, last)
			}
			if _, done := c.processed[ev.EventID]; done {
				c.redelivered++ // its commit failed: skip, processing is idempotent
				continue
			}
			c.processed[ev.EventID] = ev
			c.order = append(c.order, ev)
		}
		c.mu.Unlock()
		req := commitRequest(c.name, res.Events)
		_, err = c.c.Commit(ctx, connect.NewRequest(req))
		if err != nil {
			c.failed(ctx, "Commit", err)
			continue
		}
		c.mu.Lock()
		for _, cur := range req.Cursors {
			c.committed[cur.SystemId] = max(c.committed[cur.SystemId], cur.EventId)
		}
		c.mu.Unlock()
	}
}

// failed notes a failed call and backs off briefly.
func (c *explicitConsumer) failed(ctx context.Context, call string, err error) {
	if ctx.Err() != nil {
		return // the test is stopping the consumer
	}
	c.mu.Lock()
	c.errCodes[codeOf(err)]++
	if c.inOutage {
		c.outageFails++
	}
	if codeOf(err) != connect.CodeUnavailable {
		c.violation("%s failed with %v; want unavailable, the code clients retry", call, err)
	}
	c.mu.Unlock()
	time.Sleep(200 * time.Millisecond)
}

// violation records a broken promise. c.mu must be held.
func (c *explicitConsumer) violation(format string, args ...any) {
	c.violations = append(c.violations, fmt.Sprintf(format, args...))
}

func (c *explicitConsumer) markOutage(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inOutage = on
}

func (c *explicitConsumer) processedCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.processed)
}

// check reports what the consumer did against the topic's content.
func (c *explicitConsumer) check(t testing.TB, want truth) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, v := range c.violations[:min(len(c.violations), 20)] {
		t.Errorf("%s: %s", c.name, v)
	}
	checkExactlyOnce(t, c.name, c.order, want)
	t.Logf("%s: processed %d events; %d delivered again after a failed commit; failed calls by code: %v (%d during the outage)",
		c.name, len(c.processed), c.redelivered, c.errCodes, c.outageFails)
}

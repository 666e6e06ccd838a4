//go:build integration

package integration

// The end-to-end harness: a killfeed service (offsets store, feed service and
// HTTP server, wired as `killfeed serve` wires them) on the test broker, the
// client transports a user has (Connect JSON over HTTP/1.1, gRPC over h2c,
// raw Connect JSON and the REST routes), and the bookkeeping that checks what
// a client got against what the killmails topic holds.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/killfeed/killfeed/feedsvc"
	"github.com/killfeed/killfeed/internal/killmail"
	"github.com/killfeed/killfeed/internal/topics"
	"github.com/killfeed/killfeed/offsets"
	killfeedv1 "github.com/killfeed/killfeed/proto/killfeed/v1"
	"github.com/killfeed/killfeed/proto/killfeed/v1/killfeedv1connect"
)

// Solar systems the tests use: four trade hubs and Thera, a wormhole.
const (
	jita    int64 = 30000142
	amarr   int64 = 30002187
	dodixie int64 = 30002659
	rens    int64 = 30002510
	thera   int64 = 31000005
)

// newKillmailsTopic creates a killmails topic of its own for the test, the
// way killfeed does (delete policy, 48 h retention), and returns its name.
func newKillmailsTopic(t testing.TB, partitions int32) string {
	t.Helper()
	name := uniqueTopic(t)
	if _, err := topics.EnsureKillmails(testContext(t), newAdmin(t), topics.Killmails{Name: name, Partitions: partitions}); err != nil {
		t.Fatalf("creating killmails topic: %v", err)
	}
	return name
}

// offsetsTopicName returns a name for the test's own positions topic, which
// offsets.Open creates (compacted) on first use.
func offsetsTopicName(t testing.TB) string { return uniqueTopic(t) + "-offsets" }

// feed is one killfeed replica on the test broker: positions store, feed
// service and HTTP server (HTTP/1.1 and h2c on one port).
type feed struct {
	t    testing.TB
	name string
	opts feedsvc.Options
	// offsetsTopic holds the replica's positions; replicas of one cluster
	// share it.
	offsetsTopic string
	logs         *syncBuffer

	mu    sync.Mutex
	addr  string // the listener's address, kept across restarts
	url   string
	store *offsets.Store
	svc   *feedsvc.Service
	srv   *http.Server
	// seen counts the requests served by protocol and content type
	// ("HTTP/1.1 application/json"), so tests can show which transports
	// they exercised.
	seen map[string]int
}

// startFeed starts a replica serving topic with positions in offsetsTopic.
// opts.Brokers, Topic and Logger are set here. It is stopped when the test
// ends, and its log printed if the test failed.
func startFeed(t testing.TB, name, topic, offsetsTopic string, opts feedsvc.Options) *feed {
	t.Helper()
	f := &feed{t: t, name: name, offsetsTopic: offsetsTopic, logs: &syncBuffer{}, addr: "127.0.0.1:0", seen: map[string]int{}}
	opts.Brokers = []string{brokerAddr()}
	opts.Topic = topic
	opts.Logger = slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("replica", name)
	f.opts = opts
	t.Cleanup(func() {
		f.stop()
		if t.Failed() {
			t.Logf("log of replica %s:\n%s", name, f.logs.String())
		}
	})
	f.start()
	return f
}

// start opens the store and the service and serves them, on the previous
// address after a restart.
func (f *feed) start() {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(testContext(f.t), time.Minute)
	defer cancel()
	store, err := offsets.Open(ctx, f.opts.Brokers, offsets.Options{Topic: f.offsetsTopic, Logger: f.opts.Logger})
	if err != nil {
		f.t.Fatalf("replica %s: opening the positions store: %v", f.name, err)
	}
	svc, err := feedsvc.New(ctx, store, f.opts)
	if err != nil {
		store.Close()
		f.t.Fatalf("replica %s: starting the feed service: %v", f.name, err)
	}
	ln, err := listenRetry(f.addr)
	if err != nil {
		svc.Close()
		store.Close()
		f.t.Fatalf("replica %s: %v", f.name, err)
	}
	inner := svc.Handler()
	srv := feedsvc.NewHTTPServer("", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.seen[r.Proto+" "+r.Header.Get("Content-Type")]++
		f.mu.Unlock()
		inner.ServeHTTP(w, r)
	}))
	go func() { _ = srv.Serve(ln) }()
	f.mu.Lock()
	f.store, f.svc, f.srv = store, svc, srv
	f.addr = ln.Addr().String()
	f.url = "http://" + f.addr
	f.mu.Unlock()
}

// stop shuts the replica down in the order `killfeed serve` does on SIGTERM:
// streams end, unary calls in flight finish (their commits complete), then
// the tail and the store stop. It is idempotent.
func (f *feed) stop() {
	f.mu.Lock()
	svc, srv, store := f.svc, f.srv, f.store
	f.svc, f.srv, f.store = nil, nil, nil
	f.mu.Unlock()
	if svc == nil {
		return
	}
	svc.Drain()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		f.t.Errorf("replica %s: HTTP shutdown: %v", f.name, err)
	}
	svc.Close()
	store.Close()
}

// restart stops the replica and starts a new process's worth of it (new
// store, new service) on the same cluster and URL.
func (f *feed) restart() {
	f.t.Helper()
	f.stop()
	f.start()
}

// service returns the running feed service.
func (f *feed) service() *feedsvc.Service {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.svc
}

// baseURL returns the replica's URL.
func (f *feed) baseURL() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.url
}

// transportsSeen returns the "proto content-type" pairs served so far.
func (f *feed) transportsSeen() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.seen)
}

// listenRetry listens on addr; on a restart the old listener's port is
// normally free at once, but need not be.
func listenRetry(addr string) (net.Listener, error) {
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var ln net.Listener
		if ln, err = net.Listen("tcp", addr); err == nil || time.Now().After(deadline) {
			return ln, err
		}
	}
}

// syncBuffer collects a replica's log.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// --- transports --------------------------------------------------------------

// transport is a way a client talks to killfeed with a generated client.
type transport struct {
	name string
	http func() *http.Client
	opts []connect.ClientOption
	// exact is true when killmails arrive as their stored JSON bytes; with
	// protobuf (gRPC) they arrive as a google.protobuf.Struct.
	exact bool
}

var (
	// connectJSON is Connect with JSON over HTTP/1.1, what a browser or
	// curl speaks. connect-go decodes killmails into a Struct, so the bytes
	// are not seen; rawConnectPoll and rawConnectNext check them.
	connectJSON = transport{name: "connect-json-http1", http: http1Client, opts: []connect.ClientOption{connect.WithProtoJSON()}}
	// grpcH2C is gRPC (protobuf) over unencrypted HTTP/2.
	grpcH2C = transport{name: "grpc-h2c", http: h2cClient, opts: []connect.ClientOption{connect.WithGRPC()}}
)

// http1Client speaks HTTP/1.1 only.
func http1Client() *http.Client {
	tr := &http.Transport{}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP1(true)
	return &http.Client{Transport: tr}
}

// h2cClient speaks unencrypted HTTP/2 only, as gRPC clients do.
func h2cClient() *http.Client {
	tr := &http.Transport{}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: tr}
}

// client returns a generated KillfeedService client for the replica.
func (f *feed) client(tp transport) killfeedv1connect.KillfeedServiceClient {
	return killfeedv1connect.NewKillfeedServiceClient(tp.http(), f.baseURL(), tp.opts...)
}

// --- what clients receive ------------------------------------------------------

// got is one event as a client received it.
type got struct {
	EventID  int64
	SystemID int64
	// Killmail is the killmail's JSON: the bytes on the wire for JSON
	// transports, re-encoded from the Struct for protobuf ones.
	Killmail []byte
	Exact    bool
}

// gotGap is a loss report as a client received it.
type gotGap struct {
	SystemID    int64 `json:"system_id"`
	FromEventID int64 `json:"from_event_id"`
	ToEventID   int64 `json:"to_event_id"`
	LostEvents  int64 `json:"lost_events"`
}

func gapsFromProto(gs []*killfeedv1.Gap) []gotGap {
	out := make([]gotGap, 0, len(gs))
	for _, g := range gs {
		out = append(out, gotGap{g.GetSystemId(), g.GetFromEventId(), g.GetToEventId(), g.GetLostEvents()})
	}
	return out
}

// jsonEvent is an event in JSON (REST and Connect JSON), the killmail kept
// as the bytes sent.
type jsonEvent struct {
	EventID  int64           `json:"event_id"`
	SystemID int64           `json:"system_id"`
	Killmail json.RawMessage `json:"killmail"`
}

func (e jsonEvent) got() got {
	return got{EventID: e.EventID, SystemID: e.SystemID, Killmail: e.Killmail, Exact: true}
}

// pollResult is what one Poll or Next returned.
type pollResult struct {
	Events []got
	Gaps   []gotGap
	More   bool
}

// poller is one way of calling Poll and Next; every implementation reports
// Kafka trouble and bad requests as a *connect.Error.
type poller interface {
	Name() string
	Poll(ctx context.Context, client string, systems []int64, limit int32, mode killfeedv1.CommitMode) (pollResult, error)
	Next(ctx context.Context, client string, systems []int64, mode killfeedv1.CommitMode) (pollResult, error)
}

// rpcPoller calls Poll and Next through a generated client.
type rpcPoller struct {
	name string
	c    killfeedv1connect.KillfeedServiceClient
}

func (f *feed) rpcPoller(tp transport) rpcPoller {
	return rpcPoller{name: tp.name + "@" + f.name, c: f.client(tp)}
}

func (p rpcPoller) Name() string { return p.name }

func (p rpcPoller) Poll(ctx context.Context, client string, systems []int64, limit int32, mode killfeedv1.CommitMode) (pollResult, error) {
	resp, err := p.c.Poll(ctx, connect.NewRequest(&killfeedv1.PollRequest{ClientId: client, SystemIds: systems, Limit: limit, CommitMode: mode}))
	if err != nil {
		return pollResult{}, err
	}
	return pollResult{Events: protoEvents(resp.Msg.GetEvents()), Gaps: gapsFromProto(resp.Msg.GetGaps()), More: resp.Msg.GetMore()}, nil
}

func (p rpcPoller) Next(ctx context.Context, client string, systems []int64, mode killfeedv1.CommitMode) (pollResult, error) {
	resp, err := p.c.Next(ctx, connect.NewRequest(&killfeedv1.NextRequest{ClientId: client, SystemIds: systems, CommitMode: mode}))
	if err != nil {
		return pollResult{}, err
	}
	var evs []*killfeedv1.Event
	if ev := resp.Msg.GetEvent(); ev != nil {
		evs = append(evs, ev)
	}
	return pollResult{Events: protoEvents(evs), Gaps: gapsFromProto(resp.Msg.GetGaps())}, nil
}

// protoEvents converts without a testing.TB; a killmail that cannot be
// re-encoded becomes invalid JSON, which the comparison reports.
func protoEvents(evs []*killfeedv1.Event) []got {
	out := make([]got, 0, len(evs))
	for _, ev := range evs {
		b, err := json.Marshal(ev.GetKillmail().AsMap())
		if err != nil {
			b = fmt.Appendf(nil, "<not JSON: %v>", err)
		}
		out = append(out, got{EventID: ev.GetEventId(), SystemID: ev.GetSystemId(), Killmail: b})
	}
	return out
}

// restPoller calls the seed REST routes GET /api/killfeed and
// /api/killfeed/next, as curl would.
type restPoller struct {
	name string
	base string
	hc   *http.Client
}

func (f *feed) restPoller() restPoller {
	return restPoller{name: "rest@" + f.name, base: f.baseURL(), hc: http1Client()}
}

func (p restPoller) Name() string { return p.name }

func restQuery(client string, systems []int64, mode killfeedv1.CommitMode) url.Values {
	q := url.Values{"client_id": {client}}
	for _, s := range systems {
		q.Add("systems[]", strconv.FormatInt(s, 10))
	}
	if mode == killfeedv1.CommitMode_COMMIT_MODE_EXPLICIT {
		q.Set("commit_mode", "explicit")
	}
	return q
}

func (p restPoller) Poll(ctx context.Context, client string, systems []int64, limit int32, mode killfeedv1.CommitMode) (pollResult, error) {
	q := restQuery(client, systems, mode)
	if limit > 0 {
		q.Set("limit", strconv.Itoa(int(limit)))
	}
	status, body, _, err := httpGet(ctx, p.hc, p.base+"/api/killfeed?"+q.Encode())
	if err != nil {
		return pollResult{}, err
	}
	if status != http.StatusOK {
		return pollResult{}, httpError(status, body)
	}
	var resp struct {
		Events []jsonEvent `json:"events"`
		More   bool        `json:"more"`
		Gaps   []gotGap    `json:"gaps"`
	}
	if err := strictJSON(body, &resp); err != nil {
		return pollResult{}, fmt.Errorf("GET /api/killfeed answered %s: %w", body, err)
	}
	if resp.Events == nil || resp.Gaps == nil {
		return pollResult{}, fmt.Errorf("GET /api/killfeed answered %s; want events and gaps as arrays", body)
	}
	var out pollResult
	for _, e := range resp.Events {
		out.Events = append(out.Events, e.got())
	}
	out.Gaps, out.More = resp.Gaps, resp.More
	return out, nil
}

func (p restPoller) Next(ctx context.Context, client string, systems []int64, mode killfeedv1.CommitMode) (pollResult, error) {
	status, body, hdr, err := httpGet(ctx, p.hc, p.base+"/api/killfeed/next?"+restQuery(client, systems, mode).Encode())
	if err != nil {
		return pollResult{}, err
	}
	var out pollResult
	switch status {
	case http.StatusNoContent:
		if len(body) != 0 {
			return out, fmt.Errorf("GET /api/killfeed/next answered 204 with a body: %q", body)
		}
		if h := hdr.Get("Killfeed-Gaps"); h != "" {
			var g struct {
				Gaps []gotGap `json:"gaps"`
			}
			if err := strictJSON([]byte(h), &g); err != nil {
				return out, fmt.Errorf("Killfeed-Gaps header %q: %w", h, err)
			}
			out.Gaps = g.Gaps
		}
		return out, nil
	case http.StatusOK:
		var ev struct {
			jsonEvent
			Gaps []gotGap `json:"gaps"`
		}
		if err := strictJSON(body, &ev); err != nil {
			return out, fmt.Errorf("GET /api/killfeed/next answered %s: %w", body, err)
		}
		out.Events, out.Gaps = []got{ev.got()}, ev.Gaps
		return out, nil
	}
	return out, httpError(status, body)
}

// rawConnectPoller calls Poll and Next as Connect unary JSON over HTTP/1.1
// with plain HTTP (curl's view), so the killmail bytes on the wire are seen.
type rawConnectPoller struct {
	name string
	base string
	hc   *http.Client
}

func (f *feed) rawConnectPoller() rawConnectPoller {
	return rawConnectPoller{name: "connect-json-raw@" + f.name, base: f.baseURL(), hc: http1Client()}
}

func (p rawConnectPoller) Name() string { return p.name }

func (p rawConnectPoller) call(ctx context.Context, method string, req any, resp any) error {
	body, _ := json.Marshal(req)
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, p.base+"/killfeed.v1.KillfeedService/"+method, bytes.NewReader(body))
	if err != nil {
		return err
	}
	r.Header.Set("Content-Type", "application/json")
	res, err := p.hc.Do(r)
	if err != nil {
		return connect.NewError(connect.CodeUnavailable, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return connect.NewError(connect.CodeUnavailable, err)
	}
	if res.StatusCode != http.StatusOK {
		return httpError(res.StatusCode, b)
	}
	if err := strictJSON(b, resp); err != nil {
		return fmt.Errorf("%s answered %s: %w", method, b, err)
	}
	return nil
}

type rawRequest struct {
	ClientID   string  `json:"client_id"`
	SystemIDs  []int64 `json:"system_ids"`
	Limit      int32   `json:"limit,omitempty"`
	CommitMode string  `json:"commit_mode,omitempty"`
}

func rawMode(mode killfeedv1.CommitMode) string {
	if mode == killfeedv1.CommitMode_COMMIT_MODE_UNSPECIFIED {
		return ""
	}
	return mode.String()
}

func (p rawConnectPoller) Poll(ctx context.Context, client string, systems []int64, limit int32, mode killfeedv1.CommitMode) (pollResult, error) {
	var resp struct {
		Events []jsonEvent `json:"events"`
		More   bool        `json:"more"`
		Gaps   []gotGap    `json:"gaps"`
	}
	if err := p.call(ctx, "Poll", rawRequest{client, systems, limit, rawMode(mode)}, &resp); err != nil {
		return pollResult{}, err
	}
	var out pollResult
	for _, e := range resp.Events {
		out.Events = append(out.Events, e.got())
	}
	out.Gaps, out.More = resp.Gaps, resp.More
	return out, nil
}

func (p rawConnectPoller) Next(ctx context.Context, client string, systems []int64, mode killfeedv1.CommitMode) (pollResult, error) {
	var resp struct {
		Event *jsonEvent `json:"event"`
		Gaps  []gotGap   `json:"gaps"`
	}
	if err := p.call(ctx, "Next", rawRequest{ClientID: client, SystemIDs: systems, CommitMode: rawMode(mode)}, &resp); err != nil {
		return pollResult{}, err
	}
	out := pollResult{Gaps: resp.Gaps}
	if resp.Event != nil {
		out.Events = []got{resp.Event.got()}
	}
	return out, nil
}

func httpGet(ctx context.Context, hc *http.Client, u string) (int, []byte, http.Header, error) {
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, nil, nil, err
	}
	res, err := hc.Do(r)
	if err != nil {
		return 0, nil, nil, connect.NewError(connect.CodeUnavailable, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return 0, nil, nil, connect.NewError(connect.CodeUnavailable, err)
	}
	return res.StatusCode, b, res.Header, nil
}

// httpError turns a REST or Connect error answer into a *connect.Error with
// the code the body names.
func httpError(status int, body []byte) error {
	var e struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	_ = json.Unmarshal(body, &e)
	code := connect.CodeUnknown
	if e.Code != "" {
		_ = code.UnmarshalText([]byte(e.Code))
	}
	return connect.NewError(code, fmt.Errorf("HTTP %d: %s", status, strings.TrimSpace(string(body))))
}

// strictJSON decodes exactly one JSON value, refusing unknown fields.
func strictJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

// stream reads a Subscribe stream in the background, so a test can wait for
// its next message with a deadline.
type stream struct {
	name   string
	msgs   chan *killfeedv1.SubscribeResponse
	cancel context.CancelFunc
	done   chan struct{}
	err    error // why the stream ended; valid once done is closed
}

// subscribe opens a stream; it is closed when the test ends.
func subscribe(t testing.TB, name string, c killfeedv1connect.KillfeedServiceClient, req *killfeedv1.SubscribeRequest) *stream {
	t.Helper()
	ctx, cancel := context.WithCancel(testContext(t))
	s := &stream{name: name, msgs: make(chan *killfeedv1.SubscribeResponse, 1024), cancel: cancel, done: make(chan struct{})}
	st, err := c.Subscribe(ctx, connect.NewRequest(req))
	if err != nil {
		cancel()
		t.Fatalf("%s: Subscribe: %v", name, err)
	}
	go func() {
		defer close(s.done)
		defer close(s.msgs)
		for st.Receive() {
			s.msgs <- st.Msg()
		}
		s.err = st.Err()
		_ = st.Close()
	}()
	t.Cleanup(s.close)
	return s
}

// close hangs up and waits for the reader to stop.
func (s *stream) close() {
	s.cancel()
	for range s.msgs { // unblock the reader
	}
	<-s.done
}

// next returns the next message, or nil and the stream's error if it ended;
// it fails the test if nothing comes within timeout.
func (s *stream) next(t testing.TB, timeout time.Duration) (*killfeedv1.SubscribeResponse, error) {
	t.Helper()
	select {
	case m, ok := <-s.msgs:
		if !ok {
			<-s.done
			if s.err == nil {
				return nil, io.EOF
			}
			return nil, s.err
		}
		return m, nil
	case <-time.After(timeout):
		t.Fatalf("%s: no message within %s", s.name, timeout)
		return nil, nil
	}
}

// untilBackfillDone returns the events and gaps a stream sends before its
// backfill_done marker.
func (s *stream) untilBackfillDone(t testing.TB, timeout time.Duration) ([]got, []gotGap) {
	t.Helper()
	var evs []got
	var gaps []gotGap
	for {
		m, err := s.next(t, timeout)
		if m == nil {
			t.Fatalf("%s: stream ended before backfill_done: %v", s.name, err)
		}
		switch {
		case m.GetBackfillDone() != nil:
			return evs, gaps
		case m.GetEvents() != nil:
			evs = append(evs, protoEvents(m.GetEvents().GetEvents())...)
		case m.GetGap() != nil:
			gaps = append(gaps, gapsFromProto([]*killfeedv1.Gap{m.GetGap()})...)
		}
	}
}

// events reads until n events have arrived, skipping heartbeats.
func (s *stream) events(t testing.TB, n int, timeout time.Duration) []got {
	t.Helper()
	var evs []got
	for len(evs) < n {
		m, err := s.next(t, timeout)
		if m == nil {
			t.Fatalf("%s: stream ended after %d of %d events: %v", s.name, len(evs), n, err)
		}
		if m.GetGap() != nil {
			t.Fatalf("%s: unexpected loss report %v", s.name, m.GetGap())
		}
		evs = append(evs, protoEvents(m.GetEvents().GetEvents())...)
	}
	return evs
}

// quiet checks that a stream sends no event for d (heartbeats are fine).
func (s *stream) quiet(t testing.TB, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case m, ok := <-s.msgs:
			if !ok {
				<-s.done
				t.Fatalf("%s: stream ended: %v", s.name, s.err)
			}
			if len(m.GetEvents().GetEvents()) > 0 || m.GetGap() != nil {
				t.Fatalf("%s: got %v; want nothing more", s.name, m)
			}
		case <-deadline:
			return
		}
	}
}

// --- what the topic holds ---------------------------------------------------------

// stored is a killmail as the killmails topic holds it.
type stored struct {
	EventID  int64
	SystemID int64
	Value    []byte
}

// eventID is the event id the API documents: offset<<10 | partition.
func eventID(partition int32, offset int64) int64 { return offset<<10 | int64(partition) }

// truth is the killmails topic's content by event id: what every client
// must get.
type truth map[int64]stored

// readTopic reads the n records of a killmails topic.
func readTopic(t testing.TB, topic string, n int) truth {
	t.Helper()
	out := truth{}
	for _, r := range consumeAll(t, topic, n) {
		sys, err := killmail.ParseKey(r.Key)
		if err != nil {
			t.Fatalf("record %d/%d: %v", r.Partition, r.Offset, err)
		}
		out[eventID(r.Partition, r.Offset)] = stored{EventID: eventID(r.Partition, r.Offset), SystemID: sys, Value: r.Value}
	}
	if len(out) != n {
		t.Fatalf("topic %s: read %d records; want %d", topic, len(out), n)
	}
	return out
}

// systems lists the systems the topic has killmails in.
func (tr truth) systems() []int64 {
	set := map[int64]bool{}
	for _, s := range tr {
		set[s.SystemID] = true
	}
	return slices.Sorted(maps.Keys(set))
}

// killmailID reads killmail_id from a killmail's JSON.
func killmailID(b []byte) int64 {
	var v struct {
		ID int64 `json:"killmail_id"`
	}
	_ = json.Unmarshal(b, &v)
	return v.ID
}

// sameKillmail compares a received killmail with the stored one: byte for
// byte when the transport carries JSON, as the same JSON value otherwise.
func sameKillmail(g got, want []byte) error {
	if g.Exact {
		if !bytes.Equal(g.Killmail, want) {
			return fmt.Errorf("killmail bytes differ\n got %s\nwant %s", g.Killmail, want)
		}
		return nil
	}
	var a, b any
	if err := json.Unmarshal(g.Killmail, &a); err != nil {
		return fmt.Errorf("killmail %s: %v", g.Killmail, err)
	}
	if err := json.Unmarshal(want, &b); err != nil {
		return fmt.Errorf("stored killmail %s: %v", want, err)
	}
	if !reflect.DeepEqual(a, b) {
		return fmt.Errorf("killmail differs\n got %s\nwant %s", g.Killmail, want)
	}
	return nil
}

// checkExactlyOnce checks that evs holds every event of want exactly once,
// each with its stored system and killmail, each system's events in event id
// order, and nothing else.
func checkExactlyOnce(t testing.TB, who string, evs []got, want truth) {
	t.Helper()
	count := map[int64]int{}
	last := map[int64]int64{}
	bad := 0
	for _, g := range evs {
		count[g.EventID]++
		w, ok := want[g.EventID]
		switch {
		case !ok:
			t.Errorf("%s: event %d is not one of the expected killmails", who, g.EventID)
			bad++
		case g.SystemID != w.SystemID:
			t.Errorf("%s: event %d has system %d; the record's key is %d", who, g.EventID, g.SystemID, w.SystemID)
			bad++
		default:
			if err := sameKillmail(g, w.Value); err != nil {
				t.Errorf("%s: event %d: %v", who, g.EventID, err)
				bad++
			}
		}
		if l, ok := last[g.SystemID]; ok && g.EventID <= l {
			t.Errorf("%s: system %d: event %d after %d; want increasing event ids", who, g.SystemID, g.EventID, l)
			bad++
		}
		last[g.SystemID] = g.EventID
		if bad > 10 {
			t.Fatalf("%s: too many errors", who)
		}
	}
	var dup, missing []int64
	for id, n := range count {
		if n > 1 {
			dup = append(dup, id)
		}
	}
	for id := range want {
		if count[id] == 0 {
			missing = append(missing, id)
		}
	}
	slices.Sort(dup)
	slices.Sort(missing)
	if len(dup) > 0 {
		t.Errorf("%s: %d events delivered more than once: %v", who, len(dup), head(dup))
	}
	if len(missing) > 0 {
		t.Errorf("%s: %d of %d events never delivered: %v", who, len(missing), len(want), head(missing))
	}
}

func head(ids []int64) []int64 { return ids[:min(len(ids), 20)] }

// subset returns the events of tr that keep accepts.
func (tr truth) subset(keep func(stored) bool) truth {
	out := truth{}
	for id, s := range tr {
		if keep(s) {
			out[id] = s
		}
	}
	return out
}

// --- producing ----------------------------------------------------------------------

// testKillmail returns a small ESI killmail with a zkb block, in the shape
// killfeed stores after normalising.
func testKillmail(id, system int64) []byte {
	return fmt.Appendf(nil, `{"killmail_id":%d,"killmail_time":"2026-11-24T04:00:00Z","solar_system_id":%d,`+
		`"victim":{"character_id":2112625428,"ship_type_id":587,"damage_taken":2846},`+
		`"attackers":[{"character_id":2116199184,"final_blow":true,"ship_type_id":17738}],`+
		`"zkb":{"locationID":50014064,"hash":"d3b07384d113edec49eaa6238ad5ff00","totalValue":12345678.9,"points":1,"npc":false,"solo":true,"awox":false}}`, id, system)
}

// produceRecords writes records with franz-go and fails the test unless
// Kafka acknowledges them all.
func produceRecords(t testing.TB, cl *kgo.Client, recs ...*kgo.Record) {
	t.Helper()
	if err := cl.ProduceSync(testContext(t), recs...).FirstErr(); err != nil {
		t.Fatalf("producing %d records: %v", len(recs), err)
	}
}

// keyed returns a killmails record for system.
func keyed(topic string, system int64, value []byte) *kgo.Record {
	return &kgo.Record{Topic: topic, Key: killmail.Key(system), Value: value}
}

// kcatProduce writes "key:value" lines to topic with kcat, as an operator
// would, using Kafka's murmur2 partitioner like every killfeed producer.
func kcatProduce(t testing.TB, topic string, lines []string) {
	t.Helper()
	kcat := requireTool(t, "kcat")
	argv := []string{"-P", "-b", brokerAddr(), "-t", topic, "-K:", "-X", "topic.partitioner=murmur2_random"}
	cmd := exec.CommandContext(testContext(t), kcat, argv...)
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("kcat %s: %v\n%s", strings.Join(argv, " "), err, out.Bytes())
	}
	if bytes.Contains(out.Bytes(), []byte("ERROR")) || bytes.Contains(out.Bytes(), []byte("failed")) {
		t.Fatalf("kcat %s reported errors:\n%s", strings.Join(argv, " "), out.Bytes())
	}
}

// endOffsets returns the end offset of each partition of topic.
func endOffsets(t testing.TB, adm *kadm.Client, topic string) map[int32]int64 {
	t.Helper()
	return listOffsets(t, topic, func(ctx context.Context) (kadm.ListedOffsets, error) { return adm.ListEndOffsets(ctx, topic) })
}

// startOffsets returns the log start offset of each partition of topic.
func startOffsets(t testing.TB, adm *kadm.Client, topic string) map[int32]int64 {
	t.Helper()
	return listOffsets(t, topic, func(ctx context.Context) (kadm.ListedOffsets, error) { return adm.ListStartOffsets(ctx, topic) })
}

func listOffsets(t testing.TB, topic string, list func(context.Context) (kadm.ListedOffsets, error)) map[int32]int64 {
	t.Helper()
	l, err := list(testContext(t))
	if err == nil {
		err = l.Error()
	}
	if err != nil {
		t.Fatalf("listing offsets of %s: %v", topic, err)
	}
	out := map[int32]int64{}
	l.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out
}

// eventually calls f until it returns nil, failing the test with f's last
// error if that takes longer than timeout.
func eventually(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// codeOf returns the Connect code of err, or CodeUnknown.
func codeOf(err error) connect.Code {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Code()
	}
	return connect.CodeUnknown
}

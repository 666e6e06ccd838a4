// Command goclient is an example killfeed client, written to be copied: it
// follows solar systems over a Subscribe stream in explicit commit mode,
// prints every killmail, commits after processing, and when the stream
// breaks reconnects with exponential backoff and continues from the
// positions the server keeps for its client id. It keeps no state on disk.
//
//	go run ./docs/examples/goclient --url http://127.0.0.1:8080 \
//	    --client-id my-tool --systems 30000142,30002187
//
// When the server requires API keys, pass yours with --api-key or the
// KILLFEED_API_KEY environment variable.
//
// Every processed killmail is one line on standard output; what happens to
// the stream (backfill done, reconnects, lost events) is logged on standard
// error. See docs/killfeed_example.md for the guarantees this relies on.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	killfeedv1 "github.com/killfeed/killfeed/proto/killfeed/v1"
	"github.com/killfeed/killfeed/proto/killfeed/v1/killfeedv1connect"
)

func main() {
	url := flag.String("url", "http://127.0.0.1:8080", "killfeed base URL")
	clientID := flag.String("client-id", "", "your client id; the server keeps your positions under it (required)")
	systems := flag.String("systems", "", "comma-separated solar system ids to follow (required)")
	protocol := flag.String("protocol", "grpc", `"grpc" or "connect"`)
	maxEvents := flag.Int("max-events", 0, "exit after processing this many events (0: run until interrupted)")
	heartbeat := flag.Int("heartbeat-seconds", 15, "heartbeat interval asked of the server while idle, 1 to 300")
	apiKey := flag.String("api-key", os.Getenv("KILLFEED_API_KEY"), "API key, when the server requires one (default $KILLFEED_API_KEY)")
	flag.Parse()

	ids, err := parseSystems(*systems)
	switch {
	case err != nil:
	case *clientID == "":
		err = errors.New("--client-id is required")
	case *heartbeat < 1 || *heartbeat > 300:
		err = errors.New("--heartbeat-seconds must be 1 to 300")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "goclient:", err)
		flag.Usage()
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg := Config{
		URL:       *url,
		ClientID:  *clientID,
		Systems:   ids,
		Protocol:  *protocol,
		MaxEvents: *maxEvents,
		APIKey:    *apiKey,
		Heartbeat: time.Duration(*heartbeat) * time.Second,
		Logger:    slog.New(slog.NewTextHandler(os.Stderr, nil)),
	}
	err = Run(ctx, cfg, func(_ context.Context, k Kill) error {
		_, err := fmt.Printf("killmail %d system %d value %s event %d\n", k.KillmailID, k.SystemID, formatISK(k.TotalValue), k.EventID)
		return err
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "goclient:", err)
		os.Exit(1)
	}
}

// Config says what to follow and how to reach killfeed.
type Config struct {
	// URL is killfeed's base URL, e.g. "http://127.0.0.1:8080".
	URL string
	// ClientID names this consumer. The server keeps one position per
	// followed system under it: reconnecting with the same id continues
	// where the last commit left off.
	ClientID string
	// Systems are the solar system ids to follow.
	Systems []int64
	// Protocol is "grpc" (the default) or "connect".
	Protocol string
	// APIKey is sent as "Authorization: Bearer <key>" when set. Servers
	// with authentication on bind each key to a client_id prefix.
	APIKey string
	// MaxEvents, when positive, makes Run return nil once this many events
	// have been processed and committed.
	MaxEvents int
	// Heartbeat is the interval asked of the server while the stream is idle
	// (default 15s; whole seconds from 1s to 300s). A stream silent for three
	// intervals is treated as dead: a half-open TCP connection can otherwise
	// hang forever.
	Heartbeat time.Duration
	// MinBackoff and MaxBackoff bound the wait before reconnecting (default
	// 500ms and 30s). The wait doubles after each failed attempt and starts
	// over once a stream has delivered something.
	MinBackoff, MaxBackoff time.Duration
	// HTTPClient carries the calls. Default: HTTP/2 (with TLS for https://,
	// h2c for http://) and no overall timeout, as streams are long-lived.
	HTTPClient *http.Client
	// Logger receives what happens to the stream. Default: discard.
	Logger *slog.Logger
}

// Kill is one processed killmail.
type Kill struct {
	// EventID is killfeed's id of the event: increasing within a system,
	// unique in the feed. Use it (or KillmailID) to make processing
	// idempotent.
	EventID int64
	// SystemID is the solar system.
	SystemID int64
	// KillmailID is ESI's killmail_id.
	KillmailID int64
	// TotalValue is zKillboard's zkb.totalValue in ISK, 0 when absent.
	TotalValue float64
	// Killmail is the whole killmail: the ESI killmail with the zkb block.
	Killmail *structpb.Struct
}

// errEnough ends Run when MaxEvents have been processed and committed.
var errEnough = errors.New("processed the requested number of events")

// errSilent ends a stream that has sent nothing for three heartbeats.
var errSilent = errors.New("no message from the server for three heartbeat intervals")

// processError is an error of the caller's process function: Run stops on
// it rather than reconnecting.
type processError struct{ err error }

func (e *processError) Error() string { return "processing: " + e.err.Error() }
func (e *processError) Unwrap() error { return e.err }

// Run consumes the feed until ctx is cancelled (it then returns ctx's
// error), MaxEvents have been processed (nil), process fails (that error),
// the server refuses the request (invalid, unauthenticated, not permitted:
// that error), or another consumer subscribes with the same client id (the
// server then ends this stream with aborted: that error). Every other
// failure — the connection drops, the service restarts or drains, a rate or
// stream limit, a commit fails — is retried: Run reconnects with backoff and
// the server resumes the stream from the last committed positions.
//
// process is called once per event, in order within each system. Events are
// committed after process returns, one Commit per received batch. A commit
// that fails is retried before resubscribing, so within one Run no event is
// processed twice; but if this process dies between process and Commit, the
// next run receives those events again (at-least-once): process
// idempotently, keyed by event id or killmail id.
func Run(ctx context.Context, cfg Config, process func(context.Context, Kill) error) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	var opts []connect.ClientOption
	if cfg.Protocol == "grpc" {
		opts = append(opts, connect.WithGRPC())
	}
	c := &consumer{
		cfg:     cfg,
		log:     cfg.Logger,
		client:  killfeedv1connect.NewKillfeedServiceClient(cfg.HTTPClient, cfg.URL, opts...),
		process: process,
		pending: map[int64]int64{},
	}

	backoff := cfg.MinBackoff
	for {
		delivered, err := c.stream(ctx)
		if errors.Is(err, errEnough) {
			return nil
		}
		if ctx.Err() != nil {
			return c.shutdown(ctx)
		}
		if !retryable(err) {
			if connect.CodeOf(err) == connect.CodeAborted {
				return fmt.Errorf("another consumer subscribed with client id %q: %w", cfg.ClientID, err)
			}
			return err
		}
		if delivered {
			backoff = cfg.MinBackoff
		}
		// Full jitter spreads the reconnects of many clients after an
		// outage.
		wait := time.Duration(rand.Int64N(int64(backoff))) + time.Millisecond
		c.log.Warn("stream ended; reconnecting", "err", err, "in", wait.Round(time.Millisecond))
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return c.shutdown(ctx)
		}
		backoff = min(2*backoff, cfg.MaxBackoff)
	}
}

func (cfg Config) withDefaults() (Config, error) {
	if cfg.ClientID == "" || len(cfg.Systems) == 0 {
		return cfg, errors.New("a client id and at least one system are required")
	}
	switch cfg.Protocol {
	case "":
		cfg.Protocol = "grpc"
	case "grpc", "connect":
	default:
		return cfg, fmt.Errorf("protocol %q: want grpc or connect", cfg.Protocol)
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 15 * time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 500 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(30*time.Second, cfg.MinBackoff)
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = newHTTPClient()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg, nil
}

// newHTTPClient returns a client speaking HTTP/2, which gRPC requires: over
// TLS for https:// URLs and as h2c (prior knowledge) for http:// URLs.
func newHTTPClient() *http.Client {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: 10 * time.Second,
	}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP2(true)
	tr.Protocols.SetUnencryptedHTTP2(true)
	// No Timeout: it would cut every stream after that long.
	return &http.Client{Transport: tr}
}

// retryable reports whether reconnecting may help. A request the server
// calls invalid (a bad client id or system id) or unauthorised will be
// refused again; aborted means another consumer took over this client id,
// and reconnecting would only take it back and forth. Everything else
// (unavailable, resource_exhausted from a limit, a dropped connection) is
// worth retrying after a backoff.
func retryable(err error) bool {
	var pe *processError
	if errors.As(err, &pe) {
		return false
	}
	switch connect.CodeOf(err) {
	case connect.CodeInvalidArgument, connect.CodeUnauthenticated, connect.CodePermissionDenied,
		connect.CodeUnimplemented, connect.CodeAborted:
		return false
	}
	return true
}

// request wraps a message, with the API key when there is one.
func request[T any](cfg Config, msg *T) *connect.Request[T] {
	req := connect.NewRequest(msg)
	if cfg.APIKey != "" {
		req.Header().Set("Authorization", "Bearer "+cfg.APIKey)
	}
	return req
}

// consumer is the state of one Run.
type consumer struct {
	cfg     Config
	log     *slog.Logger
	client  killfeedv1connect.KillfeedServiceClient
	process func(context.Context, Kill) error
	// pending is the last processed but not yet committed event per system.
	pending   map[int64]int64
	processed int
}

// stream runs one Subscribe stream until it fails. delivered reports
// whether the server sent anything, i.e. whether the connection worked.
func (c *consumer) stream(ctx context.Context) (delivered bool, err error) {
	// Commits that failed with the previous connection go first, so the new
	// stream starts exactly after what was processed.
	if err := c.commitPending(ctx); err != nil {
		return false, err
	}
	if c.enough() {
		return false, errEnough
	}

	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	beat := max(1, min(300, int32(c.cfg.Heartbeat/time.Second))) // what the server accepts
	silence := 3 * time.Duration(beat) * time.Second
	watchdog := time.AfterFunc(silence, func() { cancel(errSilent) })
	defer watchdog.Stop()

	s, err := c.client.Subscribe(sctx, request(c.cfg, &killfeedv1.SubscribeRequest{
		ClientId:         c.cfg.ClientID,
		SystemIds:        c.cfg.Systems,
		CommitMode:       killfeedv1.CommitMode_COMMIT_MODE_EXPLICIT,
		HeartbeatSeconds: beat,
	}))
	if err != nil {
		return false, err
	}
	defer s.Close()

	for s.Receive() {
		// The silence that counts is the server's, not our processing time.
		watchdog.Stop()
		if !delivered {
			delivered = true
			c.log.Info("subscribed", "url", c.cfg.URL, "client_id", c.cfg.ClientID, "systems", len(c.cfg.Systems))
		}
		switch m := s.Msg().GetKind().(type) {
		case *killfeedv1.SubscribeResponse_Events:
			if err := c.handle(ctx, m.Events.GetEvents()); err != nil {
				return true, err
			}
		case *killfeedv1.SubscribeResponse_BackfillDone:
			c.log.Info("backfill done; events from now on are live")
		case *killfeedv1.SubscribeResponse_Heartbeat:
			c.log.Debug("heartbeat", "server_time", m.Heartbeat.GetTime().AsTime())
		case *killfeedv1.SubscribeResponse_Gap:
			g := m.Gap
			lost := "unknown"
			if g.GetLostEvents() > 0 {
				lost = strconv.FormatInt(g.GetLostEvents(), 10)
			}
			// Kafka's retention removed these before this client read them.
			// A tool that must not miss kills could backfill the system
			// from zKillboard here.
			c.log.Warn("events lost", "system", g.GetSystemId(),
				"from_event_id", g.GetFromEventId(), "to_event_id", g.GetToEventId(), "lost_events", lost)
		}
		watchdog.Reset(silence)
	}
	if errors.Is(context.Cause(sctx), errSilent) {
		return delivered, errSilent
	}
	if err := s.Err(); err != nil {
		return delivered, err
	}
	return delivered, errors.New("the server ended the stream")
}

// handle processes one batch, then commits it: the last event of each
// system in the batch.
func (c *consumer) handle(ctx context.Context, events []*killfeedv1.Event) error {
	var stop error
	for _, ev := range events {
		if ctx.Err() != nil || c.enough() {
			break
		}
		if err := c.process(ctx, toKill(ev)); err != nil {
			stop = &processError{err}
			break
		}
		c.pending[ev.GetSystemId()] = ev.GetEventId()
		c.processed++
	}
	if err := c.commitPending(ctx); err != nil && stop == nil {
		stop = err
	}
	if stop == nil && c.enough() {
		stop = errEnough
	}
	return stop
}

// commitPending commits every processed event not yet committed. It runs
// even while ctx is being cancelled, so a clean shutdown loses no commit.
func (c *consumer) commitPending(ctx context.Context) error {
	if len(c.pending) == 0 {
		return nil
	}
	cursors := make([]*killfeedv1.Cursor, 0, len(c.pending))
	for sys, ev := range c.pending {
		cursors = append(cursors, &killfeedv1.Cursor{SystemId: sys, EventId: ev})
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, err := c.client.Commit(cctx, request(c.cfg, &killfeedv1.CommitRequest{ClientId: c.cfg.ClientID, Cursors: cursors})); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	clear(c.pending)
	return nil
}

// shutdown commits what was processed, so the next run does not see it
// again, and returns ctx's error.
func (c *consumer) shutdown(ctx context.Context) error {
	if err := c.commitPending(ctx); err != nil {
		c.log.Warn("final commit failed; the next run will see those events again", "err", err)
	}
	return ctx.Err()
}

func (c *consumer) enough() bool { return c.cfg.MaxEvents > 0 && c.processed >= c.cfg.MaxEvents }

// toKill reads the fields this example prints. The killmail is a
// google.protobuf.Struct: JSON numbers are float64, exact for ids.
func toKill(ev *killfeedv1.Event) Kill {
	f := ev.GetKillmail().GetFields()
	return Kill{
		EventID:    ev.GetEventId(),
		SystemID:   ev.GetSystemId(),
		KillmailID: int64(f["killmail_id"].GetNumberValue()),
		TotalValue: f["zkb"].GetStructValue().GetFields()["totalValue"].GetNumberValue(),
		Killmail:   ev.GetKillmail(),
	}
}

// parseSystems reads "30000142,30002187".
func parseSystems(s string) ([]int64, error) {
	var ids []int64
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		id, err := strconv.ParseInt(f, 10, 64)
		if err != nil || id <= 0 {
			return nil, fmt.Errorf("--systems: %q is not a solar system id", f)
		}
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		return nil, errors.New("--systems is required: comma-separated solar system ids")
	}
	return ids, nil
}

// formatISK writes 1234567890 as "1.23B ISK".
func formatISK(v float64) string {
	switch {
	case v >= 1e9:
		return fmt.Sprintf("%.2fB ISK", v/1e9)
	case v >= 1e6:
		return fmt.Sprintf("%.2fM ISK", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.2fK ISK", v/1e3)
	}
	return fmt.Sprintf("%.2f ISK", v)
}

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/killfeed/killfeed/feedsvc"
	"github.com/killfeed/killfeed/internal/broker"
	"github.com/killfeed/killfeed/offsets"
	"github.com/killfeed/killfeed/producer"
)

// serveCmd runs the feed service.
type serveCmd struct {
	Listen             string        `help:"HTTP address serving Connect, gRPC, gRPC-Web and REST." default:"127.0.0.1:8080" env:"KILLFEED_LISTEN"`
	Brokers            []string      `help:"Kafka seed brokers. Empty: run the embedded broker." env:"KILLFEED_BROKERS"`
	DataDir            string        `help:"Embedded broker's data directory (survives restarts)." default:"killfeed-data" env:"KILLFEED_DATA_DIR"`
	KafkaListen        string        `help:"Embedded broker's Kafka address, for kcat and other producers." default:"127.0.0.1:9092" env:"KILLFEED_KAFKA_LISTEN"`
	OffsetsTopic       string        `help:"Compacted topic holding clients' positions." default:"killfeed-offsets" env:"KILLFEED_OFFSETS_TOPIC"`
	OffsetsRetention   time.Duration `help:"Idle time after which a client's positions expire." default:"168h" env:"KILLFEED_OFFSETS_RETENTION"`
	MaxEventsPerSystem int           `help:"Events held in memory per system; older ones are read from Kafka when needed." default:"10000" env:"KILLFEED_MAX_EVENTS_PER_SYSTEM"`
	MaxSystems         int           `help:"Most systems in one request." default:"1000" env:"KILLFEED_MAX_SYSTEMS"`
	TrimConsumed       bool          `help:"Delete records every client has consumed (DeleteRecords), like the seeds' GC." env:"KILLFEED_TRIM_CONSUMED"`
	SyncPositions      *bool         `help:"Catch up with other replicas' commits before each request (default: on with --brokers, off embedded)." env:"KILLFEED_SYNC_POSITIONS"`
	Heartbeat          time.Duration `help:"Default heartbeat interval of idle Subscribe streams." default:"15s" env:"KILLFEED_HEARTBEAT"`
	AuthKeys           string        `help:"File of API keys (one \"<key> <client_id prefix>\" per line); turns authentication on. Reloaded when it changes." type:"path" env:"KILLFEED_AUTH_KEYS"`
	TLSCert            string        `help:"TLS certificate file (PEM); with --tls-key serves HTTPS (HTTP/2 by ALPN)." type:"path" env:"KILLFEED_TLS_CERT"`
	TLSKey             string        `help:"TLS private key file (PEM)." type:"path" env:"KILLFEED_TLS_KEY"`
	RateLimit          float64       `help:"Requests per second per API key (per IP without auth); 0 for no limit." default:"50" env:"KILLFEED_RATE_LIMIT"`
	RateBurst          int           `help:"Requests allowed in a burst above --rate-limit." default:"100" env:"KILLFEED_RATE_BURST"`
	MaxStreamsPerKey   int           `help:"Open Subscribe streams per API key; 0 for no limit." default:"100" env:"KILLFEED_MAX_STREAMS_PER_KEY"`
	MaxStreamsPerIP    int           `help:"Open Subscribe streams per client IP; 0 for no limit." default:"200" env:"KILLFEED_MAX_STREAMS_PER_IP"`
	MaxRequestBytes    int           `help:"Largest request body accepted." default:"1048576" env:"KILLFEED_MAX_REQUEST_BYTES"`
	MaxLimit           int           `help:"Largest Poll limit a client may ask for." default:"10000" env:"KILLFEED_MAX_LIMIT"`
	Metrics            bool          `help:"Serve Prometheus metrics at /metrics." default:"true" negatable:"" env:"KILLFEED_METRICS"`

	// Source defaults to zKillboard's live feed, so that `killfeed serve`
	// alone is a working service; produce has no default.
	Source string `help:"Where killmails come from: r2z2 (zKillboard's live feed), none, synthetic (generated) or file (NDJSON, see --file)." enum:"none,r2z2,synthetic,file" default:"r2z2" env:"KILLFEED_SOURCE"`

	topicFlags  `embed:""`
	sourceFlags `embed:""`
}

// Validate checks the flags that depend on each other.
func (c *serveCmd) Validate() error {
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	return c.sourceFlags.validate(c.Source)
}

// Run starts the broker (if embedded), the positions store, the feed service
// and the HTTP server, and stops them in reverse order on SIGINT/SIGTERM.
func (c *serveCmd) Run(ctx context.Context, log *slog.Logger) error {
	brokers := c.Brokers
	if len(brokers) == 0 {
		b, err := broker.Start(broker.Options{Listen: c.KafkaListen, DataDir: c.DataDir, Logger: log})
		if err != nil {
			return err
		}
		defer b.Close()
		brokers = []string{b.Addr()}
	}
	sync := len(c.Brokers) > 0
	if c.SyncPositions != nil {
		sync = *c.SyncPositions
	}

	// producer.ClientOpts: the built-in source retries through a Kafka
	// restart behind a proxy.
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...)}, producer.ClientOpts()...)...)
	if err != nil {
		return fmt.Errorf("connecting to Kafka %v: %w", brokers, err)
	}
	defer cl.Close()
	if _, err := c.ensure(ctx, cl); err != nil {
		return err
	}
	store, err := offsets.Open(ctx, brokers, offsets.Options{Topic: c.OffsetsTopic, Retention: c.OffsetsRetention, Logger: log})
	if err != nil {
		return err
	}
	defer store.Close()
	var keys *feedsvc.Keys
	if c.AuthKeys != "" {
		if keys, err = feedsvc.LoadKeys(c.AuthKeys); err != nil {
			return err
		}
		go keys.Watch(ctx, 5*time.Second, log)
		log.Info("authentication on", "keys", keys.Len(), "file", c.AuthKeys)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	svc, err := feedsvc.New(ctx, store, feedsvc.Options{
		Brokers:              brokers,
		Topic:                c.Topic,
		MaxEventsPerSystem:   c.MaxEventsPerSystem,
		MaxSystemsPerRequest: c.MaxSystems,
		SyncPositions:        sync,
		TrimConsumed:         c.TrimConsumed,
		Heartbeat:            c.Heartbeat,
		Keys:                 keys,
		RequestsPerSecond:    c.RateLimit,
		RequestBurst:         c.RateBurst,
		MaxStreamsPerKey:     c.MaxStreamsPerKey,
		MaxStreamsPerIP:      c.MaxStreamsPerIP,
		MaxRequestBytes:      c.MaxRequestBytes,
		MaxLimit:             c.MaxLimit,
		Registerer:           reg,
		Logger:               log,
	})
	if err != nil {
		return err
	}
	defer svc.Close()

	if c.Source != "none" {
		// The built-in source runs beside the service; when it ends or
		// fails the service keeps serving what is in Kafka. At shutdown it
		// flushes what it read before the Kafka client closes. A bad
		// source configuration fails here, before serving.
		m := &sourceMetrics{}
		m.register(reg, c.Source)
		runSource, err := c.prepare(log, cl, c.Topic, c.Source, m)
		if err != nil {
			return err
		}
		produced := make(chan struct{})
		defer func() { <-produced }()
		go func() {
			defer close(produced)
			if err := runSource(ctx); err != nil {
				log.Error("killmail source stopped", "source", c.Source, "err", err)
			}
		}()
	}

	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", c.Listen, err)
	}
	handler := svc.Handler()
	if c.Metrics {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.Handle("/", handler)
		handler = mux
	}
	srv := feedsvc.NewHTTPServer(c.Listen, handler)
	errc := make(chan error, 1)
	scheme := "http"
	if c.TLSCert != "" {
		scheme = "https"
		srv.Protocols.SetHTTP2(true)
		go func() { errc <- srv.ServeTLS(ln, c.TLSCert, c.TLSKey) }()
	} else {
		go func() { errc <- srv.Serve(ln) }()
	}
	log.Info("killfeed serving", "addr", scheme+"://"+ln.Addr().String(), "brokers", brokers, "topic", c.Topic,
		"sync_positions", sync, "auth", keys != nil, "metrics", c.Metrics)

	select {
	case err := <-errc:
		return fmt.Errorf("serving HTTP: %w", err)
	case <-ctx.Done():
	}
	log.Info("killfeed shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Drain ends the streams (clients resume from their positions);
	// Shutdown then waits for unary calls in flight, whose commits complete
	// before they answer; only then do the tail and the store stop.
	svc.Drain()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Warn("HTTP shutdown", "err", err)
	}
	svc.Close()
	log.Info("killfeed stopped")
	return nil
}

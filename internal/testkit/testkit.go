package testkit

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/killfeed/killfeed/feedsvc"
	"github.com/killfeed/killfeed/internal/killmail"
	"github.com/killfeed/killfeed/internal/topics"
	"github.com/killfeed/killfeed/offsets"
)

// Topic is the killmails topic of every Env.
const Topic = "killmails"

// Env is a running killfeed. Create it with Start; it is torn down when the
// test ends.
type Env struct {
	// URL is the service's base URL, "http://127.0.0.1:PORT". It speaks
	// Connect, gRPC and gRPC-Web (HTTP/1.1 and h2c) and the REST routes.
	URL string
	// Brokers are the in-process Kafka broker's addresses, for tests that
	// produce or inspect records themselves.
	Brokers []string

	tb      testing.TB
	cfg     config
	prod    *kgo.Client
	nextKM  atomic.Int64
	mu      sync.Mutex // guards the fields below
	addr    string
	store   *offsets.Store
	svc     *feedsvc.Service
	srv     *http.Server
	ln      *trackingListener
	stopped bool
}

// Option changes how Start builds the Env.
type Option func(*config)

type config struct {
	partitions int32
	svcOpts    feedsvc.Options
}

// WithPartitions sets the killmails topic's partition count (default 4).
func WithPartitions(n int32) Option { return func(c *config) { c.partitions = n } }

// WithServiceOptions sets the feed service's options. Brokers and Topic are
// always the Env's own; every other field is used as given.
func WithServiceOptions(o feedsvc.Options) Option { return func(c *config) { c.svcOpts = o } }

// Start starts a broker, creates the killmails topic, and starts the
// positions store and the feed service on a free 127.0.0.1 port. It fails
// tb if any of that fails. Everything is stopped by tb.Cleanup.
func Start(tb testing.TB, opts ...Option) *Env {
	tb.Helper()
	cfg := config{partitions: 4}
	for _, o := range opts {
		o(&cfg)
	}
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		tb.Fatalf("testkit: starting the in-process broker: %v", err)
	}
	tb.Cleanup(cluster.Close)
	e := &Env{Brokers: cluster.ListenAddrs(), tb: tb, cfg: cfg, addr: "127.0.0.1:0"}
	// Ids in the range zKillboard hands out today, so output looks familiar.
	e.nextKM.Store(130_000_000)

	e.prod, err = kgo.NewClient(kgo.SeedBrokers(e.Brokers...), kgo.DefaultProduceTopic(Topic), kgo.ProducerLinger(0))
	if err != nil {
		tb.Fatalf("testkit: creating the producer: %v", err)
	}
	tb.Cleanup(e.prod.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := topics.EnsureKillmails(ctx, kadm.NewClient(e.prod), topics.Killmails{Name: Topic, Partitions: cfg.partitions}); err != nil {
		tb.Fatalf("testkit: creating topic %q: %v", Topic, err)
	}
	if err := e.start(); err != nil {
		tb.Fatalf("testkit: %v", err)
	}
	tb.Cleanup(e.stop)
	// Set once: a restart serves on the same address.
	e.URL = "http://" + e.addr
	return e
}

// start opens the store and the service and serves them on e.addr, which is
// ":0" the first time and the previous port on a restart.
func (e *Env) start() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, err := offsets.Open(ctx, e.Brokers, offsets.Options{})
	if err != nil {
		return fmt.Errorf("opening the positions store: %w", err)
	}
	o := e.cfg.svcOpts
	o.Brokers, o.Topic = e.Brokers, Topic
	svc, err := feedsvc.New(ctx, store, o)
	if err != nil {
		store.Close()
		return fmt.Errorf("starting the feed service: %w", err)
	}
	ln, err := listen(e.addr)
	if err != nil {
		svc.Close()
		store.Close()
		return err
	}
	srv := feedsvc.NewHTTPServer("", svc.Handler())
	go func() { _ = srv.Serve(ln) }()

	e.mu.Lock()
	defer e.mu.Unlock()
	e.store, e.svc, e.srv, e.ln, e.stopped = store, svc, srv, ln, false
	e.addr = ln.Addr().String()
	return nil
}

// listen listens on addr, retrying briefly: on a restart the previous
// listener's port is normally free at once, but need not be.
func listen(addr string) (*trackingListener, error) {
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var ln net.Listener
		if ln, err = net.Listen("tcp", addr); err == nil {
			return &trackingListener{Listener: ln, conns: map[*trackedConn]struct{}{}}, nil
		}
	}
	return nil, fmt.Errorf("listening on %s: %w", addr, err)
}

// stop shuts the service down as a process exit would: connections are cut,
// streams end, nothing more is committed. It is idempotent.
func (e *Env) stop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		return
	}
	e.stopped = true
	_ = e.srv.Close()
	e.svc.Close()
	e.store.Close()
}

// Restart stops the service as a crash would (every connection is cut) and
// starts a new one on the same broker and the same URL. Clients' positions
// survive, as they do in a real deployment. It fails the test if the new
// service cannot start.
func (e *Env) Restart() {
	e.tb.Helper()
	e.stop()
	if err := e.start(); err != nil {
		e.tb.Fatalf("testkit: restarting: %v", err)
	}
}

// DropConnections closes every client connection the server has accepted,
// as a network failure or a proxy's idle timeout would, while the service
// keeps running and accepting new connections. In-flight streams and calls
// fail on the client with a transport error.
func (e *Env) DropConnections() {
	e.mu.Lock()
	ln := e.ln
	e.mu.Unlock()
	ln.dropAll()
}

// Produce writes one killmail in system to the killmails topic, as the
// producer would (record key killmail.Key(system), value the ESI killmail
// with zKillboard's zkb block), and returns its killmail_id. Ids increase
// from 130000001 and are unique in the Env.
//
// It returns once Kafka has acknowledged the record; the service reads it a
// few milliseconds later, so a Subscribe stream will see it but a Poll issued
// at once may not yet. Produce is safe for concurrent use, from any
// goroutine: a failure is reported with tb.Errorf (not Fatalf) and Produce
// then returns 0.
func (e *Env) Produce(system int64) int64 {
	id := e.nextKM.Add(1)
	r := &kgo.Record{Key: killmail.Key(system), Value: Killmail(id, system, time.Now())}
	if err := e.prod.ProduceSync(context.Background(), r).FirstErr(); err != nil {
		e.tb.Errorf("testkit: producing killmail %d in system %d: %v", id, system, err)
		return 0
	}
	return id
}

// Killmail returns a small but realistic killmail as killfeed stores it: the
// ESI killmail (one victim, one attacker, one item) with zKillboard's zkb
// block. zkb.totalValue varies with id, so printed values differ.
func Killmail(id, system int64, at time.Time) []byte {
	sum := sha1.Sum(strconv.AppendInt(nil, id, 10))
	hash := hex.EncodeToString(sum[:])
	fitted := float64(1_000_000 + (id%997)*10_007)
	dropped := float64((id % 89) * 51_013)
	total := fitted + dropped + 349_999.99
	return fmt.Appendf(nil, `{"attackers":[{"alliance_id":99005338,"character_id":2116199184,"corporation_id":98523546,"damage_done":2846,"final_blow":true,"security_status":-0.3,"ship_type_id":17738,"weapon_type_id":2929}],`+
		`"killmail_id":%d,"killmail_time":%q,"solar_system_id":%d,`+
		`"victim":{"alliance_id":1354830081,"character_id":2112625428,"corporation_id":98356193,"damage_taken":2846,"items":[{"flag":27,"item_type_id":2873,"quantity_destroyed":1,"singleton":0}],"position":{"x":-107303362560.0,"y":-18744975360.0,"z":436489052160.0},"ship_type_id":587},`+
		`"zkb":{"locationID":%d,"hash":%q,"fittedValue":%.2f,"droppedValue":%.2f,"destroyedValue":%.2f,"totalValue":%.2f,"points":1,"npc":false,"solo":true,"awox":false,"labels":["pvp","solo","loc:highsec"]}}`,
		id, at.UTC().Format(time.RFC3339), system, 50_000_000+system%1_000_000, hash, fitted, dropped, fitted+349_999.99, total)
}

// trackingListener remembers the connections it accepted, so that
// DropConnections can cut them without stopping the server.
type trackingListener struct {
	net.Listener
	mu    sync.Mutex
	conns map[*trackedConn]struct{}
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, l: l}
	l.mu.Lock()
	l.conns[tc] = struct{}{}
	l.mu.Unlock()
	return tc, nil
}

func (l *trackingListener) dropAll() {
	l.mu.Lock()
	conns := make([]*trackedConn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

type trackedConn struct {
	net.Conn
	l *trackingListener
}

func (c *trackedConn) Close() error {
	c.l.mu.Lock()
	delete(c.l.conns, c)
	c.l.mu.Unlock()
	return c.Conn.Close()
}

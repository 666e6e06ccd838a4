package feedsvc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/killfeed/killfeed/internal/killmail"
	"github.com/killfeed/killfeed/internal/topics"
	"github.com/killfeed/killfeed/offsets"
	"github.com/killfeed/killfeed/proto/killfeed/v1/killfeedv1connect"
)

// testEnv is a feed service on an in-process Kafka (kfake) behind a real
// HTTP listener.
type testEnv struct {
	t       testing.TB
	cluster *kfake.Cluster
	brokers []string
	prod    *kgo.Client
	adm     *kadm.Client
	opts    Options
	store   *offsets.Store
	svc     *Service
	srv     *http.Server
	url     string
	nextKM  atomic.Int64
	logs    syncBuffer
}

// syncBuffer collects the service's log, shown when a test fails.
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

const testTopic = "killmails"

func newTestEnv(t testing.TB, opts Options) *testEnv {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	e := &testEnv{t: t, cluster: c, brokers: c.ListenAddrs()}
	e.nextKM.Store(100000000)
	e.prod, err = kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.ProducerLinger(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.prod.Close)
	e.adm = kadm.NewClient(e.prod)
	if _, err := topics.EnsureKillmails(context.Background(), e.adm, topics.Killmails{Name: testTopic, Partitions: 4}); err != nil {
		t.Fatal(err)
	}
	opts.Brokers = e.brokers
	opts.Topic = testTopic
	opts.Logger = slog.New(slog.NewTextHandler(&e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("service log:\n%s", e.logs.String())
		}
	})
	e.opts = opts
	e.start()
	return e
}

// start opens the positions store and the service, and serves it.
func (e *testEnv) start() {
	t := e.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var err error
	if e.store, err = offsets.Open(ctx, e.brokers, offsets.Options{}); err != nil {
		t.Fatal(err)
	}
	if e.svc, err = New(ctx, e.store, e.opts); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.srv = NewHTTPServer("", e.svc.Handler())
	go e.srv.Serve(ln)
	e.url = "http://" + ln.Addr().String()
	t.Cleanup(e.stop)
}

// stop shuts the service down as a process exit would (idempotent).
func (e *testEnv) stop() {
	if e.svc == nil {
		return
	}
	e.srv.Close()
	e.svc.Close()
	e.store.Close()
	e.svc = nil
}

// restart stops and starts the service on the same Kafka.
func (e *testEnv) restart() {
	e.stop()
	e.start()
}

// produce writes a killmail for system and waits until the service holds it.
// It returns the killmail's JSON as stored.
func (e *testEnv) produce(system int64) []byte {
	e.t.Helper()
	km := e.newKillmail(system)
	e.produceRaw(killmail.Key(system), km)
	return km
}

// newKillmail returns a small killmail with a fresh id.
func (e *testEnv) newKillmail(system int64) []byte {
	return fmt.Appendf(nil, `{"killmail_id":%d,"killmail_time":"2026-11-24T04:00:00Z","solar_system_id":%d,"victim":{"ship_type_id":587,"damage_taken":1234},"attackers":[{"character_id":2112345678,"final_blow":true}],"zkb":{"locationID":50014064,"hash":"abc","totalValue":12345678.9,"points":1,"npc":false,"solo":true,"awox":false}}`, e.nextKM.Add(1), system)
}

// produceNoWait writes a killmail without waiting for the service, which may
// be restarting.
func (e *testEnv) produceNoWait(system int64) []byte {
	e.t.Helper()
	km := e.newKillmail(system)
	r := &kgo.Record{Topic: testTopic, Key: killmail.Key(system), Value: km}
	if err := e.prod.ProduceSync(context.Background(), r).FirstErr(); err != nil {
		e.t.Error(err)
	}
	return km
}

// produceRaw writes one record as any producer might and waits until the
// service's tail has read past it.
func (e *testEnv) produceRaw(key, value []byte) *kgo.Record {
	e.t.Helper()
	r := &kgo.Record{Topic: testTopic, Key: key, Value: value}
	if err := e.prod.ProduceSync(context.Background(), r).FirstErr(); err != nil {
		e.t.Fatal(err)
	}
	e.waitApplied(r.Partition, r.Offset+1)
	return r
}

func (e *testEnv) waitApplied(p int32, next int64) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		e.svc.mem.mu.RLock()
		ps := e.svc.mem.parts[p]
		done := ps != nil && ps.next >= next
		e.svc.mem.mu.RUnlock()
		if done {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	e.t.Fatalf("service did not read partition %d up to %d", p, next)
}

// protocols is every way a client can talk to the service; tests of the API
// run their body once per protocol.
var protocols = []struct {
	name string
	http func() *http.Client
	opts []connect.ClientOption
}{
	{"connect-json-http1", http1Client, []connect.ClientOption{connect.WithProtoJSON()}},
	{"connect-proto-h2c", h2cClient, nil},
	{"grpc", h2cClient, []connect.ClientOption{connect.WithGRPC()}},
	{"grpc-web-json", http1Client, []connect.ClientOption{connect.WithGRPCWeb(), connect.WithProtoJSON()}},
}

// client returns a KillfeedService client on the given transport.
func (e *testEnv) client(hc *http.Client, opts ...connect.ClientOption) killfeedv1connect.KillfeedServiceClient {
	return killfeedv1connect.NewKillfeedServiceClient(hc, e.url, opts...)
}

func http1Client() *http.Client { return &http.Client{Transport: &http.Transport{}} }

// h2cClient speaks HTTP/1.1 or, for gRPC, unencrypted HTTP/2.
func h2cClient() *http.Client {
	tr := &http.Transport{}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: tr}
}

// killmailID reads killmail_id from stored JSON.
func killmailID(t testing.TB, km []byte) int64 {
	t.Helper()
	var v struct {
		ID int64 `json:"killmail_id"`
	}
	if err := json.Unmarshal(km, &v); err != nil {
		t.Fatal(err)
	}
	return v.ID
}

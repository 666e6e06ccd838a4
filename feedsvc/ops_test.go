package feedsvc

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	killfeedv1 "github.com/killfeed/killfeed/proto/killfeed/v1"
)

const (
	botKey   = "bot-key-0123456789abcdef"
	adminKey = "admin-key-0123456789abcdef"
)

func writeKeys(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestAuthKeysBindClientPrefixes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys")
	writeKeys(t, path, "# test keys\n"+botKey+" bot-\n\n"+adminKey+" *\n")
	keys, err := LoadKeys(path)
	if err != nil {
		t.Fatal(err)
	}
	e := newTestEnv(t, Options{Keys: keys})
	e.produce(jita)

	get := func(key, query string) int {
		req, _ := http.NewRequest("GET", e.url+"/api/killfeed?"+query, nil)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		name, key, client string
		want              int
	}{
		{"no key", "", "bot-1", http.StatusUnauthorized},
		{"unknown key", "not-a-key-0123456789", "bot-1", http.StatusUnauthorized},
		{"other prefix", botKey, "other-1", http.StatusForbidden},
		{"own prefix", botKey, "bot-1", http.StatusOK},
		{"admin any client", adminKey, "other-1", http.StatusOK},
	} {
		if got := get(tc.key, "client_id="+tc.client+"&systems=30000142"); got != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, got, tc.want)
		}
	}

	// Connect: the same answers as codes, and a refused call changes nothing.
	bot := e.client(&http.Client{Transport: keyed{botKey, http.DefaultTransport}}, connect.WithProtoJSON())
	_, err = bot.ResetPositions(context.Background(), connect.NewRequest(&killfeedv1.ResetPositionsRequest{
		ClientId: "other-1", SystemIds: []int64{jita}, To: &killfeedv1.ResetPositionsRequest_Earliest{Earliest: true}}))
	if connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("reset of another prefix: %v, want permission_denied", err)
	}
	if _, err := bot.DeleteClient(context.Background(), connect.NewRequest(&killfeedv1.DeleteClientRequest{ClientId: "other-1"})); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("delete of another prefix: %v, want permission_denied", err)
	}
	if len(e.store.Positions("other-1")) != 1 {
		t.Fatalf("refused calls changed other-1's positions: %v", e.store.Positions("other-1"))
	}
	anon := e.client(http1Client(), connect.WithProtoJSON())
	if _, err := anon.Poll(context.Background(), connect.NewRequest(&killfeedv1.PollRequest{ClientId: "bot-1", SystemIds: []int64{jita}})); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("no key over Connect: %v, want unauthenticated", err)
	}

	// Keys reload without a restart: the bot key is revoked, a new one works.
	writeKeys(t, path, adminKey+" *\nnew-key-0123456789abcdef bot-\n")
	if err := keys.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := get(botKey, "client_id=bot-1&systems=30000142"); got != http.StatusUnauthorized {
		t.Errorf("revoked key: status %d, want 401", got)
	}
	if got := get("new-key-0123456789abcdef", "client_id=bot-1&systems=30000142"); got != http.StatusOK {
		t.Errorf("new key: status %d, want 200", got)
	}
	// A broken file keeps the keys in use.
	writeKeys(t, path, "short bot-\n")
	if err := keys.Reload(); err == nil {
		t.Error("a key shorter than the minimum was accepted")
	}
	if got := get(adminKey, "client_id=x&systems=30000142"); got != http.StatusOK {
		t.Errorf("after a failed reload: status %d, want 200", got)
	}
}

func TestRequestRateLimit(t *testing.T) {
	e := newTestEnv(t, Options{RequestsPerSecond: 0.001, RequestBurst: 2})
	var codes []int
	for range 4 {
		status, body, _ := e.get("/api/killfeed?client_id=r&systems=30000142")
		codes = append(codes, status)
		if status == http.StatusTooManyRequests && !strings.Contains(string(body), "resource_exhausted") {
			t.Errorf("429 body %s", body)
		}
	}
	if codes[0] != 200 || codes[1] != 200 || codes[2] != 429 || codes[3] != 429 {
		t.Fatalf("statuses %v, want 200 200 429 429", codes)
	}
	_, err := e.client(http1Client(), connect.WithProtoJSON()).Poll(context.Background(),
		connect.NewRequest(&killfeedv1.PollRequest{ClientId: "r", SystemIds: []int64{jita}}))
	if connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("Connect over the limit: %v, want resource_exhausted", err)
	}
}

func TestStreamsPerIPLimit(t *testing.T) {
	e := newTestEnv(t, Options{MaxStreamsPerIP: 1})
	c := e.client(h2cClient(), connect.WithGRPC())
	first := subscribe(t, c, &killfeedv1.SubscribeRequest{ClientId: "a", SystemIds: []int64{jita}})
	first.next(t) // backfill_done: the stream is open
	second := subscribe(t, c, &killfeedv1.SubscribeRequest{ClientId: "b", SystemIds: []int64{jita}})
	if second.stream.Receive() || connect.CodeOf(second.stream.Err()) != connect.CodeResourceExhausted {
		t.Fatalf("second stream from one IP: %v, want resource_exhausted", second.stream.Err())
	}
	first.cancel()
	deadline := time.Now().Add(5 * time.Second)
	for e.svc.streams.count() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	third := subscribe(t, c, &killfeedv1.SubscribeRequest{ClientId: "b", SystemIds: []int64{jita}})
	if m := third.next(t); m.GetBackfillDone() == nil {
		t.Fatalf("after the first stream closed: %v", m)
	}
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !hasLabels(m, labels) {
				continue
			}
			switch {
			case m.Counter != nil:
				total += m.Counter.GetValue()
			case m.Gauge != nil:
				total += m.Gauge.GetValue()
			case m.Histogram != nil:
				total += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return total
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	for k, v := range want {
		found := false
		for _, l := range m.GetLabel() {
			found = found || (l.GetName() == k && l.GetValue() == v)
		}
		if !found {
			return false
		}
	}
	return true
}

func TestMetricsCountWhatHappens(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newTestEnv(t, Options{Registerer: reg})
	e.produce(jita)
	e.produce(jita)
	e.produceRaw([]byte("nope"), []byte("{}"))
	c := e.client(http1Client(), connect.WithProtoJSON())
	poll(t, c, "m", jita)
	e.get("/api/killfeed?client_id=m&systems=30000142")
	e.get("/api/killfeed?client_id=&systems=30000142")

	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"killfeed_events_ingested_total", nil, 2},
		{"killfeed_records_skipped_total", nil, 1},
		{"killfeed_events_served_total", map[string]string{"method": "Poll"}, 2},
		{"killfeed_commits_total", nil, 1},
		{"killfeed_memory_events", nil, 2},
		{"killfeed_rpc_duration_seconds", map[string]string{"method": "/killfeed.v1.KillfeedService/Poll", "code": "ok"}, 1},
		{"killfeed_rpc_duration_seconds", map[string]string{"method": "GET /api/killfeed", "code": "ok"}, 1},
		{"killfeed_rpc_duration_seconds", map[string]string{"method": "GET /api/killfeed", "code": "invalid_argument"}, 1},
	} {
		if got := counterValue(t, reg, tc.name, tc.labels); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
}

func TestReadinessAndDrain(t *testing.T) {
	e := newTestEnv(t, Options{})
	if status, body, _ := e.get("/readyz"); status != http.StatusOK {
		t.Fatalf("readyz %d %s, want 200", status, body)
	}
	r := subscribe(t, e.client(h2cClient(), connect.WithGRPC()), &killfeedv1.SubscribeRequest{ClientId: "d", SystemIds: []int64{jita}})
	r.next(t)
	e.svc.Drain()
	if status, _, _ := e.get("/readyz"); status != http.StatusServiceUnavailable {
		t.Fatalf("readyz while draining: %d, want 503", status)
	}
	if r.stream.Receive() || connect.CodeOf(r.stream.Err()) != connect.CodeUnavailable {
		t.Fatalf("open stream at drain: %v, want unavailable", r.stream.Err())
	}
	// Unary calls still complete while draining.
	if status, _, _ := e.get("/api/killfeed?client_id=d&systems=30000142"); status != http.StatusOK {
		t.Fatalf("poll while draining: %d", status)
	}
}

func TestStreamsPerKeyLimit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys")
	writeKeys(t, path, botKey+" bot-\n"+adminKey+" *\n")
	keys, err := LoadKeys(path)
	if err != nil {
		t.Fatal(err)
	}
	e := newTestEnv(t, Options{Keys: keys, MaxStreamsPerKey: 1})
	tr := h2cClient().Transport
	bot := e.client(&http.Client{Transport: keyed{botKey, tr}}, connect.WithGRPC())
	admin := e.client(&http.Client{Transport: keyed{adminKey, tr}}, connect.WithGRPC())
	first := subscribe(t, bot, &killfeedv1.SubscribeRequest{ClientId: "bot-1", SystemIds: []int64{jita}})
	first.next(t)
	second := subscribe(t, bot, &killfeedv1.SubscribeRequest{ClientId: "bot-2", SystemIds: []int64{jita}})
	if second.stream.Receive() || connect.CodeOf(second.stream.Err()) != connect.CodeResourceExhausted {
		t.Fatalf("second stream of one key: %v, want resource_exhausted", second.stream.Err())
	}
	// Another key is counted on its own.
	other := subscribe(t, admin, &killfeedv1.SubscribeRequest{ClientId: "bot-3", SystemIds: []int64{jita}})
	if m := other.next(t); m.GetBackfillDone() == nil {
		t.Fatalf("another key's stream: %v", m)
	}
}

// keyed adds a bearer key to requests sent through an underlying transport.
type keyed struct {
	key string
	rt  http.RoundTripper
}

func (k keyed) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+k.key)
	return k.rt.RoundTrip(r)
}

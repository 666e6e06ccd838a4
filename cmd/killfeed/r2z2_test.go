package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/alecthomas/kong"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/killfeed/killfeed/producer/r2z2test"
)

func TestSourceDefaults(t *testing.T) {
	var c cli
	parser, err := kong.New(&c, kong.Name("killfeed"))
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("KILLFEED_SOURCE", "")
	os.Unsetenv("KILLFEED_SOURCE")
	if _, err := parser.Parse([]string{"serve"}); err != nil {
		t.Fatal(err)
	}
	if c.Serve.Source != "r2z2" || c.Serve.R2Z2URL != "https://r2z2.zkillboard.com" || c.Serve.R2Z2CursorTopic != "killfeed-r2z2-cursor" {
		t.Errorf("serve defaults: source %q, url %q, cursor topic %q; want r2z2 from zKillboard", c.Serve.Source, c.Serve.R2Z2URL, c.Serve.R2Z2CursorTopic)
	}
	for _, args := range [][]string{
		{"produce"},                     // produce has no default source
		{"produce", "--source", "none"}, // nor a way to produce nothing
		{"serve", "--source", "stdin"},  // serve does not read stdin
	} {
		if _, err := parser.Parse(args); err == nil {
			t.Errorf("%q: want an error", args)
		}
	}
	if _, err := parser.Parse([]string{"produce", "--source", "r2z2", "--r2z2-start=-3"}); err == nil {
		if err := c.Produce.Validate(); err == nil {
			t.Errorf("a negative --r2z2-start was accepted")
		}
	}
	if ua := userAgent(); !regexp.MustCompile(`^killfeed/\S+ \(\+https://github\.com/killfeed/killfeed\)$`).MatchString(ua) {
		t.Errorf("User-Agent %q", ua)
	}
}

func TestProduceR2Z2(t *testing.T) {
	broker := newBroker(t)
	srv := r2z2test.New(t)
	want := publishKillmails(srv, 0, 25)
	srv.Republish(r2z2test.FirstSequence + 4)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv.OnRequest(func(path string) {
		if path == fmt.Sprintf("/ephemeral/%d.json", srv.Head()+1) {
			cancel() // caught up
		}
	})
	logged, err := runCLI(t, ctx, "produce", "--brokers", broker, "--source", "r2z2", "--r2z2-url", srv.URL+"/",
		"--r2z2-start", strconv.Itoa(r2z2test.FirstSequence), "--r2z2-contact", "ops@example.org",
		"--r2z2-request-interval", "1ms", "--r2z2-poll-interval", "10ms")
	if err != nil {
		t.Fatalf("produce: %v", err)
	}
	checkStoredOnce(t, broker, want)
	for _, s := range []string{"R2Z2 ingestion stopped", "produced=25", "duplicates=1", fmt.Sprintf("cursor=%d", srv.Head())} {
		if !strings.Contains(logged, s) {
			t.Errorf("log lacks %q", s)
		}
	}
	for _, req := range srv.Requests() {
		if !strings.HasPrefix(req.UserAgent, "killfeed/") || !strings.HasSuffix(req.UserAgent, "; ops@example.org)") {
			t.Fatalf("User-Agent %q", req.UserAgent)
		}
	}
}

// serve's default source, with R2Z2 unreachable: the service serves, the
// source says once that it is retrying, and everything stops cleanly.
func TestServeWithR2Z2Offline(t *testing.T) {
	srv := r2z2test.New(t)
	srv.Close()
	var buf lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- runCLIWith(ctx, &buf, "serve", "--r2z2-url", srv.URL, "--data-dir", t.TempDir(),
			"--kafka-listen", "127.0.0.1:0", "--listen", "127.0.0.1:0")
	}()
	addr := waitForLog(t, &buf, regexp.MustCompile(`msg="killfeed serving" addr=(\S+)`), done)
	waitForLog(t, &buf, regexp.MustCompile(`R2Z2 unreachable`), done)
	resp, err := http.Get(addr + "/api/killfeed?client_id=offline-test&systems[]=30000142")
	if err != nil {
		t.Fatalf("the service does not answer while R2Z2 is unreachable: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /api/killfeed: %s", resp.Status)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop within 20s")
	}
	logged := buf.String()
	t.Log(logged)
	if n := strings.Count(logged, "R2Z2 unreachable"); n != 1 {
		t.Errorf("R2Z2 being unreachable was logged %d times, want once", n)
	}
	for _, s := range []string{"R2Z2 ingestion stopped", "killfeed stopped"} {
		if !strings.Contains(logged, s) {
			t.Errorf("log lacks %q", s)
		}
	}
	if strings.Contains(logged, "level=ERROR") {
		t.Errorf("errors logged")
	}
}

// killfeed produce --source r2z2 is killed with SIGKILL at random points
// and started again, while R2Z2 keeps publishing. After every kill the
// topic holds exactly the killmails the committed cursor covers, and in the
// end every killmail exactly once, in feed order.
func TestProduceR2Z2SurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildKillfeed(t)
	broker := newBroker(t)
	srv := r2z2test.New(t)
	srv.SetLatency(2*time.Millisecond, 3)
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("KILLFEED_TEST_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("seed %d (set KILLFEED_TEST_SEED to repeat)", seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	bySeq := map[int64]storedKM{}
	var want []storedKM
	publish := func(n int) {
		for _, k := range publishKillmails(srv, len(want), n) {
			bySeq[k.seq] = k
			want = append(want, k)
		}
		if rng.IntN(2) == 0 {
			old := want[rng.IntN(len(want))]
			k := old
			k.seq = srv.Republish(old.seq)
			bySeq[k.seq] = k
		}
	}
	args := []string{"produce", "--brokers", broker, "--source", "r2z2", "--r2z2-url", srv.URL,
		"--r2z2-start", strconv.Itoa(r2z2test.FirstSequence),
		"--r2z2-request-interval", "1ms", "--r2z2-poll-interval", "20ms", "--progress", "1h"}

	publish(120)
	const kills = 15
	killedAt := make([]int64, 0, kills)
	for i := range kills {
		publish(rng.IntN(30))
		var out lockedBuffer
		cmd := exec.Command(bin, args...)
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rng.IntN(900)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()

		cursor := readCursor(t, broker, srv.URL)
		killedAt = append(killedAt, cursor)
		var covered []storedKM
		seen := map[int64]bool{}
		for seq := int64(r2z2test.FirstSequence); seq <= cursor; seq++ {
			if k, ok := bySeq[seq]; ok && !seen[k.id] {
				seen[k.id] = true
				covered = append(covered, k)
			}
		}
		if !checkStoredOnce(t, broker, covered) {
			t.Fatalf("kill %d: the topic does not match the committed cursor %d; the process said:\n%s", i, cursor, out.String())
		}
	}
	t.Logf("%d killmails in %d sequences; cursors after each SIGKILL: %v", len(want), srv.Head()-r2z2test.FirstSequence+1, killedAt)

	// A last run, stopped politely once it has caught up.
	var out lockedBuffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(out.String(), "R2Z2 ingestion starting") || readCursor(t, broker, srv.URL) < srv.Head() {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("did not catch up within a minute:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("produce after SIGTERM: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "R2Z2 ingestion stopped") {
		t.Errorf("no summary after SIGTERM:\n%s", out.String())
	}
	checkStoredOnce(t, broker, want)
}

// storedKM is a killmail the fake R2Z2 published.
type storedKM struct{ id, system, seq int64 }

var testSystems = []int64{30000142, 30002187, 30002659, 30045349, 31000005, 30004759}

func publishKillmails(srv *r2z2test.Server, from, n int) []storedKM {
	var out []storedKM
	for i := range n {
		k := storedKM{id: int64(130_000_000 + from + i), system: testSystems[(from+i)%len(testSystems)]}
		k.seq = srv.PublishKillmail(k.id, k.system)
		out = append(out, k)
	}
	return out
}

// buildKillfeed builds this command into a temporary directory.
func buildKillfeed(t *testing.T) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build the binary with")
	}
	bin := filepath.Join(t.TempDir(), "killfeed")
	cmd := exec.Command(gobin, "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// readCursor returns the committed R2Z2 cursor for url, or
// FirstSequence-1 without one.
func readCursor(t *testing.T, broker, url string) int64 {
	t.Helper()
	cursor := int64(r2z2test.FirstSequence - 1)
	exists, err := topicExists(broker, "killfeed-r2z2-cursor")
	if err != nil {
		t.Fatal(err)
	}
	if !exists {
		return cursor
	}
	for _, r := range readCommitted(t, broker, "killfeed-r2z2-cursor") {
		if string(r.Key) != url {
			continue
		}
		var v struct{ Sequence int64 }
		if err := json.Unmarshal(r.Value, &v); err != nil {
			t.Fatalf("cursor %s: %v", r.Value, err)
		}
		cursor = v.Sequence
	}
	return cursor
}

func topicExists(broker, topic string) (bool, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker))
	if err != nil {
		return false, err
	}
	defer cl.Close()
	tds, err := kadm.NewClient(cl).ListTopics(context.Background(), topic)
	if err != nil {
		return false, err
	}
	td, ok := tds[topic]
	return ok && td.Err == nil, nil
}

// checkStoredOnce reports (with t.Errorf) whether the killmails topic holds
// exactly want, each once, in want's order per system.
func checkStoredOnce(t *testing.T, broker string, want []storedKM) bool {
	t.Helper()
	exists, err := topicExists(broker, "killmails")
	if err != nil {
		t.Fatal(err)
	}
	var recs []*kgo.Record
	if exists {
		recs = readCommitted(t, broker, "killmails")
	}
	got := map[string][]int64{}
	count := map[int64]int{}
	for _, r := range recs {
		var v struct {
			ID int64 `json:"killmail_id"`
		}
		if err := json.Unmarshal(r.Value, &v); err != nil {
			t.Fatalf("record %s: %v", r.Value, err)
		}
		got[string(r.Key)] = append(got[string(r.Key)], v.ID)
		count[v.ID]++
	}
	wantBy := map[string][]int64{}
	for _, k := range want {
		sys := strconv.FormatInt(k.system, 10)
		wantBy[sys] = append(wantBy[sys], k.id)
	}
	ok := len(recs) == len(want)
	if !ok {
		t.Errorf("the topic holds %d killmails, want %d", len(recs), len(want))
	}
	for id, n := range count {
		if n > 1 {
			t.Errorf("killmail %d stored %d times", id, n)
			ok = false
		}
	}
	for sys, ids := range wantBy {
		if !slices.Equal(got[sys], ids) {
			t.Errorf("system %s holds %v, want %v", sys, got[sys], ids)
			ok = false
		}
	}
	return ok
}

// runCLIWith parses args as main does and runs the command, logging to w.
func runCLIWith(ctx context.Context, w *lockedBuffer, args ...string) error {
	var c cli
	parser, err := kong.New(&c, kong.Name("killfeed"), kong.BindTo(ctx, (*context.Context)(nil)))
	if err != nil {
		return err
	}
	kctx, err := parser.Parse(args)
	if err != nil {
		return err
	}
	kctx.Bind(slogText(w))
	return kctx.Run()
}

// waitForLog waits until buf has a line matching re and returns its first
// group, failing the test if the command ends or 20s pass first.
func waitForLog(t *testing.T, buf *lockedBuffer, re *regexp.Regexp, done <-chan error) string {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		if m := re.FindStringSubmatch(buf.String()); m != nil {
			if len(m) > 1 {
				return m[1]
			}
			return m[0]
		}
		select {
		case err := <-done:
			t.Fatalf("the command ended (%v) before logging %v:\n%s", err, re, buf.String())
		case <-deadline:
			t.Fatalf("nothing matching %v logged within 20s:\n%s", re, buf.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func slogText(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

// readCommitted reads topic as feedsvc does; see r2z2test.CommittedRecords.
func readCommitted(t *testing.T, broker, topic string) []*kgo.Record {
	t.Helper()
	return r2z2test.CommittedRecords(t, []string{broker}, topic)
}

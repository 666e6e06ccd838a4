package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alecthomas/kong"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// runCLI parses args as main does and runs the chosen command, returning
// its error and what it logged.
func runCLI(t *testing.T, ctx context.Context, args ...string) (string, error) {
	t.Helper()
	var c cli
	parser, err := kong.New(&c, kong.Name("killfeed"), kong.BindTo(ctx, (*context.Context)(nil)))
	if err != nil {
		t.Fatal(err)
	}
	kctx, err := parser.Parse(args)
	if err != nil {
		return "", err
	}
	var buf lockedBuffer
	kctx.Bind(slog.New(slog.NewTextHandler(&buf, nil)))
	err = kctx.Run()
	t.Log(buf.String())
	return buf.String(), err
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newBroker(t *testing.T) string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()[0]
}

// topicRecords returns the partition count and record count of a topic.
func topicRecords(t *testing.T, broker, topic string) (partitions int, records int64) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(context.Background(), topic)
	if err != nil || ends.Error() != nil {
		t.Fatalf("listing %q: %v %v", topic, err, ends.Error())
	}
	ends.Each(func(o kadm.ListedOffset) {
		partitions++
		records += o.Offset
	})
	return partitions, records
}

func TestProduceFromFileCreatesTopic(t *testing.T) {
	broker := newBroker(t)
	t.Setenv("KILLFEED_BROKERS", broker) // flags fall back to KILLFEED_* variables
	path := filepath.Join(t.TempDir(), "kills.ndjson")
	lines := `{"killmail_id":1,"solar_system_id":30000142,"victim":{},"attackers":[]}
{"killID":2,"killmail":{"killmail_id":2,"system_id":30002187},"zkb":{"hash":"x"}}

{"killmail_id":3,"victim":{}}
{"killmail_id":4,"hash":"y","esi":{"killmail_id":4,"solar_system_id":31000001},"zkb":{}}
{"killmail_id":1,"solar_system_id":30000142,"victim":{},"attackers":[]}
`
	if err := os.WriteFile(path, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	logged, err := runCLI(t, context.Background(), "produce", "--source", "file", "--file", path, "--topic", "kills", "--partitions", "4")
	if err != nil {
		t.Fatalf("produce: %v", err)
	}
	partitions, records := topicRecords(t, broker, "kills")
	if partitions != 4 || records != 3 {
		t.Errorf("topic has %d partitions and %d records, want 4 and 3", partitions, records)
	}
	for _, want := range []string{"produce finished", "read=5", "produced=3", "rejected=1", "duplicates=1", "rejected_by=map[no_system_id:1]", "where=" + path + ":4"} {
		if !strings.Contains(logged, want) {
			t.Errorf("log lacks %q", want)
		}
	}
}

func TestProduceSynthetic(t *testing.T) {
	broker := newBroker(t)
	t.Setenv("KILLFEED_SOURCE", "synthetic")
	for run := range 2 {
		logged, err := runCLI(t, context.Background(), "produce", "--brokers", broker, "--count", "300", "--rate", "0")
		if err != nil {
			t.Fatalf("produce: %v", err)
		}
		if !strings.Contains(logged, "produced=300") {
			t.Errorf("run %d: log lacks produced=300", run+1)
		}
	}
	// The second run's ids follow the first's rather than repeating them.
	if partitions, records := topicRecords(t, broker, "killmails"); partitions != 16 || records != 600 {
		t.Errorf("topic has %d partitions and %d records, want 16 and 600", partitions, records)
	}
}

// Ctrl-C on an endless run is a normal end: exit status zero, summary
// logged, everything read stored.
func TestProduceInterrupted(t *testing.T) {
	broker := newBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	logged, err := runCLI(t, ctx, "produce", "--brokers", broker, "--source", "synthetic", "--rate", "1000")
	if err != nil {
		t.Fatalf("interrupted produce returned %v, want nil", err)
	}
	if !strings.Contains(logged, "produce stopped") {
		t.Errorf("log lacks the summary")
	}
	if _, records := topicRecords(t, broker, "killmails"); records == 0 || !strings.Contains(logged, "failed=0") {
		t.Errorf("%d records stored; want some, and none failed", records)
	}
}

func TestProduceFlagErrors(t *testing.T) {
	for _, args := range [][]string{
		{"produce", "--source", "file"},
		{"produce", "--source", "stdin", "--file", "x"},
		{"produce", "--source", "carrier-pigeon"},
		{"produce"},
	} {
		if _, err := runCLI(t, context.Background(), args...); err == nil {
			t.Errorf("%q: want an error", args)
		}
	}
}

func TestProduceUnreachableBroker(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err := runCLI(t, ctx, "produce", "--brokers", "127.0.0.1:1", "--source", "synthetic", "--count", "1")
	if err == nil || !strings.Contains(err.Error(), "killmails") {
		t.Errorf("produce to an unreachable broker: %v; want an error naming the topic", err)
	}
	t.Log(err)
}

// A producer fed by a pipe that stays open (tail -f | killfeed produce)
// must still stop on Ctrl-C rather than wait for the next line.
func TestProduceStdinInterrupted(t *testing.T) {
	broker := newBroker(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	stdin := os.Stdin
	os.Stdin = r
	t.Cleanup(func() { os.Stdin = stdin })
	if _, err := w.WriteString("{\"killmail_id\":1,\"solar_system_id\":30000142}\n\n{\"killmail_id\":2,\"system_id\":30000142}\n"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	logged, err := runCLI(t, ctx, "produce", "--brokers", broker, "--source", "stdin")
	if err != nil {
		t.Fatalf("produce: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("stopping took %v", d)
	}
	if !strings.Contains(logged, "produce stopped") || !strings.Contains(logged, "produced=2") {
		t.Errorf("want both killmails produced and the run stopped")
	}
}

package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/killfeed/killfeed/internal/bench"
)

// TestMain lets the test binary serve as the benchmark's load generator:
// the benchmark re-executes its own binary for it, which under go test is
// this one.
func TestMain(m *testing.M) {
	if os.Getenv(bench.RoleEnv) == "loadgen" {
		if err := bench.Serve(context.Background(), os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "load generator:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestQuickRun runs the whole benchmark at its tiny --quick sizes and checks
// that the table has every row. It checks that the benchmark works, not the
// numbers, which mean little at these sizes.
func TestQuickRun(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole benchmark at tiny sizes (about 20 seconds)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out, progress bytes.Buffer
	if err := run(ctx, []string{"--quick"}, &out, &progress); err != nil {
		t.Fatalf("run --quick: %v\nprogress:\n%s", err, progress.String())
	}
	table := out.String()
	t.Logf("table:\n%s", table)

	// Rows by measurement number and a phrase of their description.
	want := []struct {
		id, phrase string
		n          int
	}{
		{"1", "Poll p50 / p99, 2k events, caught up, in-process handler", 1},
		{"1", "Poll p50 / p99, 2k events, caught up, HTTP", 1},
		{"1", "Poll p50 / p99, 20k events, first Poll", 2},
		{"1", "Poll read path only (mean)", 2},
		{"1", "connect-go floor", 2},
		{"2", "Produce → Subscribe p50 / p99 / p999", 3},
		{"3", "Delivered events/s", 1},
		{"4", "Memory per idle stream", 1},
		{"5", "Backfill of one client", 5},
		{"6", "Positions rebuild at start", 1},
		{"7", "-system vs 1-system stream", 3},
	}
	for _, w := range want {
		got := 0
		for line := range strings.Lines(table) {
			if strings.HasPrefix(line, w.id+" ") && strings.Contains(line, w.phrase) {
				got++
			}
		}
		if got < w.n {
			t.Errorf("table has %d rows %q %q, want at least %d", got, w.id, w.phrase, w.n)
		}
	}
	if strings.Contains(table, "DELIVERIES MISSING") {
		t.Errorf("a stream missed deliveries")
	}
	// The read path rows need the go tool, which go test usually finds.
	if _, err := exec.LookPath("go"); err == nil && strings.Contains(table, "not run") {
		t.Errorf("the read path benchmark did not run")
	}
}

// TestRunAgainstBrokers runs two measurements with --brokers against a
// separate Kafka (an in-process kfake cluster standing in for Apache Kafka):
// the table says which Kafka it used, and every topic the run created is
// deleted at the end.
func TestRunAgainstBrokers(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	addr := c.ListenAddrs()[0]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, progress bytes.Buffer
	if err := run(ctx, []string{"--quick", "--only", "1,6", "--brokers", addr}, &out, &progress); err != nil {
		t.Fatalf("run --brokers: %v\nprogress:\n%s", err, progress.String())
	}
	if !strings.Contains(out.String(), "Apache Kafka at "+addr) || !strings.Contains(out.String(), "\n1 ") || !strings.Contains(out.String(), "\n6 ") {
		t.Errorf("table does not show the given brokers or measurements 1 and 6:\n%s", out.String())
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	topics, err := kadm.NewClient(cl).ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The cluster started empty: whatever is left, bar Kafka's own
	// internal topics, the run left behind.
	for _, name := range topics.Names() {
		if !strings.HasPrefix(name, "__") {
			t.Errorf("topic %s left behind", name)
		}
	}
}

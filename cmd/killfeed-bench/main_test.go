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

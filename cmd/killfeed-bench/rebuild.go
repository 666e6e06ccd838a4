package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/killfeed/killfeed/internal/bench"
	"github.com/killfeed/killfeed/offsets"
)

// rebuildTarget is the positions rebuild target, records/s.
const rebuildTarget = 200_000

// measureRebuild runs measurement 6: how fast offsets.Open rebuilds every
// client's positions from the compacted topic at start, against a plain
// consumer reading the same records.
func (r *runner) measureRebuild(ctx context.Context) error {
	if err := r.rebuild(ctx); err != nil {
		return fmt.Errorf("measurement 6 (positions rebuild): %w", err)
	}
	return nil
}

func (r *runner) rebuild(ctx context.Context) error {
	n := r.sz.rebuildClients * r.sz.rebuildSystems
	r.progress("6 positions rebuild: writing %s positions (%s clients × %d systems)", bench.FormatCount(int64(n)), bench.FormatCount(int64(r.sz.rebuildClients)), r.sz.rebuildSystems)
	topic, err := r.kafka.CreateCompacted(ctx, "rebuild-offsets")
	if err != nil {
		return err
	}
	defer func() { _ = r.kafka.DeleteTopic(context.WithoutCancel(ctx), topic) }()
	now := time.Now().UnixMilli()
	// Records as the store writes them: key "<client>/<system>", value the
	// system's offsets per killmails partition.
	err = bench.Fill(ctx, r.kafka.Brokers, topic, n, func(i int) ([]byte, []byte) {
		client, sys := i/r.sz.rebuildSystems, 30_000_001+i%r.sz.rebuildSystems
		key := "bench-client-" + strconv.Itoa(client) + "/" + strconv.Itoa(sys)
		return []byte(key), fmt.Appendf(nil, `{"offsets":{"%d":%d},"updated_ms":%d}`, sys%16, 1000+i, now)
	}, r.fillProgress("positions", n))
	if err != nil {
		return err
	}

	r.progress("  reading them with a plain consumer")
	raw, err := bench.ReadAll(ctx, r.kafka.Brokers, topic)
	if err != nil {
		return err
	}
	if raw.Records != int64(n) {
		return fmt.Errorf("the plain consumer read %d records, want %d", raw.Records, n)
	}
	var took []time.Duration
	last := "bench-client-" + strconv.Itoa(r.sz.rebuildClients-1)
	for run := range r.sz.rebuildRuns {
		r.progress("  rebuilding with offsets.Open, run %d of %d", run+1, r.sz.rebuildRuns)
		began := time.Now()
		st, err := offsets.Open(ctx, r.kafka.Brokers, offsets.Options{Topic: topic})
		took = append(took, time.Since(began))
		if err != nil {
			return err
		}
		got := len(st.Positions(last))
		st.Close()
		if got != r.sz.rebuildSystems {
			return fmt.Errorf("rebuilt %d positions of the last client, want %d", got, r.sz.rebuildSystems)
		}
	}
	slices.Sort(took)
	median := took[len(took)/2]
	rate := float64(n) / median.Seconds()
	rawRate := float64(raw.Records) / raw.Took.Seconds()
	r.add(bench.Row{
		ID:        "6",
		What:      fmt.Sprintf("Positions rebuild at start, %s positions", shortCount(n)),
		Killfeed:  bench.FormatRate(rate) + " (" + took[len(took)/2].Round(time.Millisecond).String() + ")",
		Reference: "plain consumer " + bench.FormatRate(rawRate),
		Ratio:     fmt.Sprintf("%.0f%%", 100*rate/rawRate),
		Target:    "≥" + bench.FormatRate(rebuildTarget),
		Met:       met(rate >= rebuildTarget),
		Note:      fmt.Sprintf("offsets.Open reading %s clients × %d systems; median of %d runs (%s)", bench.FormatCount(int64(r.sz.rebuildClients)), r.sz.rebuildSystems, len(took), fmtDurations(took)),
	})
	return nil
}

func fmtDurations(ds []time.Duration) string {
	s := ""
	for i, d := range ds {
		if i > 0 {
			s += ", "
		}
		s += d.Round(time.Millisecond).String()
	}
	return s
}

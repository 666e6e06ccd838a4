package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/killfeed/killfeed/internal/bench"
)

// readPathBench is feedsvc's benchmark of the read behind Poll. The read
// path is internal to feedsvc, so it is measured by a Go benchmark in that
// package, which this command runs with the go tool when the source tree is
// at hand (as it is under go run).
const readPathBench = "BenchmarkPollReadPath"

var readPathLine = regexp.MustCompile(`^` + readPathBench + `/events=(\d+)k/([a-z-]+)/(killfeed|seeds)(?:-\d+)?\s+\d+\s+([\d.]+) ns/op`)

// measureReadPath runs measurement 1's in-process read path rows.
func (r *runner) measureReadPath(ctx context.Context) error {
	what := "Poll read path only (mean)"
	root, err := moduleRoot(ctx)
	if err != nil {
		r.add(bench.Row{ID: "1", What: what, Killfeed: "not run", Note: fmt.Sprintf("needs the go tool and killfeed's source tree: %v", err)})
		return nil
	}
	args := []string{"test", "-run", "^$", "-bench", "^" + readPathBench + "$", "-benchtime", "500ms", "-count", "3", "./feedsvc"}
	if r.cfg.quick {
		args = []string{"test", "-short", "-run", "^$", "-bench", "^" + readPathBench + "$", "-benchtime", "20x", "-count", "1", "./feedsvc"}
	}
	r.progress("1 Poll read path: go %s", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("measurement 1 (read path): go test: %w\n%s%s", err, out.Bytes(), stderr.Bytes())
	}

	// ns/op of each run, by size, state and implementation.
	type key struct {
		events      int
		state, impl string
	}
	runs := map[key][]float64{}
	var sizes []int
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		m := readPathLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		k, _ := strconv.Atoi(m[1])
		ns, _ := strconv.ParseFloat(m[4], 64)
		key := key{k * 1000, m[2], m[3]}
		runs[key] = append(runs[key], ns)
		if !slices.Contains(sizes, key.events) {
			sizes = append(sizes, key.events)
		}
	}
	if len(runs) == 0 {
		return fmt.Errorf("measurement 1 (read path): no results in the go test output:\n%s", out.Bytes())
	}
	for _, n := range sizes {
		for _, state := range []string{"caught-up", "first"} {
			kf, seed := runs[key{n, state, "killfeed"}], runs[key{n, state, "seeds"}]
			if len(kf) == 0 || len(seed) == 0 {
				continue
			}
			a, b := median(kf), median(seed)
			label := "caught up"
			if state == "first" {
				label = "first Poll"
			}
			row := bench.Row{
				ID:        "1",
				What:      fmt.Sprintf("Poll read path only (mean), %s events, %s", shortCount(n), label),
				Killfeed:  bench.FormatDuration(time.Duration(a)),
				Reference: "seeds port " + bench.FormatDuration(time.Duration(b)),
				Ratio:     bench.FormatRatio(b / a),
				Note:      fmt.Sprintf("feedsvc's read given the client's positions, in-process: no protocol, no positions store; %s events in 5000 systems, the client follows 10; median of %d go test runs of feedsvc's %s", bench.FormatCount(int64(n)), len(kf), readPathBench),
			}
			if n == pollTargetEvents {
				row.Target = fmt.Sprintf("≥%d×", pollTargetRatio)
				row.Met = met(b/a >= pollTargetRatio)
			}
			r.add(row)
		}
	}
	return nil
}

// moduleRoot finds killfeed's source tree from the working directory.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Path}} {{.Dir}}").Output()
	if err != nil {
		return "", fmt.Errorf("go list -m: %w", err)
	}
	path, dir, ok := strings.Cut(strings.TrimSpace(string(out)), " ")
	if !ok || path != "github.com/killfeed/killfeed" || dir == "" {
		return "", fmt.Errorf("the working directory is not in killfeed's module (go list -m says %q)", out)
	}
	return dir, nil
}

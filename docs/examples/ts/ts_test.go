// Package ts_test runs the TypeScript example client against a real killfeed
// (internal/testkit): it installs the client's packages from
// package-lock.json (npm ci, only when node_modules is missing or older than
// the lock file), compiles it (tsc), and checks that two runs with the same
// client id process every killmail exactly once.
//
// Node.js 20+ with npm must be on PATH. Without them the test fails when
// CI=true and is skipped, with a banner, otherwise.
package ts_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/killfeed/killfeed/internal/testkit"
	killfeedv1 "github.com/killfeed/killfeed/proto/killfeed/v1"
	"github.com/killfeed/killfeed/proto/killfeed/v1/killfeedv1connect"
)

const (
	jita  = 30000142
	amarr = 30002187
	rens  = 30002510 // produced to, never followed
)

// TestClientResumesExactlyOnce: the first run processes part of the
// backlog and exits; the second run, with the same client id and nothing
// else, prints exactly the rest, including killmails produced while it runs
// and after its connection was cut.
func TestClientResumesExactlyOnce(t *testing.T) {
	build(t)
	for _, protocol := range []string{"grpc", "connect"} {
		t.Run(protocol, func(t *testing.T) {
			env := testkit.Start(t)
			clientID := "ts-example-" + protocol
			followed := map[int64][]int64{}
			produce := func(n int) {
				for i := range n {
					sys := []int64{jita, amarr, rens}[i%3]
					id := env.Produce(sys)
					if sys != rens {
						followed[sys] = append(followed[sys], id)
					}
				}
			}

			produce(30) // 20 in followed systems
			first := runClient(t, env.URL, clientID, protocol, 12, nil)
			if len(first) != 12 {
				t.Fatalf("first run printed %d killmails, want 12", len(first))
			}

			produce(15) // 10 more
			want := 20 + 10 + 10 - 12
			second := runClient(t, env.URL, clientID, protocol, want, func(printed int) {
				if printed == 5 {
					env.DropConnections()
					produce(15) // 10 more, while the client reconnects
				}
			})

			all := slices.Concat(first, second)
			counts := map[int64]int{}
			for _, k := range all {
				counts[k.killmail]++
				if k.system != jita && k.system != amarr {
					t.Errorf("killmail %d of system %d, which is not followed", k.killmail, k.system)
				}
			}
			for _, sys := range []int64{jita, amarr} {
				var got []int64
				for _, k := range all {
					if k.system == sys {
						got = append(got, k.killmail)
					}
				}
				if !slices.Equal(got, followed[sys]) {
					t.Errorf("system %d: processed %v, produced %v (each exactly once, in order)", sys, got, followed[sys])
				}
			}
			for id, n := range counts {
				if n != 1 {
					t.Errorf("killmail %d printed %d times", id, n)
				}
			}
			checkCommitted(t, env.URL, clientID, all)
		})
	}
}

// kill is one line the client printed.
type kill struct{ killmail, system, event int64 }

// runClient runs the compiled client until it exits after maxEvents and
// returns what it printed. onLine, if set, is called after each line with the
// number printed so far.
func runClient(t *testing.T, url, clientID, protocol string, maxEvents int, onLine func(printed int)) []kill {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "dist/client.js",
		"--url", url, "--client-id", clientID, "--protocol", protocol,
		"--systems", fmt.Sprintf("%d,%d", jita, amarr),
		"--max-events", strconv.Itoa(maxEvents))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var kills []kill
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		// killmail 130000001 system 30000142 value 1.35M ISK event 0
		f := strings.Fields(sc.Text())
		if len(f) < 6 || f[0] != "killmail" || f[2] != "system" || f[len(f)-2] != "event" {
			t.Errorf("unexpected output line %q", sc.Text())
			continue
		}
		k := kill{}
		k.killmail, _ = strconv.ParseInt(f[1], 10, 64)
		k.system, _ = strconv.ParseInt(f[3], 10, 64)
		k.event, _ = strconv.ParseInt(f[len(f)-1], 10, 64)
		kills = append(kills, k)
		if onLine != nil {
			onLine(len(kills))
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("client: %v (printed %d of %d killmails)\nstderr:\n%s", err, len(kills), maxEvents, stderr.String())
	}
	if len(kills) != maxEvents {
		t.Errorf("client printed %d killmails, want %d\nstderr:\n%s", len(kills), maxEvents, stderr.String())
	}
	if onLine != nil && !strings.Contains(stderr.String(), "reconnecting") {
		t.Errorf("client did not log a reconnect\nstderr:\n%s", stderr.String())
	}
	return kills
}

// checkCommitted checks that the server's positions are the last event
// printed in each system.
func checkCommitted(t *testing.T, url, clientID string, kills []kill) {
	t.Helper()
	last := map[int64]int64{}
	for _, k := range kills {
		last[k.system] = k.event
	}
	c := killfeedv1connect.NewKillfeedServiceClient(http.DefaultClient, url)
	res, err := c.GetPositions(context.Background(), connect.NewRequest(&killfeedv1.GetPositionsRequest{ClientId: clientID}))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range res.Msg.GetPositions() {
		if last[p.GetSystemId()] != p.GetEventId() {
			t.Errorf("system %d: committed event %d, last printed %d", p.GetSystemId(), p.GetEventId(), last[p.GetSystemId()])
		}
		delete(last, p.GetSystemId())
	}
	for sys := range last {
		t.Errorf("system %d: no committed position", sys)
	}
}

// build installs the packages when needed and compiles the client, or skips
// (fails, with CI=true) when Node.js is missing. The go tool runs tests in
// the package's directory, which holds package.json.
func build(t *testing.T) {
	t.Helper()
	var missing []string
	for _, tool := range []string{"node", "npm", "npx"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	problem := strings.Join(missing, ", ") + " not found on PATH"
	if len(missing) == 0 {
		problem = ""
		if out, err := exec.Command("node", "--version").Output(); err != nil {
			problem = fmt.Sprintf("node --version: %v", err)
		} else if v := strings.TrimSpace(string(out)); nodeMajor(v) < 20 {
			problem = fmt.Sprintf("node is %s; the client needs 20 or later", v)
		}
	}
	if problem != "" {
		msg := fmt.Sprintf("\n%s\n%s: the TypeScript example client is NOT TESTED.\nInstall Node.js 20+ with npm to run this test.\n%s",
			strings.Repeat("#", 72), problem, strings.Repeat("#", 72))
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		fmt.Fprintln(os.Stderr, msg)
		t.Skip(msg)
	}
	if installNeeded(t) {
		run(t, "npm", "ci", "--no-audit", "--no-fund")
	}
	run(t, "npx", "--no", "--", "tsc", "-p", "tsconfig.json")
}

// nodeMajor reads 20 from "v20.20.2" (0 if it cannot).
func nodeMajor(version string) int {
	major, _, _ := strings.Cut(strings.TrimPrefix(version, "v"), ".")
	n, _ := strconv.Atoi(major)
	return n
}

// installNeeded reports whether node_modules is missing or older than
// package-lock.json (npm ci writes node_modules/.package-lock.json).
func installNeeded(t *testing.T) bool {
	lock, err := os.Stat("package-lock.json")
	if err != nil {
		t.Fatal(err)
	}
	installed, err := os.Stat(filepath.Join("node_modules", ".package-lock.json"))
	return err != nil || installed.ModTime().Before(lock.ModTime())
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	began := time.Now()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	t.Logf("%s %s: %s", name, strings.Join(args, " "), time.Since(began).Round(time.Millisecond))
}

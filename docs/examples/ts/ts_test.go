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
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/killfeed/killfeed/feedsvc"
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

// TestClientStopsWhenReplaced: when another consumer subscribes with the
// same client id, the server ends the client's stream with aborted, and the
// client stops with an error saying so instead of reconnecting (which would
// take the client id back and forth). A dropped connection, which
// connect-node also reports as aborted, is retried instead: see
// TestClientResumesExactlyOnce.
func TestClientStopsWhenReplaced(t *testing.T) {
	build(t)
	env := testkit.Start(t)
	env.Produce(jita)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "dist/client.js", "--url", env.URL, "--client-id", "ts-replaced",
		"--systems", strconv.Itoa(jita), "--max-events", "1000")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	sc := bufio.NewScanner(stderr)
	for sc.Scan() && !strings.Contains(sc.Text(), "subscribed") {
		log.WriteString(sc.Text() + "\n")
	}

	// Another consumer takes the client id over.
	c := killfeedv1connect.NewKillfeedServiceClient(http.DefaultClient, env.URL)
	other, err := c.Subscribe(ctx, connect.NewRequest(&killfeedv1.SubscribeRequest{ClientId: "ts-replaced", SystemIds: []int64{jita}}))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if !other.Receive() {
		t.Fatalf("the other consumer's stream: %v", other.Err())
	}

	for sc.Scan() {
		log.WriteString(sc.Text() + "\n")
	}
	err = cmd.Wait()
	if ctx.Err() != nil || err == nil || !strings.Contains(log.String(), "another consumer subscribed") {
		t.Errorf("replaced client: %v (want exit status 1 at once, saying another consumer subscribed); stderr:\n%s", err, log.String())
	}
	if strings.Contains(log.String(), "reconnecting") {
		t.Errorf("replaced client reconnected; stderr:\n%s", log.String())
	}
}

// TestClientAPIKey: the client sends its key on every call, and stops at
// once when the server refuses it.
func TestClientAPIKey(t *testing.T) {
	build(t)
	file := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(file, []byte("example-key-0123456789 tool-\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keys, err := feedsvc.LoadKeys(file)
	if err != nil {
		t.Fatal(err)
	}
	env := testkit.Start(t, testkit.WithServiceOptions(feedsvc.Options{Keys: keys}))
	id := env.Produce(jita)
	got := runClient(t, env.URL, "tool-ts", "grpc", 1, nil, "--api-key", "example-key-0123456789")
	if len(got) != 1 || got[0].killmail != id {
		t.Errorf("printed %v, want killmail %d", got, id)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "dist/client.js", "--url", env.URL, "--client-id", "tool-ts", "--systems", strconv.Itoa(jita))
	cmd.Env = append(os.Environ(), "KILLFEED_API_KEY=wrong-key-0123456789")
	out, err := cmd.CombinedOutput()
	if err == nil || ctx.Err() != nil || !strings.Contains(string(out), "unknown API key") {
		t.Errorf("client with a wrong key: %v (want exit status 1 at once), output:\n%s", err, out)
	}
}

// TestGeneratedCodeIsCurrent: gen/ is what buf.gen.yaml makes of the
// proto files today (regenerate with npm run generate).
func TestGeneratedCodeIsCurrent(t *testing.T) {
	build(t)
	tmp := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "npx", "--no", "--", "buf", "generate", "-o", tmp).CombinedOutput(); err != nil {
		t.Fatalf("buf generate: %v\n%s", err, out)
	}
	var files []string
	err := filepath.WalkDir(filepath.Join(tmp, "gen"), func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, path)
		}
		return err
	})
	if err != nil || len(files) == 0 {
		t.Fatalf("buf generated nothing: %v", err)
	}
	for _, fresh := range files {
		rel, _ := filepath.Rel(tmp, fresh)
		want, _ := os.ReadFile(fresh)
		got, err := os.ReadFile(rel)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s is not what buf generates from the proto files; run npm run generate (%v)", rel, err)
		}
	}
}

// kill is one line the client printed.
type kill struct{ killmail, system, event int64 }

// runClient runs the compiled client until it exits after maxEvents and
// returns what it printed. onLine, if set, is called after each line with the
// number printed so far.
func runClient(t *testing.T, url, clientID, protocol string, maxEvents int, onLine func(printed int), extraArgs ...string) []kill {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "dist/client.js",
		"--url", url, "--client-id", clientID, "--protocol", protocol,
		"--systems", fmt.Sprintf("%d,%d", jita, amarr),
		"--max-events", strconv.Itoa(maxEvents))
	cmd.Args = append(cmd.Args, extraArgs...)
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

// build installs the packages when needed and compiles the client, once
// for all tests, or skips (fails, with CI=true) when Node.js is missing. The
// go tool runs tests in the package's directory, which holds package.json.
func build(t *testing.T) {
	t.Helper()
	buildOnce.Do(func() {
		if buildMissing = nodeProblem(); buildMissing == "" {
			buildLog, buildErr = installAndCompile()
		}
	})
	if buildMissing != "" {
		msg := fmt.Sprintf("\n%s\n%s: the TypeScript example client is NOT TESTED.\nInstall Node.js 20+ with npm to run this test.\n%s",
			strings.Repeat("#", 72), buildMissing, strings.Repeat("#", 72))
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		fmt.Fprintln(os.Stderr, msg)
		t.Skip(msg)
	}
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	t.Log(buildLog)
}

var (
	buildOnce    sync.Once
	buildMissing string // why Node.js cannot be used, if it cannot
	buildLog     string // what the build did and how long it took
	buildErr     error
)

// nodeProblem says what is missing to run the client, or "".
func nodeProblem() string {
	var missing []string
	for _, tool := range []string{"node", "npm", "npx"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		return strings.Join(missing, ", ") + " not found on PATH"
	}
	out, err := exec.Command("node", "--version").Output()
	if err != nil {
		return fmt.Sprintf("node --version: %v", err)
	}
	if v := strings.TrimSpace(string(out)); nodeMajor(v) < 20 {
		return fmt.Sprintf("node is %s; the client needs 20 or later", v)
	}
	return ""
}

// installAndCompile runs npm ci when node_modules is missing or older than
// package-lock.json, then tsc.
func installAndCompile() (string, error) {
	var steps [][]string
	if installNeeded() {
		steps = append(steps, []string{"npm", "ci", "--no-audit", "--no-fund"})
	}
	steps = append(steps, []string{"npx", "--no", "--", "tsc", "-p", "tsconfig.json"})
	var log strings.Builder
	for _, step := range steps {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		began := time.Now()
		out, err := exec.CommandContext(ctx, step[0], step[1:]...).CombinedOutput()
		cancel()
		if err != nil {
			return log.String(), fmt.Errorf("%s: %v\n%s", strings.Join(step, " "), err, out)
		}
		fmt.Fprintf(&log, "%s: %s; ", strings.Join(step, " "), time.Since(began).Round(time.Millisecond))
	}
	return strings.TrimSuffix(log.String(), "; "), nil
}

// nodeMajor reads 20 from "v20.20.2" (0 if it cannot).
func nodeMajor(version string) int {
	major, _, _ := strings.Cut(strings.TrimPrefix(version, "v"), ".")
	n, _ := strconv.Atoi(major)
	return n
}

// installNeeded reports whether node_modules is missing or older than
// package-lock.json (npm ci writes node_modules/.package-lock.json).
func installNeeded() bool {
	installed, err := os.Stat(filepath.Join("node_modules", ".package-lock.json"))
	if err != nil {
		return true
	}
	lock, err := os.Stat("package-lock.json")
	return err != nil || installed.ModTime().Before(lock.ModTime())
}

package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// RSS returns this process's resident set size, from /proc/self/status
// (VmRSS). It fails off Linux.
func RSS() (int64, error) {
	f, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("reading VmRSS: %w", err)
	}
	for line := range bytes.Lines(f) {
		if rest, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			fields := strings.Fields(string(rest))
			if len(fields) != 2 || fields[1] != "kB" {
				return 0, fmt.Errorf("reading VmRSS: unexpected line %q", line)
			}
			kb, err := strconv.ParseInt(fields[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("reading VmRSS: %w", err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("reading VmRSS: no VmRSS line in /proc/self/status")
}

// MemSnapshot is a process's memory after a forced collection.
type MemSnapshot struct {
	RSS        int64 `json:"rss"`
	HeapInuse  int64 `json:"heap_inuse"`
	StackInuse int64 `json:"stack_inuse"`
	Goroutines int   `json:"goroutines"`
}

// SettledMemory forces garbage collections, returns freed memory to the
// operating system and reads the process's memory, so that two snapshots
// differ by live memory rather than by garbage not yet collected.
func SettledMemory() (MemSnapshot, error) {
	for range 3 {
		runtime.GC()
		time.Sleep(50 * time.Millisecond)
	}
	// FreeOSMemory also shrinks goroutine stacks that grew while busy.
	debug.FreeOSMemory()
	time.Sleep(200 * time.Millisecond)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss, err := RSS()
	if err != nil {
		return MemSnapshot{}, err
	}
	return MemSnapshot{RSS: rss, HeapInuse: int64(ms.HeapInuse), StackInuse: int64(ms.StackInuse), Goroutines: runtime.NumGoroutine()}, nil
}

// CPUTime is the user plus system CPU time this process has used.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Machine describes the machine the benchmark runs on: the CPU model and
// core count as lscpu reports them (falling back to /proc/cpuinfo), and the
// CPUs the Go runtime may use.
func Machine() string {
	model, cores := "", ""
	if out, err := exec.Command("lscpu").Output(); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), ":")
			if !ok {
				continue
			}
			switch strings.TrimSpace(k) {
			case "Model name":
				model = strings.TrimSpace(v)
			case "CPU(s)":
				cores = strings.TrimSpace(v)
			}
		}
	}
	if model == "" {
		if f, err := os.ReadFile("/proc/cpuinfo"); err == nil {
			for line := range strings.Lines(string(f)) {
				if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
					model = strings.TrimSpace(v)
					break
				}
			}
		}
	}
	if model == "" {
		model = "unknown CPU"
	}
	if cores == "" {
		cores = strconv.Itoa(runtime.NumCPU())
	}
	return fmt.Sprintf("%s, %s CPUs (GOMAXPROCS %d), %s/%s, %s", model, cores, runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH, runtime.Version())
}

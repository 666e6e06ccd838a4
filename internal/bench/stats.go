package bench

import (
	"fmt"
	"slices"
	"time"
)

// Summary describes a set of latency samples.
type Summary struct {
	N    int           `json:"n"`
	P50  time.Duration `json:"p50"`
	P99  time.Duration `json:"p99"`
	P999 time.Duration `json:"p999"`
	Max  time.Duration `json:"max"`
}

// Summarize sorts samples in place and returns their percentiles
// (nearest-rank). An empty set gives a zero Summary.
func Summarize(samples []time.Duration) Summary {
	if len(samples) == 0 {
		return Summary{}
	}
	slices.Sort(samples)
	return Summary{
		N:    len(samples),
		P50:  Percentile(samples, 50),
		P99:  Percentile(samples, 99),
		P999: Percentile(samples, 99.9),
		Max:  samples[len(samples)-1],
	}
}

// Percentile returns the nearest-rank percentile p (0 < p ≤ 100) of sorted.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	// Nearest rank: the smallest sample with at least p% of the samples at
	// or below it.
	rank := int(float64(len(sorted))*p/100+0.999999) - 1
	return sorted[max(0, min(rank, len(sorted)-1))]
}

// FormatDuration prints a latency with three significant digits in a unit
// that keeps it short: 850ns, 12.3µs, 4.56ms, 1.23s.
func FormatDuration(d time.Duration) string {
	switch {
	case d < time.Microsecond:
		return fmt.Sprintf("%dns", d.Nanoseconds())
	case d < time.Millisecond:
		return sig3(float64(d)/float64(time.Microsecond)) + "µs"
	case d < time.Second:
		return sig3(float64(d)/float64(time.Millisecond)) + "ms"
	}
	return sig3(d.Seconds()) + "s"
}

// FormatRate prints a per-second rate: 950/s, 12.3k/s, 1.23M/s.
func FormatRate(perSecond float64) string {
	switch {
	case perSecond < 1000:
		return sig3(perSecond) + "/s"
	case perSecond < 1e6:
		return sig3(perSecond/1e3) + "k/s"
	}
	return sig3(perSecond/1e6) + "M/s"
}

// FormatRatio prints a ratio as a multiple: 0.87×, 12.3×, 1,234×.
func FormatRatio(r float64) string {
	if r >= 1000 {
		return fmt.Sprintf("%s×", groupThousands(int64(r+0.5)))
	}
	return sig3(r) + "×"
}

// FormatCount prints an integer with thousands separators: 1,000,000.
func FormatCount(n int64) string { return groupThousands(n) }

func sig3(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func groupThousands(n int64) string {
	s := fmt.Sprint(n)
	neg := n < 0
	if neg {
		s = s[1:]
	}
	var out []byte
	for i, c := range []byte(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, c)
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

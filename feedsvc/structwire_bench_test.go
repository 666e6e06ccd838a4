package feedsvc

import (
	"testing"

	"github.com/killfeed/killfeed/internal/bench"
)

// BenchmarkJSONToStructWire transcodes a realistic ~1 KB killmail: the work
// a protobuf client's first read of each killmail costs (it is cached on the
// event afterwards).
func BenchmarkJSONToStructWire(b *testing.B) {
	km := bench.Killmail(123456789, 30000142, 0)
	b.SetBytes(int64(len(km)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := jsonToStructWire(km); err != nil {
			b.Fatal(err)
		}
	}
}

package offsets_test

import (
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/killfeed/killfeed/offsets"
)

// fetchGate is a franz-go hook that holds back chosen offsets-topic records
// from the store's tail: a fetch holding one of them is not handed to the
// tail until the test releases it. It lets a test order the tail's reads
// against the store's own writes.
type fetchGate struct {
	steps map[int64]*gateStep
}

type gateStep struct {
	reached, released         chan struct{}
	reachedOnce, releasedOnce sync.Once
}

func newFetchGate(holdOffsets ...int64) *fetchGate {
	g := &fetchGate{steps: map[int64]*gateStep{}}
	for _, o := range holdOffsets {
		g.steps[o] = &gateStep{reached: make(chan struct{}), released: make(chan struct{})}
	}
	return g
}

// OnFetchRecordBuffered runs in franz-go's fetch goroutine, before the fetch
// is buffered for PollFetches.
func (g *fetchGate) OnFetchRecordBuffered(r *kgo.Record) {
	st, ok := g.steps[r.Offset]
	if !ok {
		return
	}
	st.reachedOnce.Do(func() { close(st.reached) })
	<-st.released
}

// waitReached waits until a fetch holding the record at offset o is held.
func (g *fetchGate) waitReached(t testing.TB, o int64) {
	t.Helper()
	select {
	case <-g.steps[o].reached:
	case <-time.After(testTimeout):
		t.Fatalf("the tail never fetched offset %d", o)
	}
}

func (g *fetchGate) release(o int64) {
	st := g.steps[o]
	st.releasedOnce.Do(func() { close(st.released) })
}

func (g *fetchGate) releaseAll() {
	for o := range g.steps {
		g.release(o)
	}
}

// waitConsumed waits until the store's tail has applied the offsets topic
// up to (not including) offset next.
func waitConsumed(t testing.TB, s *offsets.Store, next int64) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for s.Consumed(0) < next {
		if time.Now().After(deadline) {
			t.Fatalf("the tail did not reach offset %d (at %d)", next, s.Consumed(0))
		}
		time.Sleep(time.Millisecond)
	}
}

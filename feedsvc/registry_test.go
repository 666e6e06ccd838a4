package feedsvc

import (
	"slices"
	"testing"
)

// TestRegistryWakesTheStreamsOfASystem registers streams sharing systems,
// removes some, and checks that a wake-up reaches exactly the streams still
// following the system, tells each which systems changed, and that
// shutting down reaches streams registered before and after it.
func TestRegistryWakesTheStreamsOfASystem(t *testing.T) {
	r := newRegistry()
	a, removeA := r.add([]int64{1, 2})
	b, removeB := r.add([]int64{2, 3})
	c, removeC := r.add([]int64{2})
	if n := r.count(); n != 3 {
		t.Fatalf("count %d, want 3", n)
	}
	woken := func(w *waiter) bool {
		select {
		case <-w.wake:
			return true
		default:
			return false
		}
	}

	removeA()
	r.notify([]int64{2})
	if woken(a) || !woken(b) || !woken(c) {
		t.Fatalf("after removing a, a wake-up of system 2 must reach b and c only")
	}
	if got := b.take(); !slices.Equal(got, []int64{2}) {
		t.Fatalf("b was told of systems %v, want [2]", got)
	}

	removeC()
	r.notify([]int64{1, 2, 3})
	if woken(c) || !woken(b) {
		t.Fatalf("after removing c, only b must be woken")
	}
	got := b.take()
	slices.Sort(got)
	if !slices.Equal(got, []int64{2, 3}) {
		t.Fatalf("b was told of systems %v, want [2 3]", got)
	}

	removeB()
	if n, left := r.count(), len(r.bySystem); n != 0 || left != 0 {
		t.Fatalf("after removing every stream: count %d, %d systems still indexed", n, left)
	}

	d, removeD := r.add([]int64{4})
	defer removeD()
	r.closeAll()
	r.closeAll() // a second drain must not panic
	e, removeE := r.add([]int64{4})
	defer removeE()
	for _, w := range []*waiter{d, e} {
		select {
		case <-w.closed:
		default:
			t.Fatalf("a stream registered before or after shutting down was not told")
		}
	}
}

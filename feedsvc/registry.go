package feedsvc

import (
	"context"
	"slices"
	"sync"
	"time"
)

// registry wakes streams when their systems get events. The tail never
// blocks on a stream: a wake-up is a non-blocking send on a one-slot channel,
// so a slow stream just finds the signal already pending.
type registry struct {
	mu sync.Mutex
	// bySystem lists each system's waiters. A slice rather than a set: a
	// system has one or a few waiters, and a map per system cost an idle
	// stream of ten systems about a kilobyte (measurement 4 of
	// BENCHMARKS.md).
	bySystem map[int64][]*waiter
	// waiters counts the registered waiters.
	waiters int
	// closing is closed when the service shuts down; every waiter's
	// closed is this one channel.
	closing chan struct{}
	// byClient holds each client's live stream on this replica.
	byClient map[string]*clientStream
}

// takeOverWait bounds how long a new stream waits for its client's old one
// to end.
const takeOverWait = 5 * time.Second

// clientStream is a running stream that a newer one of the same client can
// end and wait for.
type clientStream struct {
	cancel context.CancelCauseFunc
	done   chan struct{}
}

// takeOver makes the caller the client's only stream on this replica: an
// older stream is cancelled and waited for, including the commit it may be
// making, so the new stream starts from positions that include everything
// the old one delivered. Call release when the stream ends.
func (r *registry) takeOver(ctx context.Context, client string) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	me := &clientStream{cancel: cancel, done: make(chan struct{})}
	for {
		r.mu.Lock()
		old := r.byClient[client]
		if old == nil {
			r.byClient[client] = me
			r.mu.Unlock()
			break
		}
		r.mu.Unlock()
		old.cancel(errSuperseded)
		select {
		case <-old.done:
		case <-time.After(takeOverWait):
			// The old stream is stuck sending to a client that stopped
			// reading. Go on without it: commits only move forward, so
			// whatever it still commits cannot rewind this stream.
			r.mu.Lock()
			if r.byClient[client] == old {
				delete(r.byClient, client)
			}
			r.mu.Unlock()
		case <-ctx.Done():
			return ctx, func() { cancel(nil); close(me.done) }
		}
	}
	return ctx, func() {
		r.mu.Lock()
		if r.byClient[client] == me {
			delete(r.byClient, client)
		}
		r.mu.Unlock()
		cancel(nil)
		close(me.done)
	}
}

// waiter is one stream's wake-up channel, and the systems that got events
// since the stream last looked, so a stream of many systems re-reads only
// those.
type waiter struct {
	wake chan struct{}
	// closed is closed when the service shuts down.
	closed <-chan struct{}

	mu sync.Mutex
	// touched is nil until the first wake-up: an idle stream needs none.
	touched map[int64]struct{}
}

// take returns the systems touched since the last take, and forgets them.
func (w *waiter) take() []int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]int64, 0, len(w.touched))
	for s := range w.touched {
		out = append(out, s)
	}
	clear(w.touched)
	return out
}

func newRegistry() *registry {
	return &registry{bySystem: map[int64][]*waiter{}, closing: make(chan struct{}), byClient: map[string]*clientStream{}}
}

// add registers a waiter for systems; remove with the returned function.
func (r *registry) add(systems []int64) (*waiter, func()) {
	w := &waiter{wake: make(chan struct{}, 1), closed: r.closing}
	r.mu.Lock()
	r.waiters++
	for _, s := range systems {
		r.bySystem[s] = append(r.bySystem[s], w)
	}
	r.mu.Unlock()
	return w, func() {
		r.mu.Lock()
		r.waiters--
		for _, s := range systems {
			ws := r.bySystem[s]
			if i := slices.Index(ws, w); i >= 0 {
				last := len(ws) - 1
				ws[i], ws[last] = ws[last], nil
				ws = ws[:last]
			}
			if len(ws) == 0 {
				delete(r.bySystem, s)
			} else {
				r.bySystem[s] = ws
			}
		}
		r.mu.Unlock()
	}
}

// notify wakes every waiter of the given systems.
func (r *registry) notify(systems []int64) {
	if len(systems) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range systems {
		for _, w := range r.bySystem[s] {
			w.mu.Lock()
			if w.touched == nil {
				w.touched = map[int64]struct{}{}
			}
			w.touched[s] = struct{}{}
			w.mu.Unlock()
			select {
			case w.wake <- struct{}{}:
			default:
			}
		}
	}
}

// count is the number of registered streams.
func (r *registry) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.waiters
}

// closeAll tells every waiter, and every one registered later, that the
// service is stopping.
func (r *registry) closeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.closing:
	default:
		close(r.closing)
	}
}

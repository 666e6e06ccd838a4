package feedsvc

import (
	"context"
	"sync"
	"time"
)

// registry wakes streams when their systems get events. The tail never
// blocks on a stream: a wake-up is a non-blocking send on a one-slot channel,
// so a slow stream just finds the signal already pending.
type registry struct {
	mu       sync.Mutex
	bySystem map[int64]map[*waiter]struct{}
	all      map[*waiter]struct{}
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
	closed chan struct{}

	mu      sync.Mutex
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
	return &registry{bySystem: map[int64]map[*waiter]struct{}{}, all: map[*waiter]struct{}{}, byClient: map[string]*clientStream{}}
}

// add registers a waiter for systems; remove with the returned function.
func (r *registry) add(systems []int64) (*waiter, func()) {
	w := &waiter{wake: make(chan struct{}, 1), closed: make(chan struct{}), touched: map[int64]struct{}{}}
	r.mu.Lock()
	r.all[w] = struct{}{}
	for _, s := range systems {
		set := r.bySystem[s]
		if set == nil {
			set = map[*waiter]struct{}{}
			r.bySystem[s] = set
		}
		set[w] = struct{}{}
	}
	r.mu.Unlock()
	return w, func() {
		r.mu.Lock()
		delete(r.all, w)
		for _, s := range systems {
			if set := r.bySystem[s]; set != nil {
				delete(set, w)
				if len(set) == 0 {
					delete(r.bySystem, s)
				}
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
		for w := range r.bySystem[s] {
			w.mu.Lock()
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
	return len(r.all)
}

// closeAll tells every waiter the service is stopping.
func (r *registry) closeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for w := range r.all {
		close(w.closed)
		delete(r.all, w)
	}
}

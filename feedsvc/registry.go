package feedsvc

import "sync"

// registry wakes streams when their systems get events. The tail never
// blocks on a stream: a wake-up is a non-blocking send on a one-slot channel,
// so a slow stream just finds the signal already pending.
type registry struct {
	mu       sync.Mutex
	bySystem map[int64]map[*waiter]struct{}
	all      map[*waiter]struct{}
}

// waiter is one stream's wake-up channel.
type waiter struct {
	wake chan struct{}
	// closed is closed when the service shuts down.
	closed chan struct{}
}

func newRegistry() *registry {
	return &registry{bySystem: map[int64]map[*waiter]struct{}{}, all: map[*waiter]struct{}{}}
}

// add registers a waiter for systems; remove with the returned function.
func (r *registry) add(systems []int64) (*waiter, func()) {
	w := &waiter{wake: make(chan struct{}, 1), closed: make(chan struct{})}
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

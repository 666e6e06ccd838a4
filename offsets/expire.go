package offsets

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// expireLoop runs ExpireIdle periodically: every tenth of the retention, at
// most hourly, at least every second.
func (s *Store) expireLoop(ctx context.Context) {
	every := min(max(s.opts.Retention/10, time.Second), time.Hour)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n, err := s.ExpireIdle(ctx); err != nil {
				s.opts.Logger.Warn("expiring idle clients", "err", err)
			} else if n > 0 {
				s.opts.Logger.Info("expired idle clients", "clients", n, "idle_longer_than", s.opts.Retention)
			}
		}
	}
}

// ExpireIdle deletes (with tombstones) the positions of every client idle
// for longer than the retention, and forgets tombstones the tail has passed.
// It returns the number of clients expired.
func (s *Store) ExpireIdle(ctx context.Context) (int, error) {
	cutoff := s.opts.Now().Add(-s.opts.Retention)
	var recs []*kgo.Record
	expired := 0
	s.mu.Lock()
	consumed := s.consumed
	for id, c := range s.clients {
		live := 0
		for sys, e := range c.systems {
			if e.deleted() {
				// One partition only holds this topic's keys in practice;
				// a tombstone the tail has passed can no longer be undone.
				if passed(consumed, e.version) {
					delete(c.systems, sys)
				}
				continue
			}
			live++
		}
		if live == 0 {
			if len(c.systems) == 0 {
				delete(s.clients, id)
			}
			continue
		}
		if c.lastSeen.After(cutoff) || c.newestUpdate().After(cutoff) {
			continue
		}
		expired++
		for sys, e := range c.systems {
			if !e.deleted() {
				recs = append(recs, &kgo.Record{Topic: s.opts.Topic, Key: recordKey(id, sys)})
			}
		}
	}
	s.mu.Unlock()
	if len(recs) == 0 {
		return 0, nil
	}
	if err := s.produceAndApply(ctx, recs, "expiring idle clients"); err != nil {
		return 0, err
	}
	return expired, nil
}

// passed reports whether the tail has read past version on every partition:
// the conservative test, since a key's partition is not tracked.
func passed(consumed map[int32]int64, version int64) bool {
	for _, o := range consumed {
		if o <= version {
			return false
		}
	}
	return true
}

package offsets

// Consumed is how far the store's tail has applied partition p of the
// offsets topic: the next offset it will read.
func (s *Store) Consumed(p int32) int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.consumed[p]
}

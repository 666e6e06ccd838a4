package feedsvc

import (
	"context"

	"github.com/killfeed/killfeed/offsets"
)

// fetch serves a Poll (or a Next, with limit 1): the client's events after
// its positions and, in automatic mode, the commit of the new positions. The
// commit is durable before the events are returned, so a restarted service
// never delivers them again; if it fails, nothing is returned.
func (s *Service) fetch(ctx context.Context, req request, method string) (readResult, error) {
	defer s.locks.lock(req.client).unlock()
	if err := s.syncIfReplicated(ctx); err != nil {
		return readResult{}, err
	}
	pos := s.lookups.get(s.store, req.client, req.systems)
	res, err := s.read(ctx, req.systems, pos.set(), req.limit, s.opts.MaxResponseBytes)
	s.lookups.put(pos)
	if err != nil {
		return readResult{}, err
	}
	if req.auto {
		if err := s.commitForward(ctx, req.client, res.next); err != nil {
			return readResult{}, err
		}
	}
	s.metrics.servedBy(method).Add(float64(len(res.events)))
	s.metrics.gaps.Add(float64(len(res.gaps)))
	if err := s.store.Touch(ctx, req.client); err != nil {
		s.log.Warn("refreshing client activity", "client_id", req.client, "err", err)
	}
	return res, nil
}

// positions returns a client's positions in the given systems. It looks up
// only those systems (PositionsIn): copying and sorting all of a client's
// positions on every read was a third of a caught-up Poll's cost.
func (s *Service) positions(client string, systems []int64) map[sysPart]int64 {
	return positionsMap(s.store.PositionsIn(client, systems), nil)
}

// commitForward commits the positions in next that are ahead of the
// client's committed ones. Positions only move forward this way, so a late
// commit (an out-of-order explicit Commit, or a stream that was replaced
// while sending) never makes a client read events again. The caller holds
// the client's lock.
func (s *Service) commitForward(ctx context.Context, client string, next []position) error {
	if len(next) == 0 {
		return nil
	}
	systems := make([]int64, 0, len(next))
	for _, p := range next {
		systems = append(systems, p.key.system)
	}
	current := s.positions(client, systems)
	var ps []offsets.Position
	for _, p := range next {
		if cur, ok := current[p.key]; ok && cur >= p.next {
			continue
		}
		ps = append(ps, offsets.Position{SystemID: p.key.system, Partition: p.key.partition, Offset: p.next})
	}
	if len(ps) == 0 {
		return nil
	}
	if err := s.store.Commit(ctx, client, ps); err != nil {
		return err
	}
	s.metrics.commits.Inc()
	return nil
}

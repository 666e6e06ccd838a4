package feedsvc

import (
	"context"
	"fmt"

	"connectrpc.com/connect"
	"github.com/twmb/franz-go/pkg/kadm"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/killfeed/killfeed/offsets"
	killfeedv1 "github.com/killfeed/killfeed/proto/killfeed/v1"
)

// Commit records processed events (explicit commit mode). A position only
// moves forward: committing an event at or before the current position is a
// no-op, so a client committing out of order never rewinds. Rewinding is
// ResetPositions' job.
func (h *connectHandler) Commit(ctx context.Context, req *connect.Request[killfeedv1.CommitRequest]) (*connect.Response[killfeedv1.CommitResponse], error) {
	s := h.svc
	client := req.Msg.GetClientId()
	if _, err := s.admit(req.Header(), req.Peer().Addr, client); err != nil {
		return nil, rpcError(err)
	}
	cursors := req.Msg.GetCursors()
	if len(cursors) == 0 {
		return nil, rpcError(badField("cursors", "at least one cursor is required"))
	}
	if len(cursors) > s.opts.MaxSystemsPerRequest {
		return nil, rpcError(badField("cursors", "%d cursors given; at most %d are allowed", len(cursors), s.opts.MaxSystemsPerRequest))
	}
	for i, c := range cursors {
		if c.GetSystemId() <= 0 {
			return nil, rpcError(badField("cursors", "cursor %d: system_id %d is not a solar system id", i, c.GetSystemId()))
		}
		if c.GetEventId() < 0 {
			return nil, rpcError(badField("cursors", "cursor %d: event_id %d is negative", i, c.GetEventId()))
		}
	}
	defer s.locks.lock(client).unlock()
	if err := s.syncIfReplicated(ctx); err != nil {
		return nil, rpcError(err)
	}
	// The latest cursor of each system-partition counts.
	latest := map[sysPart]int64{}
	for _, c := range cursors {
		p, off := splitEventID(c.GetEventId())
		k := sysPart{c.GetSystemId(), p}
		latest[k] = max(latest[k], off+1)
	}
	next := make([]position, 0, len(latest))
	for k, o := range latest {
		next = append(next, position{k, o})
	}
	if err := s.commitForward(ctx, client, next); err != nil {
		return nil, rpcError(err)
	}
	return connect.NewResponse(&killfeedv1.CommitResponse{}), nil
}

func (s *Service) syncIfReplicated(ctx context.Context) error {
	if !s.opts.SyncPositions {
		return nil
	}
	if err := s.store.Sync(ctx); err != nil {
		return fmt.Errorf("catching up with other replicas' positions: %w", err)
	}
	return nil
}

// GetPositions lists a client's positions.
func (h *connectHandler) GetPositions(ctx context.Context, req *connect.Request[killfeedv1.GetPositionsRequest]) (*connect.Response[killfeedv1.GetPositionsResponse], error) {
	client := req.Msg.GetClientId()
	if _, err := h.svc.admit(req.Header(), req.Peer().Addr, client); err != nil {
		return nil, rpcError(err)
	}
	if err := h.svc.syncIfReplicated(ctx); err != nil {
		return nil, rpcError(err)
	}
	return connect.NewResponse(&killfeedv1.GetPositionsResponse{Positions: positionsProto(h.svc.store.Positions(client), nil)}), nil
}

// positionsProto converts positions, keeping only the given systems when
// systems is not nil.
func positionsProto(ps []offsets.Position, systems map[int64]bool) []*killfeedv1.Position {
	out := []*killfeedv1.Position{}
	for _, p := range ps {
		if systems != nil && !systems[p.SystemID] {
			continue
		}
		out = append(out, &killfeedv1.Position{
			SystemId:  p.SystemID,
			EventId:   eventID(p.Partition, p.Offset-1),
			UpdatedAt: timestamppb.New(p.UpdatedAt),
		})
	}
	return out
}

// ResetPositions moves a client's positions in the given systems to the
// earliest retained event, past the latest, or to a time.
func (h *connectHandler) ResetPositions(ctx context.Context, req *connect.Request[killfeedv1.ResetPositionsRequest]) (*connect.Response[killfeedv1.ResetPositionsResponse], error) {
	s := h.svc
	client, systems := req.Msg.GetClientId(), req.Msg.GetSystemIds()
	if _, err := s.admit(req.Header(), req.Peer().Addr, client); err != nil {
		return nil, rpcError(err)
	}
	if err := validateSystems(systems, s.opts.MaxSystemsPerRequest); err != nil {
		return nil, rpcError(err)
	}
	var atTime map[int32]int64
	switch to := req.Msg.GetTo().(type) {
	case *killfeedv1.ResetPositionsRequest_Earliest, *killfeedv1.ResetPositionsRequest_Latest:
	case *killfeedv1.ResetPositionsRequest_Time:
		if err := to.Time.CheckValid(); err != nil {
			return nil, rpcError(badField("time", "%v", err))
		}
		var err error
		// Before 1970 means from the earliest event: Kafka reads negative
		// times as special requests (-1 is the end, -2 the start) or refuses
		// them.
		if atTime, err = s.offsetsAtTime(ctx, max(to.Time.AsTime().UnixMilli(), 0)); err != nil {
			return nil, rpcError(err)
		}
	default:
		return nil, rpcError(badField("to", "one of earliest, latest or time is required"))
	}

	defer s.locks.lock(client).unlock()
	if err := s.syncIfReplicated(ctx); err != nil {
		return nil, rpcError(err)
	}
	current := s.positions(client, systems)
	var ps []offsets.Position
	m := s.mem
	m.mu.RLock()
	m.eachSysPartLocked(systems, positionsIn(current), everyPosition, func(k sysPart, part *partState, _ *sysLog, _ int64, _ bool) {
		off := part.logStart
		switch req.Msg.GetTo().(type) {
		case *killfeedv1.ResetPositionsRequest_Latest:
			off = part.next
		case *killfeedv1.ResetPositionsRequest_Time:
			off = max(atTime[k.partition], part.logStart)
		}
		ps = append(ps, offsets.Position{SystemID: k.system, Partition: k.partition, Offset: off})
	})
	m.mu.RUnlock()
	if err := s.store.Commit(ctx, client, ps); err != nil {
		return nil, rpcError(err)
	}
	want := map[int64]bool{}
	for _, sys := range systems {
		want[sys] = true
	}
	return connect.NewResponse(&killfeedv1.ResetPositionsResponse{Positions: positionsProto(s.store.Positions(client), want)}), nil
}

// offsetsAtTime returns, per partition, the first offset whose timestamp is
// at or after ms (the end offset where there is none).
func (s *Service) offsetsAtTime(ctx context.Context, ms int64) (map[int32]int64, error) {
	listed, err := s.tail.adm.ListOffsetsAfterMilli(ctx, ms, s.opts.Topic)
	if err == nil {
		err = listed.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("listing offsets at time %d: %w", ms, err)
	}
	out := map[int32]int64{}
	listed.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out, nil
}

// DeleteClient forgets a client.
func (h *connectHandler) DeleteClient(ctx context.Context, req *connect.Request[killfeedv1.DeleteClientRequest]) (*connect.Response[killfeedv1.DeleteClientResponse], error) {
	client := req.Msg.GetClientId()
	if _, err := h.svc.admit(req.Header(), req.Peer().Addr, client); err != nil {
		return nil, rpcError(err)
	}
	defer h.svc.locks.lock(client).unlock()
	if err := h.svc.syncIfReplicated(ctx); err != nil {
		return nil, rpcError(err)
	}
	if err := h.svc.store.DeleteClient(ctx, client); err != nil {
		return nil, rpcError(err)
	}
	return connect.NewResponse(&killfeedv1.DeleteClientResponse{}), nil
}

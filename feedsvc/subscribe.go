package feedsvc

import (
	"context"
	"errors"
	"maps"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	killfeedv1 "github.com/killfeed/killfeed/proto/killfeed/v1"
)

// errShuttingDown ends streams when the service stops. Unavailable tells
// clients to reconnect, and their positions make the resumption exact.
var errShuttingDown = errors.New("killfeed is shutting down; resubscribe with the same client_id to continue")

// errSuperseded ends a stream when its client opens another one: one
// consumer per client_id, as Kafka has one member per partition.
var errSuperseded = errors.New("a newer Subscribe of the same client_id replaced this stream")

// subscribeBatch is the most events sent in one stream message.
const subscribeBatch = 500

// Subscribe streams backfill then live events. There is no separate
// hand-over: the stream registers for wake-ups first, then repeatedly reads
// from its own cursor. An event stored before registration is found by the
// next read, one stored after it also wakes the stream, and the cursor makes
// every read start exactly after the last event sent — so nothing is missed
// and nothing repeats. The tail never waits for a stream: a slow stream just
// reads from further behind (from Kafka if memory no longer holds it).
func (h *connectHandler) Subscribe(ctx context.Context, req *connect.Request[killfeedv1.SubscribeRequest], stream *connect.ServerStream[killfeedv1.SubscribeResponse]) error {
	s := h.svc
	r, err := s.admitRequest(req.Header(), req.Peer().Addr, req.Msg.GetClientId(), req.Msg.GetSystemIds(), subscribeBatch, req.Msg.GetCommitMode())
	if err != nil {
		return rpcError(err)
	}
	if s.draining.Load() {
		return connect.NewError(connect.CodeUnavailable, errShuttingDown)
	}
	beat := s.opts.Heartbeat
	if hs := req.Msg.GetHeartbeatSeconds(); hs != 0 {
		if hs < 1 || hs > 300 {
			return rpcError(badField("heartbeat_seconds", "%d is out of range; want 0 (the default, %s) or 1 to 300", hs, s.opts.Heartbeat))
		}
		beat = time.Duration(hs) * time.Second
	}
	asJSON := wantsJSON(req.Header())
	closeStream, err := s.limits.openStream(r.caller)
	if err != nil {
		s.metrics.rejectedLimit.WithLabelValues("streams").Inc()
		return rpcError(err)
	}
	defer closeStream()

	ctx, release := s.streams.takeOver(ctx, r.client)
	defer release()
	w, remove := s.streams.add(r.systems)
	defer remove()
	if err := s.syncIfReplicated(ctx); err != nil {
		return rpcError(err)
	}
	cursor := s.positions(r.client, r.systems)
	send := func(m *killfeedv1.SubscribeResponse) error {
		if err := stream.Send(m); err != nil {
			return connect.NewError(connect.CodeCanceled, err)
		}
		return nil
	}

	backfilled := false
	idle := time.NewTimer(beat)
	defer idle.Stop()
	// The first read covers every system; later ones only those the tail
	// touched since, so a wake-up costs what changed, not the stream's size.
	systems := r.systems
	for {
		res, err := s.read(ctx, systems, cursor, r.limit, s.opts.MaxResponseBytes)
		if err != nil {
			return rpcError(err)
		}
		if err := s.deliver(ctx, r, res, asJSON, send); err != nil {
			return err
		}
		maps.Copy(cursor, res.next)
		if len(res.events) > 0 || len(res.gaps) > 0 {
			idle.Reset(beat)
		}
		if res.more {
			continue
		}
		if !backfilled {
			backfilled = true
			if err := send(&killfeedv1.SubscribeResponse{Kind: &killfeedv1.SubscribeResponse_BackfillDone{BackfillDone: &killfeedv1.BackfillDone{}}}); err != nil {
				return err
			}
		}
		select {
		case <-w.wake:
			if systems = w.take(); len(systems) == 0 {
				systems = r.systems
			}
		case <-idle.C:
			if err := send(&killfeedv1.SubscribeResponse{Kind: &killfeedv1.SubscribeResponse_Heartbeat{Heartbeat: &killfeedv1.Heartbeat{Time: timestamppb.Now()}}}); err != nil {
				return err
			}
			idle.Reset(beat)
		case <-w.closed:
			return connect.NewError(connect.CodeUnavailable, errShuttingDown)
		case <-ctx.Done():
			if errors.Is(context.Cause(ctx), errSuperseded) {
				return connect.NewError(connect.CodeAborted, errSuperseded)
			}
			return connect.NewError(connect.CodeCanceled, ctx.Err())
		}
	}
}

// deliver sends one read's gaps and events and, in automatic mode, commits
// the positions once the events are handed to the transport.
func (s *Service) deliver(ctx context.Context, r request, res readResult, asJSON bool, send func(*killfeedv1.SubscribeResponse) error) error {
	s.metrics.served.WithLabelValues("Subscribe").Add(float64(len(res.events)))
	s.metrics.gaps.Add(float64(len(res.gaps)))
	for _, g := range gapsProto(res.gaps) {
		if err := send(&killfeedv1.SubscribeResponse{Kind: &killfeedv1.SubscribeResponse_Gap{Gap: g}}); err != nil {
			return err
		}
	}
	if len(res.events) > 0 {
		evs, err := eventsProto(res.events, asJSON)
		if err != nil {
			return rpcError(err)
		}
		if err := send(&killfeedv1.SubscribeResponse{Kind: &killfeedv1.SubscribeResponse_Events{Events: &killfeedv1.Events{Events: evs}}}); err != nil {
			return err
		}
	}
	if !r.auto || len(res.next) == 0 {
		return nil
	}
	unlock := s.locks.lock(r.client)
	defer unlock()
	if err := s.commitForward(ctx, r.client, res.next); err != nil {
		return rpcError(err)
	}
	return nil
}

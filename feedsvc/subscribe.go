package feedsvc

import (
	"context"
	"errors"
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
	var rest *mergeTree // the unfinished merge of a read that hit its limit
	for {
		var res readResult
		switch {
		case rest != nil:
			res = readMore(rest, r.limit, s.opts.MaxResponseBytes)
		case len(systems) == 0:
			// A wake-up whose systems an earlier take already collected,
			// and whose events the read after it served: nothing is new.
			// Reading every system then, as a fallback, made a stream of
			// 1,000 systems cost a third more per live event.
		case !backfilled:
			if res, err = s.read(ctx, systems, positionsIn(cursor), r.limit, s.opts.MaxResponseBytes); err != nil {
				return rpcError(err)
			}
		default:
			if res, err = s.readNew(ctx, systems, positionsIn(cursor), r.limit, s.opts.MaxResponseBytes); err != nil {
				return rpcError(err)
			}
		}
		rest = res.rest
		if err := s.deliver(ctx, r, res, asJSON, send); err != nil {
			return err
		}
		advanceCursor(cursor, res.cursor)
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
			systems = w.take()
		case <-idle.C:
			if err := send(&killfeedv1.SubscribeResponse{Kind: &killfeedv1.SubscribeResponse_Heartbeat{Heartbeat: &killfeedv1.Heartbeat{Time: timestamppb.Now()}}}); err != nil {
				return err
			}
			idle.Reset(beat)
		case <-w.closed:
			return connect.NewError(connect.CodeUnavailable, errShuttingDown)
		case <-ctx.Done():
			return streamEnded(ctx)
		}
	}
}

// deliver sends one read's gaps and events; in automatic mode it first
// commits the positions after them.
//
// The commit comes first, as in Poll: once a client holds an event, its
// position is durable and visible to every replica, so a client that hangs
// up after a batch and resubscribes on another replica (SyncPositions) never
// gets the batch again. Committing after the send let that replica read the
// old position while the commit was still on its way to Kafka, and send the
// batch twice. The cost is automatic mode's documented one: a batch the
// client does not receive (it hung up, the connection died) is not sent
// again.
func (s *Service) deliver(ctx context.Context, r request, res readResult, asJSON bool, send func(*killfeedv1.SubscribeResponse) error) error {
	s.metrics.servedBy("Subscribe").Add(float64(len(res.events)))
	s.metrics.gaps.Add(float64(len(res.gaps)))
	if r.auto && len(res.next) > 0 {
		if ctx.Err() != nil {
			// Replaced or hung up: commit nothing that cannot be sent.
			return streamEnded(ctx)
		}
		held := s.locks.lock(r.client)
		err := s.commitForward(ctx, r.client, res.next)
		held.unlock()
		if err != nil {
			return rpcError(err)
		}
	}
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
	return nil
}

// streamEnded is the error a stream whose context ended stops with: aborted
// when a newer stream of its client replaced it, canceled otherwise.
func streamEnded(ctx context.Context) error {
	if errors.Is(context.Cause(ctx), errSuperseded) {
		return connect.NewError(connect.CodeAborted, errSuperseded)
	}
	return connect.NewError(connect.CodeCanceled, ctx.Err())
}

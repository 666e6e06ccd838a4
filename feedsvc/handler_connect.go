package feedsvc

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"connectrpc.com/connect"

	killfeedv1 "github.com/killfeed/killfeed/proto/killfeed/v1"
	"github.com/killfeed/killfeed/proto/killfeed/v1/killfeedv1connect"
)

// connectHandler serves KillfeedService over Connect, gRPC and gRPC-Web.
type connectHandler struct {
	killfeedv1connect.UnimplementedKillfeedServiceHandler
	svc *Service
}

var _ killfeedv1connect.KillfeedServiceHandler = (*connectHandler)(nil)

func (h *connectHandler) Poll(ctx context.Context, req *connect.Request[killfeedv1.PollRequest]) (*connect.Response[killfeedv1.PollResponse], error) {
	r, err := h.svc.admitRequest(req.Header(), req.Peer().Addr, req.Msg.GetClientId(), req.Msg.GetSystemIds(), req.Msg.GetLimit(), req.Msg.GetCommitMode())
	if err != nil {
		return nil, rpcError(err)
	}
	res, err := h.svc.fetch(ctx, r, "Poll")
	if err != nil {
		return nil, rpcError(err)
	}
	out, err := pollResponse(res, wantsJSON(req.Header()))
	if err != nil {
		return nil, rpcError(err)
	}
	return connect.NewResponse(out), nil
}

func (h *connectHandler) Next(ctx context.Context, req *connect.Request[killfeedv1.NextRequest]) (*connect.Response[killfeedv1.NextResponse], error) {
	r, err := h.svc.admitRequest(req.Header(), req.Peer().Addr, req.Msg.GetClientId(), req.Msg.GetSystemIds(), 1, req.Msg.GetCommitMode())
	if err != nil {
		return nil, rpcError(err)
	}
	res, err := h.svc.fetch(ctx, r, "Next")
	if err != nil {
		return nil, rpcError(err)
	}
	out := &killfeedv1.NextResponse{Gaps: gapsProto(res.gaps)}
	if len(res.events) > 0 {
		if out.Event, err = eventProto(res.events[0], wantsJSON(req.Header())); err != nil {
			return nil, rpcError(err)
		}
	}
	return connect.NewResponse(out), nil
}

// wantsJSON reports whether the request's codec is JSON, in which case
// killmails are attached as their stored JSON rather than as protobuf.
func wantsJSON(h http.Header) bool {
	return strings.Contains(h.Get("Content-Type"), "json")
}

// rpcError maps an internal error to a Connect error: bad requests are
// invalid_argument naming the field; a cancelled caller keeps its code; the
// rest (Kafka unreachable, commit failed) is unavailable, which clients
// retry.
func rpcError(err error) error {
	var fe *fieldError
	var ce *callError
	switch {
	case errors.As(err, &fe):
		return connect.NewError(connect.CodeInvalidArgument, err)
	case errors.As(err, &ce):
		return connect.NewError(ce.code, err)
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, err)
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	}
	return connect.NewError(connect.CodeUnavailable, err)
}

// eventProto builds an API event, attaching the killmail in the form the
// client's codec will write.
func eventProto(e *event, asJSON bool) (*killfeedv1.Event, error) {
	ev := &killfeedv1.Event{}
	return ev, fillEvent(ev, e, asJSON)
}

// fillEvent sets ev, a zero Event, to e.
func fillEvent(ev *killfeedv1.Event, e *event, asJSON bool) error {
	ev.EventId, ev.SystemId = e.id(), e.system
	if asJSON {
		withRawKillmail(ev, e.json)
		return nil
	}
	f, err := e.structField()
	if err != nil {
		return err
	}
	withStructKillmail(ev, f)
	return nil
}

// eventsProto builds the API events of a batch. They are allocated
// together: one allocation per event was a fifth of a Poll's.
func eventsProto(evs []*event, asJSON bool) ([]*killfeedv1.Event, error) {
	out := make([]*killfeedv1.Event, len(evs))
	slab := make([]killfeedv1.Event, len(evs))
	for i, e := range evs {
		out[i] = &slab[i]
		if err := fillEvent(out[i], e, asJSON); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func pollResponse(res readResult, asJSON bool) (*killfeedv1.PollResponse, error) {
	evs, err := eventsProto(res.events, asJSON)
	if err != nil {
		return nil, err
	}
	return &killfeedv1.PollResponse{Events: evs, More: res.more, Gaps: gapsProto(res.gaps)}, nil
}

func gapsProto(gs []gap) []*killfeedv1.Gap {
	out := make([]*killfeedv1.Gap, len(gs))
	for i, g := range gs {
		out[i] = &killfeedv1.Gap{
			SystemId:    g.system,
			FromEventId: eventID(g.partition, g.from),
			ToEventId:   eventID(g.partition, g.to),
			LostEvents:  g.lost,
		}
	}
	return out
}

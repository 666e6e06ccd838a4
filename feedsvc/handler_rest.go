package feedsvc

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"

	"google.golang.org/protobuf/proto"

	killfeedv1 "github.com/killfeed/killfeed/proto/killfeed/v1"
)

// The seed routes, and the names their served events are counted under.
const (
	restPollRoute = "GET /api/killfeed"
	restNextRoute = "GET /api/killfeed/next"
	restPollName  = "REST poll"
	restNextName  = "REST next"
)

// parseRESTQuery reads the seed routes' query: client_id, systems (as
// systems[]=A&systems[]=B, systems=A&systems=B or systems=A,B), and an
// optional limit and commit_mode (auto or explicit).
func (s *Service) parseRESTQuery(r *http.Request, withLimit bool) (request, error) {
	q := r.URL.Query()
	c, err := s.admit(r.Header, r.RemoteAddr, q.Get("client_id"))
	if err != nil {
		return request{}, err
	}
	var systems []int64
	for _, key := range []string{"systems[]", "systems"} {
		for _, v := range q[key] {
			for _, part := range strings.Split(v, ",") {
				part = strings.TrimSpace(part)
				if part == "" {
					continue
				}
				id, err := strconv.ParseInt(part, 10, 64)
				if err != nil {
					return request{}, badField("systems", "%q is not a solar system id", part)
				}
				systems = append(systems, id)
			}
		}
	}
	var limit int64
	if v := q.Get("limit"); v != "" && withLimit {
		var err error
		if limit, err = strconv.ParseInt(v, 10, 32); err != nil {
			return request{}, badField("limit", "%q is not a number", v)
		}
	}
	mode := killfeedv1.CommitMode_COMMIT_MODE_AUTO
	switch v := q.Get("commit_mode"); v {
	case "", "auto":
	case "explicit":
		mode = killfeedv1.CommitMode_COMMIT_MODE_EXPLICIT
	default:
		return request{}, badField("commit_mode", "%q is not auto or explicit", v)
	}
	if !withLimit {
		limit = 1
	}
	req, err := s.newRequest(q.Get("client_id"), systems, int32(limit), mode)
	var fe *fieldError
	if errors.As(err, &fe) && fe.field == "system_ids" {
		fe.field = "systems" // name the field as the route spells it
	}
	req.caller = c
	return req, err
}

// restPoll serves GET /api/killfeed: 200 {"events":[...],"more":..,"gaps":[...]}.
func (s *Service) restPoll(w http.ResponseWriter, r *http.Request) error {
	req, err := s.parseRESTQuery(r, true)
	if err != nil {
		return err
	}
	res, err := s.fetch(r.Context(), req, restPollName)
	if err != nil {
		return err
	}
	out, err := pollResponse(res, true)
	if err != nil {
		return err
	}
	return writeRESTJSON(w, http.StatusOK, out)
}

// restNext serves GET /api/killfeed/next: 200 with the event, or 204 when
// there is none. Losses are reported in "gaps" beside the event, or in the
// Killfeed-Gaps header (JSON) of a 204.
func (s *Service) restNext(w http.ResponseWriter, r *http.Request) error {
	req, err := s.parseRESTQuery(r, false)
	if err != nil {
		return err
	}
	res, err := s.fetch(r.Context(), req, restNextName)
	if err != nil {
		return err
	}
	gaps := &killfeedv1.NextResponse{Gaps: gapsProto(res.gaps)}
	if len(res.events) == 0 {
		if len(res.gaps) > 0 {
			b, _ := appendJSONMessage(nil, gaps.ProtoReflect())
			w.Header().Set("Killfeed-Gaps", string(b))
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	ev, _ := eventProto(res.events[0], true)
	if len(res.gaps) == 0 {
		return writeRESTJSON(w, http.StatusOK, ev)
	}
	// The seed shape stays at the top level; gaps ride beside it.
	b, _ := appendJSONMessage(nil, ev.ProtoReflect())
	g, _ := appendJSONMessage(nil, gaps.ProtoReflect())
	b = append(b[:len(b)-1], ',')
	b = append(b, g[1:]...) // g is {"gaps":[...]}: splice its members in
	writeRESTBytes(w, http.StatusOK, b)
	return nil
}

// restRoute adapts a REST handler: it answers errors in the API's error
// shape and times the call for the metrics.
func (s *Service) restRoute(name string, h func(http.ResponseWriter, *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			// The mux routes HEAD to GET handlers; a HEAD would commit
			// positions for events whose body is never sent.
			w.Header().Set("Allow", http.MethodGet)
			http.Error(w, "only GET is allowed", http.StatusMethodNotAllowed)
			return
		}
		began := time.Now()
		err := h(w, r)
		if err != nil {
			err = writeRESTError(w, err)
		}
		s.metrics.observe(name, began, err)
	}
}

func writeRESTJSON(w http.ResponseWriter, status int, m proto.Message) error {
	b, err := appendJSONMessage(nil, m.ProtoReflect())
	if err != nil {
		return err
	}
	writeRESTBytes(w, status, b)
	return nil
}

func writeRESTBytes(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// writeRESTError answers with the same error shape as Connect,
// {"code":"invalid_argument","message":"systems: ..."}, and returns the
// error as a Connect error (for the metrics' code label).
func writeRESTError(w http.ResponseWriter, err error) error {
	status, code := http.StatusServiceUnavailable, connect.CodeUnavailable
	var fe *fieldError
	var ce *callError
	switch {
	case errors.As(err, &fe):
		status, code = http.StatusBadRequest, connect.CodeInvalidArgument
	case errors.As(err, &ce):
		status, code = ce.httpStatus(), ce.code
	}
	b, _ := json.Marshal(map[string]string{"code": code.String(), "message": err.Error()})
	writeRESTBytes(w, status, b)
	return connect.NewError(code, err)
}

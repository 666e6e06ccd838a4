package feedsvc

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	killfeedv1 "github.com/killfeed/killfeed/proto/killfeed/v1"
)

// parseRESTQuery reads the seed routes' query: client_id, systems (as
// systems[]=A&systems[]=B, systems=A&systems=B or systems=A,B), and an
// optional limit and commit_mode (auto or explicit).
func (s *Service) parseRESTQuery(q url.Values, withLimit bool) (request, error) {
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
	r, err := s.newRequest(q.Get("client_id"), systems, int32(limit), mode)
	var fe *fieldError
	if errors.As(err, &fe) && fe.field == "system_ids" {
		fe.field = "systems" // name the field as the route spells it
	}
	return r, err
}

// restPoll serves GET /api/killfeed: 200 {"events":[...],"more":..,"gaps":[...]}.
func (s *Service) restPoll(w http.ResponseWriter, r *http.Request) {
	req, err := s.parseRESTQuery(r.URL.Query(), true)
	if err != nil {
		writeRESTError(w, err)
		return
	}
	res, err := s.fetch(r.Context(), req)
	if err != nil {
		writeRESTError(w, err)
		return
	}
	out, err := pollResponse(res, true)
	if err != nil {
		writeRESTError(w, err)
		return
	}
	writeRESTJSON(w, http.StatusOK, out)
}

// restNext serves GET /api/killfeed/next: 200 with the event, or 204 when
// there is none. Losses are reported in "gaps" beside the event, or in the
// Killfeed-Gaps header (JSON) of a 204.
func (s *Service) restNext(w http.ResponseWriter, r *http.Request) {
	req, err := s.parseRESTQuery(r.URL.Query(), false)
	if err != nil {
		writeRESTError(w, err)
		return
	}
	res, err := s.fetch(r.Context(), req)
	if err != nil {
		writeRESTError(w, err)
		return
	}
	gaps := &killfeedv1.NextResponse{Gaps: gapsProto(res.gaps)}
	if len(res.events) == 0 {
		if len(res.gaps) > 0 {
			b, _ := appendJSONMessage(nil, gaps.ProtoReflect())
			w.Header().Set("Killfeed-Gaps", string(b))
		}
		w.WriteHeader(http.StatusNoContent)
		return
	}
	ev, _ := eventProto(res.events[0], true)
	if len(res.gaps) > 0 {
		// The seed shape stays at the top level; gaps ride beside it.
		b, _ := appendJSONMessage(nil, ev.ProtoReflect())
		g, _ := appendJSONMessage(nil, gaps.ProtoReflect())
		b = append(b[:len(b)-1], ',')
		b = append(b, g[1:]...) // g is {"gaps":[...]}: splice its members in
		writeRESTBytes(w, http.StatusOK, b)
		return
	}
	writeRESTJSON(w, http.StatusOK, ev)
}

func writeRESTJSON(w http.ResponseWriter, status int, m proto.Message) {
	b, err := appendJSONMessage(nil, m.ProtoReflect())
	if err != nil {
		writeRESTError(w, err)
		return
	}
	writeRESTBytes(w, status, b)
}

func writeRESTBytes(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// writeRESTError answers with the same error shape as Connect:
// {"code":"invalid_argument","message":"systems: ..."}.
func writeRESTError(w http.ResponseWriter, err error) {
	status, code := http.StatusServiceUnavailable, "unavailable"
	var fe *fieldError
	if errors.As(err, &fe) {
		status, code = http.StatusBadRequest, "invalid_argument"
	}
	b, _ := json.Marshal(map[string]string{"code": code, "message": err.Error()})
	writeRESTBytes(w, status, b)
}

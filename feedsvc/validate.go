package feedsvc

import (
	"fmt"
	"net/http"
	"slices"
	"unicode"
	"unicode/utf8"

	killfeedv1 "github.com/killfeed/killfeed/proto/killfeed/v1"
)

// MaxClientIDLength is the longest client_id accepted, in characters.
const MaxClientIDLength = 128

// fieldError is a bad request, naming the field at fault. Handlers turn it
// into invalid_argument (Connect) or 400 (REST).
type fieldError struct {
	field, msg string
}

func (e *fieldError) Error() string { return e.field + ": " + e.msg }

func badField(field, format string, args ...any) *fieldError {
	return &fieldError{field: field, msg: fmt.Sprintf(format, args...)}
}

// request is a validated Poll, Next or Subscribe request.
type request struct {
	caller  caller
	client  string
	systems []int64
	limit   int
	auto    bool
}

// validateClientID accepts 1 to MaxClientIDLength printable characters.
func validateClientID(id string) error {
	switch {
	case id == "":
		return badField("client_id", "is required")
	case !utf8.ValidString(id):
		return badField("client_id", "is not valid UTF-8")
	case utf8.RuneCountInString(id) > MaxClientIDLength:
		return badField("client_id", "is %d characters; at most %d are allowed", utf8.RuneCountInString(id), MaxClientIDLength)
	}
	for _, r := range id {
		if !unicode.IsPrint(r) {
			return badField("client_id", "contains the non-printable character %U", r)
		}
	}
	return nil
}

// validateSystems accepts 1 to max distinct positive system ids.
func validateSystems(ids []int64, max int) error {
	if len(ids) == 0 {
		return badField("system_ids", "at least one solar system id is required")
	}
	if len(ids) > max {
		return badField("system_ids", "%d systems given; at most %d are allowed per request", len(ids), max)
	}
	for _, id := range ids {
		if id <= 0 {
			return badField("system_ids", "%d is not a solar system id (must be positive)", id)
		}
	}
	if dup, ok := firstDuplicate(ids); ok {
		return badField("system_ids", "%d is given twice", dup)
	}
	return nil
}

// firstDuplicate returns an id that ids holds twice. A typical request
// names a few systems, where comparing each pair costs less than the map a
// subscription of a thousand systems needs.
func firstDuplicate(ids []int64) (int64, bool) {
	const pairwiseUpTo = 32
	if len(ids) <= pairwiseUpTo {
		for i, id := range ids {
			if slices.Contains(ids[:i], id) {
				return id, true
			}
		}
		return 0, false
	}
	seen := make(map[int64]struct{}, len(ids))
	for _, id := range ids {
		if _, dup := seen[id]; dup {
			return id, true
		}
		seen[id] = struct{}{}
	}
	return 0, false
}

// admit authenticates the caller, applies its rate limit and checks that
// it may act for client: the first steps of every call, in the order a
// client expects errors (401, then 400 for a bad client_id, then 403).
func (s *Service) admit(h http.Header, addr, client string) (caller, error) {
	c, err := s.authenticate(h, addr)
	if err != nil {
		return c, err
	}
	if err := validateClientID(client); err != nil {
		return c, err
	}
	return c, c.authorize(client)
}

// admitRequest admits the caller and validates a Poll, Next or Subscribe.
func (s *Service) admitRequest(h http.Header, addr, client string, systems []int64, limit int32, mode killfeedv1.CommitMode) (request, error) {
	c, err := s.admit(h, addr, client)
	if err != nil {
		return request{}, err
	}
	r, err := s.newRequest(client, systems, limit, mode)
	r.caller = c
	return r, err
}

// newRequest validates the fields shared by Poll, Next and Subscribe. A
// limit of 0 means the default.
func (s *Service) newRequest(client string, systems []int64, limit int32, mode killfeedv1.CommitMode) (request, error) {
	if err := validateClientID(client); err != nil {
		return request{}, err
	}
	if err := validateSystems(systems, s.opts.MaxSystemsPerRequest); err != nil {
		return request{}, err
	}
	if limit < 0 || int(limit) > s.opts.MaxLimit {
		return request{}, badField("limit", "%d is out of range; want 0 (the default, %d) to %d", limit, s.opts.DefaultLimit, s.opts.MaxLimit)
	}
	n := int(limit)
	if n == 0 {
		n = s.opts.DefaultLimit
	}
	if _, ok := killfeedv1.CommitMode_name[int32(mode)]; !ok {
		return request{}, badField("commit_mode", "%d is not a commit mode", mode)
	}
	return request{client: client, systems: systems, limit: n, auto: mode != killfeedv1.CommitMode_COMMIT_MODE_EXPLICIT}, nil
}

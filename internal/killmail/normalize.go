package killmail

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Killmail is one normalised killmail, ready to be written to Kafka.
type Killmail struct {
	// ID is the killmail id (ESI killmail_id, zKillboard killID).
	ID int64
	// SystemID is the solar system the kill happened in: the record key.
	SystemID int64
	// Time is killmail_time, or the zero Time when the input had none.
	Time time.Time
	// JSON is the normalised killmail: the record value. See Normalize.
	JSON []byte
}

// Reason says why Normalize rejected its input. The values are short, stable
// and safe to use as a metric label or a map key when counting rejections.
type Reason string

// The reasons Normalize rejects a record for.
const (
	// ReasonInvalidJSON: the input is not valid JSON (or not UTF-8).
	ReasonInvalidJSON Reason = "invalid_json"
	// ReasonNotObject: the input, or the killmail inside a package, is not
	// a JSON object.
	ReasonNotObject Reason = "not_object"
	// ReasonDuplicateKey: a field appears twice in the killmail or its
	// package, or a field name differs from another, or from one of the id
	// fields, only in letter case. Different JSON parsers could read
	// different values from such input.
	ReasonDuplicateKey Reason = "duplicate_key"
	// ReasonNoKillmailID: neither killmail_id nor killID is present.
	ReasonNoKillmailID Reason = "no_killmail_id"
	// ReasonBadKillmailID: the killmail id is not a positive integer.
	ReasonBadKillmailID Reason = "bad_killmail_id"
	// ReasonNoSystemID: neither solar_system_id nor system_id is present.
	ReasonNoSystemID Reason = "no_system_id"
	// ReasonBadSystemID: the system id is not a positive integer.
	ReasonBadSystemID Reason = "bad_system_id"
	// ReasonIDMismatch: two fields that must agree (killmail_id and killID,
	// solar_system_id and system_id, a package's id and its killmail's) do
	// not.
	ReasonIDMismatch Reason = "id_mismatch"
	// ReasonBadTime: killmail_time is present but not an RFC 3339 time.
	ReasonBadTime Reason = "bad_time"
	// ReasonBadZkb: the zkb block is present but not a JSON object.
	ReasonBadZkb Reason = "bad_zkb"
)

// RejectError is the error Normalize returns for input it will not store.
// Use errors.As to get the Reason, or ReasonOf.
type RejectError struct {
	// Reason classifies the rejection for counting.
	Reason Reason
	// Msg says what is wrong in words a person feeding the producer can act
	// on, e.g. "killmail has no solar_system_id or system_id".
	Msg string
}

// Error returns Msg.
func (e *RejectError) Error() string { return e.Msg }

// ReasonOf returns the Reason of a *RejectError in err's chain, or "" when
// err is not a rejection.
func ReasonOf(err error) Reason {
	var r *RejectError
	if errors.As(err, &r) {
		return r.Reason
	}
	return ""
}

func reject(reason Reason, format string, args ...any) error {
	return &RejectError{Reason: reason, Msg: fmt.Sprintf(format, args...)}
}

// Normalize turns one killmail, in any of the shapes sources deliver, into
// the normalised JSON stored in Kafka.
//
// Accepted shapes:
//   - an ESI killmail, optionally with zKillboard's "zkb" block beside its
//     fields (the shape RedisQ and most dumps use);
//   - the same with "system_id" instead of "solar_system_id" and/or "killID"
//     instead of "killmail_id" (older zKillboard packages);
//   - a zKillboard package {"killID":N,"killmail":{ESI},"zkb":{..}};
//   - an R2Z2 file {"killmail_id":N,"hash":..,"esi":{ESI},"zkb":{..},
//     "sequence_id":..,"uploaded_at":..}.
//
// An object that carries its own solar_system_id or system_id is always read
// as a killmail, never as a package, so Normalize is idempotent: normalising
// its own output returns the same bytes.
//
// The output is the ESI killmail object, compacted, with "killmail_id" and
// "solar_system_id" set as JSON integers (replacing killID and system_id),
// and the package's "zkb" block, unchanged, under "zkb". Every other field of
// the killmail keeps its position and its bytes: numbers are never
// re-encoded, so 64-bit ids and ISK values survive exactly. Package-only
// fields (R2Z2's hash, sequence_id, uploaded_at) are dropped; the hash stays
// available in zkb.hash.
//
// Every error is a *RejectError.
func Normalize(raw []byte) (Killmail, error) {
	// JSON text must be UTF-8 (RFC 8259). encoding/json lets invalid bytes
	// through inside strings; consumers in other languages would choke.
	if !utf8.Valid(raw) {
		return Killmail{}, reject(ReasonInvalidJSON, "invalid JSON: not valid UTF-8")
	}
	// Compact validates the whole document in one pass and drops
	// insignificant whitespace, so the splitting below only has to step over
	// values that are known to be well formed.
	var compact bytes.Buffer
	compact.Grow(len(raw))
	if err := json.Compact(&compact, raw); err != nil {
		return Killmail{}, reject(ReasonInvalidJSON, "invalid JSON: %v", err)
	}
	top, err := splitObject(compact.Bytes(), "")
	if err != nil {
		return Killmail{}, err
	}

	// Find the ESI killmail: the object itself, or the one inside a
	// package. An object with its own system id is a killmail.
	km, outer := top, fields(nil)
	outerName := ""
	if _, hasSys := top.first("solar_system_id", "system_id"); !hasSys {
		for _, wrapper := range []string{"esi", "killmail"} {
			f, ok := top.get(wrapper)
			if !ok {
				continue
			}
			inner, err := splitObject(f.val, wrapper)
			if err != nil {
				return Killmail{}, err
			}
			km, outer, outerName = inner, top, wrapper
			break
		}
	}

	id, err := resolveID(km, outer, outerName, "killmail_id", "killID",
		ReasonNoKillmailID, ReasonBadKillmailID, "killmail has no killmail_id or killID")
	if err != nil {
		return Killmail{}, err
	}
	sys, err := resolveID(km, outer, outerName, "solar_system_id", "system_id",
		ReasonNoSystemID, ReasonBadSystemID, "killmail has no solar_system_id or system_id")
	if err != nil {
		return Killmail{}, err
	}

	// The package's zkb wins over one inside the killmail: it is the
	// package's own, current view. A null zkb counts as absent.
	var zkb []byte
	for _, obj := range []fields{outer, km} {
		if f, ok := obj.get("zkb"); ok && string(f.val) != "null" {
			zkb = f.val
			break
		}
	}
	if zkb != nil && zkb[0] != '{' {
		return Killmail{}, reject(ReasonBadZkb, "zkb is not a JSON object")
	}

	var t time.Time
	if f, ok := km.get("killmail_time"); ok {
		var s string
		if f.val[0] != '"' || json.Unmarshal(f.val, &s) != nil {
			return Killmail{}, reject(ReasonBadTime, "killmail_time is not an RFC 3339 time: %.40s", f.val)
		}
		if t, err = time.Parse(time.RFC3339, s); err != nil {
			return Killmail{}, reject(ReasonBadTime, "killmail_time is not an RFC 3339 time: %.40q", s)
		}
	}

	return Killmail{ID: id, SystemID: sys, Time: t, JSON: render(km, id, sys, zkb, compact.Len())}, nil
}

// render writes the normalised object: km's fields in order, the id and
// system fields under their ESI names (killmail_id first when km had
// neither), and zkb where km had it or else last.
func render(km fields, id, sys int64, zkb []byte, sizeHint int) []byte {
	out := make([]byte, 0, sizeHint+64)
	out = append(out, '{')
	comma := false
	field := func(key string, val []byte) {
		if comma {
			out = append(out, ',')
		}
		comma = true
		out = append(out, key...)
		out = append(out, ':')
		out = append(out, val...)
	}
	idVal := strconv.AppendInt(nil, id, 10)
	sysVal := strconv.AppendInt(nil, sys, 10)
	wroteID, wroteSys, wroteZkb := false, false, false
	if _, ok := km.first("killmail_id", "killID"); !ok {
		field(`"killmail_id"`, idVal)
		wroteID = true
	}
	for _, f := range km {
		switch f.name {
		case "killmail_id", "killID":
			if !wroteID {
				field(`"killmail_id"`, idVal)
				wroteID = true
			}
		case "solar_system_id", "system_id":
			if !wroteSys {
				field(`"solar_system_id"`, sysVal)
				wroteSys = true
			}
		case "zkb":
			if zkb != nil && !wroteZkb {
				field(`"zkb"`, zkb)
				wroteZkb = true
			}
		default:
			field(string(f.key), f.val)
		}
	}
	if !wroteSys {
		field(`"solar_system_id"`, sysVal)
	}
	if zkb != nil && !wroteZkb {
		field(`"zkb"`, zkb)
	}
	return append(out, '}')
}

// resolveID reads an id that may be spelled name or alias, in the killmail
// and (for packages) in the package around it. Every spelling present must be
// a positive integer and all must agree.
func resolveID(km, outer fields, outerName, name, alias string, missing, bad Reason, missingMsg string) (int64, error) {
	type seen struct {
		where string
		id    int64
	}
	innerPrefix := ""
	if outerName != "" {
		innerPrefix = outerName + "."
	}
	var all []seen
	for _, obj := range []struct {
		fields fields
		prefix string
	}{{km, innerPrefix}, {outer, ""}} {
		for _, key := range []string{name, alias} {
			f, ok := obj.fields.get(key)
			if !ok {
				continue
			}
			id, ok := positiveInt(f.val)
			if !ok {
				return 0, reject(bad, "%s%s is not a positive integer: %.40s", obj.prefix, key, f.val)
			}
			all = append(all, seen{obj.prefix + key, id})
		}
	}
	if len(all) == 0 {
		return 0, reject(missing, "%s", missingMsg)
	}
	for _, s := range all[1:] {
		if s.id != all[0].id {
			return 0, reject(ReasonIDMismatch, "%s %d does not match %s %d", all[0].where, all[0].id, s.where, s.id)
		}
	}
	return all[0].id, nil
}

// positiveInt accepts a JSON integer in canonical form (no sign, fraction or
// exponent) that fits an int64 and is above zero. 1.0 and 1e3 are refused:
// an id written as a float has lost precision somewhere upstream.
func positiveInt(v []byte) (int64, bool) {
	if len(v) == 0 || v[0] < '1' || v[0] > '9' {
		return 0, false
	}
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	return n, err == nil
}

// field is one member of a JSON object: its decoded name, and the raw key
// (with quotes) and value as they appear in compacted JSON.
type field struct {
	name string
	key  []byte
	val  []byte
}

type fields []field

func (fs fields) get(name string) (field, bool) {
	for _, f := range fs {
		if f.name == name {
			return f, true
		}
	}
	return field{}, false
}

func (fs fields) first(names ...string) (field, bool) {
	for _, f := range fs {
		for _, n := range names {
			if f.name == n {
				return f, true
			}
		}
	}
	return field{}, false
}

// splitObject splits a compacted, valid JSON value into the members of an
// object. what names the value in errors; "" is the whole input.
func splitObject(b []byte, what string) (fields, error) {
	if len(b) == 0 || b[0] != '{' {
		if what == "" {
			return nil, reject(ReasonNotObject, "not a JSON object")
		}
		return nil, reject(ReasonNotObject, "%s is not a JSON object", what)
	}
	if what == "" {
		what = "killmail"
	}
	var fs fields
	seen := keySet{}
	i := 1
	for i < len(b) && b[i] != '}' {
		if b[i] == ',' {
			i++
		}
		kEnd := skipValue(b, i)
		key := b[i:kEnd]
		name, err := decodeKey(key)
		if err != nil {
			return nil, reject(ReasonInvalidJSON, "invalid JSON: key %.40s: %v", key, err)
		}
		// kEnd is at the ':'.
		vStart := kEnd + 1
		vEnd := skipValue(b, vStart)
		if err := seen.add(name, what); err != nil {
			return nil, err
		}
		fs = append(fs, field{name: name, key: key, val: b[vStart:vEnd]})
		i = vEnd
	}
	return fs, nil
}

// specialName returns the field Normalize reads whose folded form (see
// foldName) is folded, if there is one.
func specialName(folded string) (string, bool) {
	switch folded {
	case "KILLMAIL_ID":
		return "killmail_id", true
	case "KILLID":
		return "killID", true
	case "SOLAR_SYSTEM_ID":
		return "solar_system_id", true
	case "SYSTEM_ID":
		return "system_id", true
	case "KILLMAIL_TIME":
		return "killmail_time", true
	case "ZKB":
		return "zkb", true
	}
	return "", false
}

// keySet detects field names a JSON decoder could confuse: Go's
// encoding/json, among others, matches names case-insensitively and keeps
// the last duplicate, so a killmail with "solar_system_id":1 and
// "Solar_System_ID":2 would be filed under system 1 here and read as system
// 2 by such a consumer. It is a map so that an object with very many fields
// costs linear time, not quadratic.
type keySet map[string]string

// add refuses name if it folds to a name already seen, or to one of the
// fields Normalize reads without being spelled exactly like it.
func (ks keySet) add(name, what string) error {
	folded := foldName(name)
	if prev, ok := ks[folded]; ok {
		if prev == name {
			return reject(ReasonDuplicateKey, "%s has field %q twice", what, name)
		}
		return reject(ReasonDuplicateKey, "%s has field %q twice (as %q and %q)", what, name, prev, name)
	}
	if special, ok := specialName(folded); ok && special != name {
		return reject(ReasonDuplicateKey, "%s has field %q, which case-insensitive decoders read as %q", what, name, special)
	}
	ks[folded] = name
	return nil
}

// foldName maps every name that strings.EqualFold considers equal to one
// string: each rune becomes the smallest rune of its Unicode case-folding
// orbit (so 'k', 'K' and the Kelvin sign all become 'K').
func foldName(s string) string {
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		// For ASCII letters the smallest rune of the orbit is the upper
		// case one; 'k' and 's' have non-ASCII orbit members, but those
		// are larger.
		return strings.ToUpper(s)
	}
	var b strings.Builder
	for _, r := range s {
		least := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			least = min(least, f)
		}
		b.WriteRune(least)
	}
	return b.String()
}

// decodeKey returns the name a quoted key stands for. Almost every key is
// plain ASCII with no escapes, which is cheap to handle without a decoder.
func decodeKey(key []byte) (string, error) {
	inner := key[1 : len(key)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return string(inner), nil
	}
	var s string
	err := json.Unmarshal(key, &s)
	return s, err
}

// skipValue returns the index just past the JSON value starting at b[i]. b
// must be compacted, valid JSON: that is what lets this skip without
// validating or recursing.
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	default:
		for i < len(b) {
			switch b[i] {
			case ',', '}', ']', ':':
				return i
			}
			i++
		}
		return i
	}
}

// skipString returns the index just past the string starting at b[i].
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return i
}

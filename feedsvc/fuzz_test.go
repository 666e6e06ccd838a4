package feedsvc

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	killfeedv1 "github.com/killfeed/killfeed/proto/killfeed/v1"
)

// The fuzz targets below run their seeds (f.Add and testdata/fuzz) with
// every go test; fuzz them with, for example,
//
//	go test ./feedsvc -run '^$' -fuzz '^FuzzRESTQuery$' -fuzztime 60s

// fuzzService is a Service with the default options (no auth, no rate
// limit) and nothing running: enough for request parsing and validation.
func fuzzService() *Service {
	o := Options{}.withDefaults()
	return &Service{opts: o, limits: newLimits(o)}
}

// validClientID is the documented client_id rule, written independently of
// validateClientID: 1 to MaxClientIDLength printable characters of UTF-8.
func validClientID(id string) bool {
	if id == "" || !utf8.ValidString(id) || utf8.RuneCountInString(id) > MaxClientIDLength {
		return false
	}
	return strings.IndexFunc(id, func(r rune) bool { return !unicode.IsPrint(r) }) < 0
}

// validSystems is the documented system_ids rule: 1 to max distinct positive
// ids.
func validSystems(ids []int64, max int) bool {
	if len(ids) == 0 || len(ids) > max {
		return false
	}
	for i, id := range ids {
		if id <= 0 {
			return false
		}
		for _, other := range ids[:i] {
			if other == id {
				return false
			}
		}
	}
	return true
}

// FuzzRESTQuery feeds raw query strings, as a client can send them, through
// the REST routes' parser. It must never panic; what it accepts must be a
// valid request carrying what the query says; what it refuses must be a
// bad request naming one of the route's parameters (a 400, never a 5xx).
func FuzzRESTQuery(f *testing.F) {
	for _, q := range []string{
		"client_id=foo&systems[]=30000142&systems[]=30002187",
		"client_id=foo&systems=30000142,30002187&limit=10&commit_mode=explicit",
		"client_id=foo&systems=30000142&systems=30002187&commit_mode=auto",
		"systems=%2B30000142,%2030002187%20,,&client_id=%C3%A9t%C3%A9",
		"client_id=&systems=1",
		"systems=1",
		"client_id=a",
		"client_id=a&systems=-1",
		"client_id=a&systems=0",
		"client_id=a&systems=99999999999999999999",
		"client_id=a&systems=0x10",
		"client_id=a&systems=1,1",
		"client_id=a&systems=1&systems[]=1",
		"client_id=a&systems=1&limit=-1",
		"client_id=a&systems=1&limit=0",
		"client_id=a&systems=1&limit=10000",
		"client_id=a&systems=1&limit=10001",
		"client_id=a&systems=1&limit=2147483648",
		"client_id=a&systems=1&limit=99999999999999999999",
		"client_id=a&systems=1&limit=1e3",
		"client_id=a&systems=1&commit_mode=AUTO",
		"client_id=a&systems=1&commit_mode=2",
		"client_id=%00&systems=1",
		"client_id=%FF&systems=1",
		"client_id=%E2%80%8B&systems=1",
		"client_id=a%0Ab&systems=1",
		"client_id=a;b&systems=1",
		"client_id=a%zz&systems=1",
		"client_id=a&client_id=b&systems=1",
		"client_id=" + strings.Repeat("x", 128) + "&systems=1",
		"client_id=" + strings.Repeat("x", 129) + "&systems=1",
		"client_id=" + strings.Repeat("%C3%A9", 128) + "&systems=1",
		"client_id=a&systems=" + strings.Repeat("1,", 1001),
		"",
		"&&&=&",
	} {
		f.Add(q, true)
		f.Add(q, false)
	}
	s := fuzzService()
	f.Fuzz(func(t *testing.T, raw string, withLimit bool) {
		// The handler reads r.URL.Query(), which drops what ParseQuery
		// cannot decode and keeps the rest.
		req := &http.Request{Method: "GET", URL: &url.URL{Path: "/api/killfeed", RawQuery: raw}, Header: http.Header{}, RemoteAddr: "127.0.0.1:1234"}
		q, _ := url.ParseQuery(raw)
		r, err := s.parseRESTQuery(req, withLimit)

		// An independent reading of the route's rules.
		var systems []int64
		systemsOK := true
		for _, key := range []string{"systems[]", "systems"} {
			for _, v := range q[key] {
				for _, part := range strings.Split(v, ",") {
					if part = strings.TrimSpace(part); part == "" {
						continue
					}
					id, err := strconv.ParseInt(part, 10, 64)
					systemsOK = systemsOK && err == nil
					systems = append(systems, id)
				}
			}
		}
		limit, limitOK := int64(0), true
		if v := q.Get("limit"); withLimit && v != "" {
			var err error
			limit, err = strconv.ParseInt(v, 10, 64)
			limitOK = err == nil && limit >= 0 && limit <= int64(s.opts.MaxLimit)
		}
		mode := q.Get("commit_mode")
		valid := systemsOK && limitOK && (mode == "" || mode == "auto" || mode == "explicit") &&
			validClientID(q.Get("client_id")) && validSystems(systems, s.opts.MaxSystemsPerRequest)

		if err != nil {
			var fe *fieldError
			if !errors.As(err, &fe) {
				t.Fatalf("query %q: error %v (%T) is not a bad request", raw, err, err)
			}
			switch fe.field {
			case "client_id", "systems", "limit", "commit_mode":
			default:
				t.Fatalf("query %q: error names field %q, not a query parameter", raw, fe.field)
			}
			if valid {
				t.Fatalf("query %q: refused a valid request: %v", raw, err)
			}
			return
		}
		if !valid {
			t.Fatalf("query %q: accepted an invalid request as %+v", raw, r)
		}
		if err := validateClientID(r.client); err != nil || r.client != q.Get("client_id") {
			t.Fatalf("query %q: client %q (%v)", raw, r.client, err)
		}
		if err := validateSystems(r.systems, s.opts.MaxSystemsPerRequest); err != nil {
			t.Fatalf("query %q: systems %v: %v", raw, r.systems, err)
		}
		if !slices.Equal(r.systems, systems) {
			t.Fatalf("query %q: systems %v, want %v", raw, r.systems, systems)
		}
		wantLimit := int(limit)
		switch {
		case !withLimit:
			wantLimit = 1 // /next returns one event
		case limit == 0:
			wantLimit = s.opts.DefaultLimit
		}
		if r.limit != wantLimit {
			t.Fatalf("query %q: limit %d, want %d", raw, r.limit, wantLimit)
		}
		if r.auto != (mode != "explicit") {
			t.Fatalf("query %q: auto %v for commit_mode %q", raw, r.auto, mode)
		}
	})
}

// FuzzValidate checks the rules shared by Poll, Next and Subscribe on any
// client id, system id list, limit and commit mode a protobuf or JSON client
// can send: never a panic, and accepted exactly when the documented rules
// hold (so accepted ids are printable UTF-8 of at most 128 characters, and
// accepted systems are distinct, positive and at most the maximum).
// The systems come from the fuzzer's bytes as a sequence of signed varints.
func FuzzValidate(f *testing.F) {
	varints := func(ids ...int64) []byte {
		var b []byte
		for _, id := range ids {
			b = binary.AppendVarint(b, id)
		}
		return b
	}
	f.Add("foo", varints(30000142, 30002187), int32(0), int32(0), uint8(0))
	f.Add("é-client/1", varints(1), int32(10000), int32(2), uint8(1))
	f.Add("", varints(1), int32(1), int32(1), uint8(0))
	f.Add("a\x00b", varints(1), int32(1), int32(1), uint8(0))
	f.Add("a\u200bb", varints(1), int32(1), int32(1), uint8(0))
	f.Add("\xff", varints(1), int32(1), int32(1), uint8(0))
	f.Add(strings.Repeat("é", 128), varints(1), int32(1), int32(1), uint8(0))
	f.Add(strings.Repeat("é", 129), varints(1), int32(1), int32(1), uint8(0))
	f.Add("c", varints(), int32(1), int32(1), uint8(0))
	f.Add("c", varints(0), int32(1), int32(1), uint8(0))
	f.Add("c", varints(-30000142), int32(1), int32(1), uint8(0))
	f.Add("c", varints(7, 8, 7), int32(1), int32(1), uint8(0))
	f.Add("c", varints(1<<63-1, 1, 2, 3), int32(1), int32(1), uint8(2))
	f.Add("c", varints(1), int32(-1), int32(1), uint8(0))
	f.Add("c", varints(1), int32(10001), int32(1), uint8(0))
	f.Add("c", varints(1), int32(1), int32(3), uint8(0))
	f.Add("c", varints(1), int32(1), int32(-1), uint8(0))
	s := fuzzService()
	f.Fuzz(func(t *testing.T, id string, rawSystems []byte, limit, mode int32, smallMax uint8) {
		var systems []int64
		for len(rawSystems) > 0 {
			v, n := binary.Varint(rawSystems)
			if n <= 0 {
				break
			}
			systems = append(systems, v)
			rawSystems = rawSystems[n:]
		}

		idErr := validateClientID(id)
		if (idErr == nil) != validClientID(id) {
			t.Fatalf("validateClientID(%q) = %v", id, idErr)
		}
		if idErr == nil && (!utf8.ValidString(id) || utf8.RuneCountInString(id) > MaxClientIDLength) {
			t.Fatalf("accepted client id %q", id)
		}
		for _, max := range []int{s.opts.MaxSystemsPerRequest, 1 + int(smallMax%8)} {
			err := validateSystems(systems, max)
			if (err == nil) != validSystems(systems, max) {
				t.Fatalf("validateSystems(%v, %d) = %v", systems, max, err)
			}
		}
		for _, err := range []error{idErr, validateSystems(systems, s.opts.MaxSystemsPerRequest)} {
			if err != nil {
				var fe *fieldError
				if !errors.As(err, &fe) || (fe.field != "client_id" && fe.field != "system_ids") {
					t.Fatalf("error %v does not name its field", err)
				}
			}
		}

		r, err := s.newRequest(id, systems, limit, killfeedv1.CommitMode(mode))
		_, modeKnown := killfeedv1.CommitMode_name[mode]
		valid := validClientID(id) && validSystems(systems, s.opts.MaxSystemsPerRequest) &&
			limit >= 0 && int(limit) <= s.opts.MaxLimit && modeKnown
		if err != nil {
			var fe *fieldError
			if !errors.As(err, &fe) {
				t.Fatalf("newRequest: %v is not a bad request", err)
			}
			if valid {
				t.Fatalf("newRequest(%q, %v, %d, %d) refused a valid request: %v", id, systems, limit, mode, err)
			}
			return
		}
		if !valid {
			t.Fatalf("newRequest(%q, %v, %d, %d) accepted an invalid request", id, systems, limit, mode)
		}
		if r.client != id || !slices.Equal(r.systems, systems) || r.limit < 1 || r.limit > s.opts.MaxLimit ||
			(limit > 0 && r.limit != int(limit)) || r.auto != (killfeedv1.CommitMode(mode) != killfeedv1.CommitMode_COMMIT_MODE_EXPLICIT) {
			t.Fatalf("newRequest(%q, %v, %d, %d) = %+v", id, systems, limit, mode, r)
		}
	})
}

// FuzzJSONToStructWire checks the JSON-to-Struct transcoder protobuf clients
// get killmails through, against two references:
//
//   - Any input that is not a JSON object (json.Valid, starting with '{')
//     is refused with an error, never a panic.
//   - A JSON object is refused exactly when encoding/json cannot read it
//     into Go values (a number beyond a double's range) or it nests deeper
//     than maxStructDepth. Otherwise its wire bytes decode with
//     proto.Unmarshal into a Struct equal to what encoding/json reads,
//     converted with structpb.NewStruct: the last of duplicate keys wins,
//     and invalid UTF-8 and lone surrogate escapes read as U+FFFD.
//   - Where protojson.Unmarshal accepts the object too (it refuses
//     duplicate keys, invalid UTF-8 and bad surrogates), the Struct equals
//     protojson's.
func FuzzJSONToStructWire(f *testing.F) {
	e := &testEnv{}
	e.nextKM.Store(100000000)
	f.Add(e.newKillmail(jita))
	for _, s := range []string{
		`{}`,
		" \t\r\n{ } \n",
		`{"a":null,"b":true,"c":false,"d":"","e":[],"f":{},"g":[null,[1,[2]],{"h":"i"}]}`,
		`{"n":[0,-0,1,-1,0.5,-1.5e-3,1E+2,1e308,-1.7976931348623157e308,5e-324,1e-400,12345678901234567890]}`,
		`{"a":1e400}`, `{"a":-1e309}`,
		`{"a":01}`, `{"a":1.}`, `{"a":-.5}`, `{"a":.5}`, `{"a":+1}`, `{"a":1e}`, `{"a":1e+}`, `{"a":--1}`, `{"a":0x10}`,
		`{"a":NaN}`, `{"a":Infinity}`, `{"a":-Infinity}`,
		`{"esc":"\"\\\/\b\f\n\r\t\u0000\u00e9\u20ac\ud83d\ude00"}`,
		`{"lone":"\ud800","pair-reversed":"\udc00\ud800","high-then-ascii":"\ud800\u0041"}`,
		"{\"bad utf8\":\"\xff\xfe\",\"\xc3\":1}",
		"{\"raw control\":\"a\x01b\"}",
		"{\"raw tab\":\"a\tb\"}",
		`{"bad escape":"\x41"}`, `{"short escape":"\u12"}`,
		`{"a":1,"a":2}`, `{"a":{"x":1},"a":{"y":2}}`, "{\"\xff\":1,\"\xfe\":2}",
		`{"a":1,}`, `{"a":1 "b":2}`, `{"a"}`, `{"a":}`, `{a:1}`, `{'a':1}`, `{"a":1}}`, `{"a":1} x`, `{"a":[1,]}`, `{"a":[1 2]}`,
		`{"a":tru}`, `{"a":truex}`, `{"a":nul}`, `{"a":nulll}`, `{"a":"`, `{"a`, `{`, ``, ` `, `[]`, `"s"`, `1`, `null`,
		"{\"a\":1}\x00", "\ufeff{}", "{\"a\":1\v}",
		`{"d":` + strings.Repeat(`[`, maxStructDepth-1) + strings.Repeat(`]`, maxStructDepth-1) + `}`,
		`{"d":` + strings.Repeat(`[`, maxStructDepth) + strings.Repeat(`]`, maxStructDepth) + `}`,
		strings.Repeat(`{"d":`, maxStructDepth) + `1` + strings.Repeat(`}`, maxStructDepth),
		strings.Repeat(`{"d":`, maxStructDepth+1) + `1` + strings.Repeat(`}`, maxStructDepth+1),
		`{"d":` + strings.Repeat(`[`, 20000) + strings.Repeat(`]`, 20000) + `}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		w, err := jsonToStructWire(data)
		trimmed := bytes.TrimLeft(data, " \t\r\n")
		if !json.Valid(data) || len(trimmed) == 0 || trimmed[0] != '{' {
			if err == nil {
				t.Fatalf("%q is not a JSON object, but was transcoded", data)
			}
			return
		}

		var m map[string]any
		jsonErr := json.Unmarshal(data, &m)
		if jsonErr != nil || jsonDepth(data) > maxStructDepth {
			if err == nil {
				t.Fatalf("%q: transcoded, but encoding/json says %v and its depth is %d (at most %d)", data, jsonErr, jsonDepth(data), maxStructDepth)
			}
			return
		}
		if err != nil {
			t.Fatalf("%q: refused a JSON object: %v", data, err)
		}
		var got structpb.Struct
		if err := proto.Unmarshal(w, &got); err != nil {
			t.Fatalf("%q: wire bytes do not decode as a Struct: %v", data, err)
		}
		want, err := structpb.NewStruct(m)
		if err != nil {
			t.Fatalf("%q: encoding/json's reading is not a Struct: %v", data, err)
		}
		if !proto.Equal(&got, want) {
			t.Fatalf("%q:\n got %v\nwant %v (encoding/json)", data, &got, want)
		}
		var pj structpb.Struct
		if protojson.Unmarshal(data, &pj) == nil && !proto.Equal(&got, &pj) {
			t.Fatalf("%q:\n got %v\nwant %v (protojson)", data, &got, &pj)
		}
	})
}

// jsonDepth is the deepest nesting of objects and arrays in valid JSON.
func jsonDepth(data []byte) int {
	dec := json.NewDecoder(bytes.NewReader(data))
	depth, deepest := 0, 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return deepest
		}
		if err != nil {
			return deepest
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
			deepest = max(deepest, depth)
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
	}
}

package feedsvc

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	killfeedv1 "github.com/killfeed/killfeed/proto/killfeed/v1"
)

// hostileReq is one request a hostile or broken client might send.
type hostileReq struct {
	name   string
	method string
	path   string // with the query
	header http.Header
	body   []byte
	// kind says how an error comes back: "rest" (status and JSON), "connect"
	// (status and a Connect error), "stream" (a Connect stream: HTTP 200 and
	// an end-stream message, or an error status), "grpc" or "grpc-web"
	// (grpc-status).
	kind string
	// unparseable marks a gRPC request whose framing or message cannot be
	// read, which gRPC's status code table answers with internal.
	unparseable bool
}

const (
	rpcPrefix      = "/killfeed.v1.KillfeedService/"
	hostileTimeout = 10 * time.Second
)

// clientFaultCodes are the Connect codes that blame the request. Anything
// else (unknown, internal, unavailable, deadline_exceeded, ...) would be the
// server failing on it. unimplemented is what the protocol answers for a
// compression or protocol the server does not speak (HTTP 501 in Connect).
var clientFaultCodes = map[connect.Code]bool{
	connect.CodeInvalidArgument:    true,
	connect.CodeOutOfRange:         true,
	connect.CodeFailedPrecondition: true,
	connect.CodeNotFound:           true,
	connect.CodeResourceExhausted:  true,
	connect.CodeUnimplemented:      true,
	connect.CodeUnauthenticated:    true,
	connect.CodePermissionDenied:   true,
}

func codeByName(name string) (connect.Code, bool) {
	var c connect.Code
	err := c.UnmarshalText([]byte(name))
	return c, err == nil
}

func header(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

// envelope frames msg as one Connect (or gRPC) stream message.
func envelope(flags byte, msg []byte) []byte {
	b := []byte{flags, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(len(msg)))
	return append(b, msg...)
}

// send performs r and returns a description of what came back, or an error
// saying why the answer is not a client error.
func (r hostileReq) send(hc *http.Client, base string) error {
	ctx, cancel := context.WithTimeout(context.Background(), hostileTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, r.method, base+r.path, bytes.NewReader(r.body))
	if err != nil {
		return fmt.Errorf("building request: %v", err)
	}
	for k, vs := range r.header {
		req.Header[k] = vs
	}
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("no answer within %s: %v", hostileTimeout, err)
		}
		return fmt.Errorf("no answer: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("reading the answer (status %d): %v", resp.StatusCode, err)
	}
	st := resp.StatusCode
	switch r.kind {
	case "rest":
		if st < 400 || st > 499 {
			return fmt.Errorf("status %d, want 4xx: %.200s", st, body)
		}
		return nil
	case "grpc", "grpc-web":
		if st != http.StatusOK {
			if st >= 400 && st <= 499 {
				return nil
			}
			return fmt.Errorf("status %d, want 200 with grpc-status or 4xx", st)
		}
		gs := resp.Header.Get("Grpc-Status") // a trailers-only answer
		if gs == "" {
			gs = resp.Trailer.Get("Grpc-Status")
		}
		if r.kind == "grpc-web" && gs == "" {
			// gRPC-Web sends trailers in the body, as a frame flagged 0x80.
			for len(body) >= 5 {
				flags, n := body[0], binary.BigEndian.Uint32(body[1:5])
				if uint32(len(body)-5) < n {
					break
				}
				if flags&0x80 != 0 {
					for _, line := range strings.Split(string(body[5:5+n]), "\r\n") {
						if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "grpc-status") {
							gs = strings.TrimSpace(v)
						}
					}
				}
				body = body[5+n:]
			}
		}
		n, err := strconv.Atoi(gs)
		if r.unparseable && connect.Code(n) == connect.CodeInternal {
			return nil
		}
		if err != nil || n == 0 || !clientFaultCodes[connect.Code(n)] {
			return fmt.Errorf("grpc-status %q (%s), want a client error", gs, resp.Trailer.Get("Grpc-Message"))
		}
		return nil
	}
	if r.kind == "stream" && st == http.StatusOK {
		// A Connect stream: only an end-stream message carrying an error.
		for len(body) >= 5 {
			flags, n := body[0], binary.BigEndian.Uint32(body[1:5])
			if uint32(len(body)-5) < n {
				return fmt.Errorf("truncated stream message in the answer")
			}
			msg := body[5 : 5+n]
			body = body[5+n:]
			if flags&2 == 0 {
				return fmt.Errorf("the stream sent a message %.200s, want only an error", msg)
			}
			var end struct {
				Error *struct{ Code, Message string }
			}
			if err := json.Unmarshal(msg, &end); err != nil || end.Error == nil {
				return fmt.Errorf("end of stream without an error: %.200s", msg)
			}
			c, ok := codeByName(end.Error.Code)
			if !ok || !clientFaultCodes[c] {
				return fmt.Errorf("stream ended with %q (%s), want a client error", end.Error.Code, end.Error.Message)
			}
			return nil
		}
		return fmt.Errorf("stream answer without an end-stream message")
	}
	// Connect unary, or a stream refused before it began.
	var ce struct{ Code, Message string }
	_ = json.Unmarshal(body, &ce)
	c, known := codeByName(ce.Code)
	switch {
	case st >= 400 && st <= 499:
		if known && !clientFaultCodes[c] {
			return fmt.Errorf("status %d with code %q: %s", st, ce.Code, ce.Message)
		}
		return nil
	case st == http.StatusNotImplemented && known && c == connect.CodeUnimplemented:
		return nil
	}
	return fmt.Errorf("status %d (%s: %s), want 4xx", st, ce.Code, ce.Message)
}

// validRPC reports whether body, sent to an RPC with the given codec, is a
// request the service would accept: the flood's random requests must not
// be, so that each has a client error as its only right answer.
func validRPC(s *Service, method, codec string, body []byte) bool {
	var m proto.Message
	switch method {
	case "Poll":
		m = &killfeedv1.PollRequest{}
	case "Next":
		m = &killfeedv1.NextRequest{}
	case "Subscribe":
		m = &killfeedv1.SubscribeRequest{}
	default:
		panic(method)
	}
	var err error
	if codec == "json" {
		err = protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(body, m)
	} else {
		err = proto.Unmarshal(body, m)
	}
	if err != nil {
		return false
	}
	switch m := m.(type) {
	case *killfeedv1.PollRequest:
		_, err = s.newRequest(m.GetClientId(), m.GetSystemIds(), m.GetLimit(), m.GetCommitMode())
	case *killfeedv1.NextRequest:
		_, err = s.newRequest(m.GetClientId(), m.GetSystemIds(), 1, m.GetCommitMode())
	case *killfeedv1.SubscribeRequest:
		_, err = s.newRequest(m.GetClientId(), m.GetSystemIds(), subscribeBatch, m.GetCommitMode())
		if hs := m.GetHeartbeatSeconds(); err == nil && hs != 0 && (hs < 1 || hs > 300) {
			err = errors.New("heartbeat")
		}
	}
	return err == nil
}

// hostileRequests builds the fixed part of the flood: every request is
// invalid, most of them for the "victim" client, whose positions must not
// move.
func hostileRequests() []hostileReq {
	var reqs []hostileReq
	add := func(r hostileReq) { reqs = append(reqs, r) }
	big := func(n int, c byte) string { return strings.Repeat(string(c), n) }
	manySystems := func(n int, sep string) string {
		var b strings.Builder
		for i := 1; i <= n; i++ {
			if i > 1 {
				b.WriteString(sep)
			}
			b.WriteString(strconv.Itoa(i))
		}
		return b.String()
	}

	// REST: each bad parameter beside otherwise good ones, on both routes.
	const good = "client_id=victim&systems=30000142"
	var queries []string
	for _, id := range []string{"", "%00", "a%0Ab", "%7F", "%C2%85", "%E2%80%8B", "%E2%80%AE", "%EF%BB%BF", "%FF",
		"%C0%80", "%ED%A0%80", "%F4%90%80%80", "victim%00", strings.Repeat("%C3%A9", 129), big(100<<10, 'x')} {
		queries = append(queries, "client_id="+id+"&systems=30000142")
	}
	queries = append(queries, "systems=30000142", "client_id=victim", "client_id=victim&systems=", "client_id=victim&systems[]=,,")
	for _, sys := range []string{"-1", "0", "99999999999999999999", "-99999999999999999999", "9223372036854775808",
		"1e5", "0x10", "1.5", "NaN", "%D9%A3", "1%202", "%2B-1", "%00", "30000142,30000142", "30000142%2C%2030000142",
		manySystems(1001, ","), manySystems(100000, ",")} {
		queries = append(queries, "client_id=victim&systems="+sys)
	}
	queries = append(queries,
		"client_id=victim&systems=30000142&systems[]=30000142",
		"client_id=victim&systems[]=5&systems[]=5",
		"client_id=victim&systems[]="+manySystems(2000, "&systems[]="),
	)
	for _, mode := range []string{"AUTO", "Explicit", "1", "2", "explicit%00", "auto%20", "%E2%80%8Bauto"} {
		queries = append(queries, good+"&commit_mode="+mode)
	}
	for _, q := range queries {
		for _, route := range []string{"/api/killfeed?", "/api/killfeed/next?"} {
			add(hostileReq{name: "REST " + route + q, method: "GET", path: route + q, kind: "rest"})
		}
	}
	for _, limit := range []string{"99999999999999999999", "2147483648", "-2147483649", "10001", "-1", "1e3", "0x10", "%D9%A1", "%205"} {
		add(hostileReq{name: "REST limit " + limit, method: "GET", path: "/api/killfeed?" + good + "&limit=" + limit, kind: "rest"})
	}
	// Oversized URLs: the server refuses them before any handler runs.
	add(hostileReq{name: "REST 2 MB query", method: "GET", path: "/api/killfeed?" + good + "&x=" + big(2<<20, 'y'), kind: "rest"})
	add(hostileReq{name: "REST 100k systems[]", method: "GET", path: "/api/killfeed?client_id=victim&systems[]=" + manySystems(100000, "&systems[]="), kind: "rest"})
	// Wrong methods, paths and bodies.
	for _, m := range []string{"POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"} {
		add(hostileReq{name: "REST " + m, method: m, path: "/api/killfeed?" + good, kind: "rest", body: []byte(big(2<<20, '{'))})
		add(hostileReq{name: "REST next " + m, method: m, path: "/api/killfeed/next?" + good, kind: "rest"})
	}
	for _, p := range []string{"/api/killfeed/", "/api/killfeed/next/x", "/API/KILLFEED", "/api/killfeed%00", "/api/killfeed/nex"} {
		add(hostileReq{name: "REST path " + p, method: "GET", path: p + "?" + good, kind: "rest"})
	}
	add(hostileReq{name: "REST GET with 2 MB body", method: "GET", path: "/api/killfeed?client_id=victim", kind: "rest", body: []byte(big(2<<20, 'z'))})

	// Connect unary, JSON.
	jsonBodies := []string{
		"", "{", "}", "null", "[]", `"x"`, "1", `{"client_id":`, `{"client_id":1}`, `{"client_id":null,"system_ids":[30000142]}`,
		`{"client_id":"victim","system_ids":"30000142"}`, `{"client_id":"victim","system_ids":[1e400]}`,
		`{"client_id":"victim","system_ids":[-1]}`, `{"client_id":"victim","system_ids":[0]}`,
		`{"client_id":"victim","system_ids":["99999999999999999999"]}`, `{"client_id":"victim","system_ids":[1.5]}`,
		`{"client_id":"victim","system_ids":["abc"]}`, `{"client_id":"victim","system_ids":[30000142,30000142]}`,
		`{"client_id":"victim","systemIds":[30000142],"system_ids":[30002187]}`,
		`{"client_id":"victim","system_ids":[30000142],"limit":99999999999999999999}`,
		`{"client_id":"victim","system_ids":[30000142],"limit":"x"}`, `{"client_id":"victim","system_ids":[30000142],"limit":-1}`,
		`{"client_id":"victim","system_ids":[30000142],"limit":10001}`,
		`{"client_id":"victim","system_ids":[30000142],"commit_mode":"NOPE"}`,
		`{"client_id":"victim","system_ids":[30000142],"commit_mode":"EXPLICIT"}`,
		`{"client_id":"victim","system_ids":[30000142],"commitMode":"explicit"}`,
		`{"client_id":"victim","system_ids":[30000142],"commit_mode":""}`,
		`{"client_id":"victim","system_ids":[30000142],"commit_mode":99}`,
		`{"client_id":"victim","system_ids":[30000142],"commit_mode":-1}`,
		`{"client_id":"\u0000","system_ids":[30000142]}`, `{"client_id":"vic\ntim","system_ids":[30000142]}`,
		"{\"client_id\":\"\xff\",\"system_ids\":[30000142]}", `{"client_id":"\ud800","system_ids":[30000142]}`,
		`{"client_id":"a","client_id":"b","system_ids":[30000142]}`, `{"client_id":"victim","system_ids":[30000142]} x`,
		`{"client_id":"` + big(100<<10, 'x') + `","system_ids":[30000142]}`,
		`{"client_id":"victim","system_ids":[` + manySystems(100000, ",") + `]}`,
		`{"client_id":"victim","system_ids":[0],"x":` + big(300000, '[') + big(300000, ']') + `}`,
		`{"client_id":"` + big(2<<20, 'x') + `"}`,
		big(1<<20-2, ' ') + "{}",
	}
	for _, method := range []string{"Poll", "Next"} {
		for _, b := range jsonBodies {
			if method == "Next" && strings.Contains(b, `"limit"`) {
				continue // Next has no limit
			}
			add(hostileReq{name: "connect JSON " + method + " " + b, method: "POST", path: rpcPrefix + method,
				header: header("Content-Type", "application/json"), body: []byte(b), kind: "connect"})
		}
	}
	for _, b := range []string{
		`{"client_id":"victim"}`, `{"client_id":"victim","cursors":[]}`,
		`{"client_id":"victim","cursors":[{"system_id":-1,"event_id":1}]}`,
		`{"client_id":"victim","cursors":[{"system_id":30000142,"event_id":-5}]}`,
		`{"client_id":"victim","cursors":[{"system_id":0,"event_id":1}]}`,
		`{"client_id":"victim","cursors":[{"system_id":30000142,"event_id":"99999999999999999999"}]}`,
		`{"client_id":"victim","cursors":[` + strings.Repeat(`{"system_id":1,"event_id":1},`, 1000) + `{"system_id":2,"event_id":1}]}`,
		`{"client_id":"","cursors":[{"system_id":30000142,"event_id":1}]}`,
	} {
		add(hostileReq{name: "connect JSON Commit " + b, method: "POST", path: rpcPrefix + "Commit",
			header: header("Content-Type", "application/json"), body: []byte(b), kind: "connect"})
	}
	for _, b := range []string{
		`{"client_id":"victim","system_ids":[30000142]}`,
		`{"client_id":"victim","system_ids":[30000142],"time":"10000-01-01T00:00:00Z"}`,
		`{"client_id":"victim","system_ids":[30000142],"time":"yesterday"}`,
		`{"client_id":"victim","system_ids":[30000142],"time":{"seconds":1}}`,
		`{"client_id":"victim","system_ids":[],"earliest":{}}`,
		`{"client_id":"victim","system_ids":[-3],"latest":{}}`,
		`{"client_id":"\u0007","system_ids":[30000142],"earliest":{}}`,
		`{"client_id":"victim","system_ids":[30000142],"earliest":{},"latest":{}}`,
	} {
		add(hostileReq{name: "connect JSON ResetPositions " + b, method: "POST", path: rpcPrefix + "ResetPositions",
			header: header("Content-Type", "application/json"), body: []byte(b), kind: "connect"})
	}
	for _, b := range []string{`{}`, `{"client_id":""}`, `{"client_id":"\u0007"}`, `{"client_id":"` + big(200, 'v') + `"}`} {
		for _, m := range []string{"DeleteClient", "GetPositions"} {
			add(hostileReq{name: "connect JSON " + m + " " + b, method: "POST", path: rpcPrefix + m,
				header: header("Content-Type", "application/json"), body: []byte(b), kind: "connect"})
		}
	}

	// Connect unary, protobuf.
	str := func(num protowire.Number, s string) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), []byte(s))
	}
	varint := func(num protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), v)
	}
	packed := func(n int, first int64) []byte {
		var p []byte
		for i := range n {
			p = protowire.AppendVarint(p, uint64(first+int64(i)))
		}
		return protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), p)
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	pVictim, pJita := str(1, "victim"), varint(2, 30000142)
	for _, method := range []string{"Poll", "Next"} {
		mode := protowire.Number(4) // commit_mode: 4 in PollRequest, 3 in NextRequest
		if method == "Next" {
			mode = 3
		}
		bodies := [][]byte{
			cat(str(1, "\xff"), pJita),                               // invalid UTF-8 in a proto3 string
			cat(pVictim, []byte{0x10, 0xff}),                         // truncated varint
			cat(pVictim, []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f}), // length beyond the body
			cat(pVictim, []byte{0x15, 1, 2, 3, 4}),                   // system_ids as fixed32
			cat(pVictim, []byte{0x13}),                               // unbalanced group start
			cat(pVictim, []byte{0x00, 0x01}),                         // field number 0
			cat(pVictim, varint(2, 1<<63)),                           // negative system id
			cat(pVictim, varint(2, 0)),
			cat(pVictim, pJita, pJita),
			cat(pVictim, packed(100000, 1)), // 100k systems
			cat(pVictim, packed(3, -1)),     // -1, 0, 1
			cat(pVictim, pJita, varint(mode, 99)),
			cat(pVictim, pJita, varint(mode, 1<<31)),
			cat(str(1, ""), pJita),
			cat(str(1, "vic\x00tim"), pJita),
			cat(str(1, big(100<<10, 'x')), pJita),
			cat(str(1, "victim"), str(1, "\x07"), pJita), // the last client_id wins
			pJita,
			{},
			[]byte(big(2<<20, 0)),
		}
		if method == "Poll" {
			bodies = append(bodies,
				cat(pVictim, pJita, varint(3, 1<<31)), // limit -2147483648
				cat(pVictim, pJita, varint(3, 10001)),
			)
		}
		for i, b := range bodies {
			add(hostileReq{name: fmt.Sprintf("connect proto %s #%d", method, i), method: "POST", path: rpcPrefix + method,
				header: header("Content-Type", "application/proto"), body: b, kind: "connect"})
		}
	}

	// Connect protocol-level abuse on Poll.
	gz := func(b []byte) []byte {
		var buf bytes.Buffer
		w := gzip.NewWriter(&buf)
		w.Write(b)
		w.Close()
		return buf.Bytes()
	}
	badPoll := `{"client_id":"victim","system_ids":[-1]}`
	for _, h := range []http.Header{
		header("Content-Type", "text/plain"),
		header("Content-Type", "application/xml"),
		header(),
		header("Content-Type", "application/connect+json"),
		header("Content-Type", "application/json; charset=latin1"),
		header("Content-Type", "application/json", "Connect-Protocol-Version", "2"),
		header("Content-Type", "application/json", "Connect-Timeout-Ms", "abc"),
		header("Content-Type", "application/json", "Connect-Timeout-Ms", "-5"),
		header("Content-Type", "application/json", "Connect-Timeout-Ms", "123456789012"),
		header("Content-Type", "application/json", "Content-Encoding", "br"),
		header("Content-Type", "application/json", "Content-Encoding", "gzip"),
		header("Content-Type", "application/json", "Content-Encoding", "gzip, gzip"),
		header("Content-Type", "application/json", "Connect-Content-Encoding", "gzip"),
	} {
		add(hostileReq{name: fmt.Sprintf("connect Poll headers %v", h), method: "POST", path: rpcPrefix + "Poll", header: h, body: []byte(badPoll), kind: "connect"})
	}
	// gRPC content types with an unframed body.
	add(hostileReq{name: "grpc unframed", method: "POST", path: rpcPrefix + "Poll", header: header("Content-Type", "application/grpc", "Te", "trailers"),
		body: []byte(badPoll), kind: "grpc", unparseable: true})
	add(hostileReq{name: "grpc-web unframed", method: "POST", path: rpcPrefix + "Poll", header: header("Content-Type", "application/grpc-web+json"),
		body: []byte(badPoll), kind: "grpc-web", unparseable: true})
	// A gzip bomb: 2 MB of zeros, a couple of KB on the wire.
	add(hostileReq{name: "connect Poll gzip bomb", method: "POST", path: rpcPrefix + "Poll",
		header: header("Content-Type", "application/proto", "Content-Encoding", "gzip"), body: gz([]byte(big(2<<20, 0))), kind: "connect"})
	add(hostileReq{name: "connect Poll gzip of a bad request", method: "POST", path: rpcPrefix + "Poll",
		header: header("Content-Type", "application/json", "Content-Encoding", "gzip"), body: gz([]byte(badPoll)), kind: "connect"})
	for _, m := range []string{"GET", "PUT", "DELETE", "PATCH"} {
		add(hostileReq{name: "connect Poll " + m, method: m, kind: "connect",
			path: rpcPrefix + "Poll?encoding=json&message=" + url.QueryEscape(`{"client_id":"victim","system_ids":[30000142]}`)})
	}
	for _, p := range []string{rpcPrefix + "Nope", "/killfeed.v1.Nope/Poll", rpcPrefix, rpcPrefix + "poll"} {
		add(hostileReq{name: "connect path " + p, method: "POST", path: p, header: header("Content-Type", "application/json"), body: []byte(`{}`), kind: "connect"})
	}

	// Subscribe: broken envelopes and bad requests, in both codecs.
	for _, codec := range []string{"json", "proto"} {
		ct := header("Content-Type", "application/connect+"+codec)
		var badSub, badSub2 []byte
		if codec == "json" {
			badSub = []byte(`{"client_id":"victim","system_ids":[-1]}`)
			badSub2 = []byte(`{"client_id":"victim","system_ids":[30000142],"heartbeat_seconds":301}`)
		} else {
			badSub = cat(pVictim, varint(2, 1<<63))
			badSub2 = cat(pVictim, pJita, varint(4, uint64(1<<64-1))) // heartbeat_seconds -1
		}
		bodies := [][]byte{
			{}, {0}, {0, 0, 0}, {0, 0, 0, 0},
			envelope(0, badSub)[:12],                             // shorter than the length says
			append([]byte{0, 0xff, 0xff, 0xff, 0xff}, badSub...), // 4 GB message
			envelope(1, badSub),                                  // compressed, with no encoding
			envelope(2, badSub),                                  // end-stream flag from the client
			envelope(0x80, badSub),                               // unknown flag
			append(envelope(0, badSub), envelope(0, badSub)...),
			append(envelope(0, badSub), 0, 0),
			envelope(0, badSub),
			envelope(0, badSub2),
			envelope(0, []byte("{garbage")),
			envelope(0, []byte{0x0a, 0xff}),
			envelope(0, []byte(big(2<<20, 'x'))),
			[]byte(big(2<<20, 0)),
		}
		for i, b := range bodies {
			add(hostileReq{name: fmt.Sprintf("connect Subscribe %s #%d", codec, i), method: "POST", path: rpcPrefix + "Subscribe", header: ct, body: b, kind: "stream"})
		}
		add(hostileReq{name: "connect Subscribe unary content type " + codec, method: "POST", path: rpcPrefix + "Subscribe",
			header: header("Content-Type", "application/"+codec), body: badSub, kind: "stream"})
		add(hostileReq{name: "connect Subscribe GET " + codec, method: "GET", path: rpcPrefix + "Subscribe", header: ct, kind: "stream"})
	}

	// gRPC and gRPC-Web framing.
	badProto := cat(pVictim, varint(2, 0))
	for _, ct := range []string{"application/grpc", "application/grpc+proto", "application/grpc-web+proto"} {
		kind := "grpc"
		if strings.Contains(ct, "grpc-web") {
			kind = "grpc-web"
		}
		for i, b := range [][]byte{
			envelope(0, badProto), // readable, but invalid
			{}, {0, 0}, envelope(0, badProto)[:8], envelope(1, badProto),
			append([]byte{0, 0x7f, 0xff, 0xff, 0xff}, badProto...), envelope(0, []byte{0x0a, 0xff}),
		} {
			for _, m := range []string{"Poll", "Subscribe"} {
				add(hostileReq{name: fmt.Sprintf("%s %s #%d", ct, m, i), method: "POST", path: rpcPrefix + m,
					header: header("Content-Type", ct, "Te", "trailers"), body: b, kind: kind, unparseable: i > 0})
			}
		}
	}
	return reqs
}

// mutate returns a damaged copy of b.
func mutate(rng *rand.Rand, b []byte) []byte {
	out := append([]byte(nil), b...)
	interesting := [][]byte{
		{0}, {0xff}, {0x80}, []byte(`"`), []byte(`\u0000`), []byte(`-`), []byte(`99999999999999999999`),
		[]byte("\xed\xa0\x80"), []byte(","), []byte("["), []byte("}"), {0x0a}, {0x12}, {0x10, 0xff, 0xff},
	}
	for range 1 + rng.IntN(4) {
		switch op := rng.IntN(5); {
		case op == 0 && len(out) > 0: // flip a byte
			out[rng.IntN(len(out))] ^= byte(1 + rng.IntN(255))
		case op == 1 && len(out) > 0: // truncate
			out = out[:rng.IntN(len(out))]
		case op == 2: // insert something awkward
			i := rng.IntN(len(out) + 1)
			ins := interesting[rng.IntN(len(interesting))]
			out = append(out[:i], append(append([]byte(nil), ins...), out[i:]...)...)
		case op == 3 && len(out) > 1: // duplicate a slice
			i := rng.IntN(len(out))
			j := i + rng.IntN(len(out)-i)
			out = append(out[:j], append(append([]byte(nil), out[i:j]...), out[j:]...)...)
		default: // random bytes
			i := rng.IntN(len(out) + 1)
			r := make([]byte, 1+rng.IntN(8))
			for k := range r {
				r[k] = byte(rng.IntN(256))
			}
			out = append(out[:i], append(r, out[i:]...)...)
		}
	}
	return out
}

// randomRequests damages good Poll, Next and Subscribe requests of the
// victim at random, keeping only those that end up invalid.
func randomRequests(rng *rand.Rand, n int) []hostileReq {
	s := fuzzService()
	goodJSON := []byte(`{"client_id":"victim","system_ids":[30000142,30002187],"limit":2,"commit_mode":"COMMIT_MODE_AUTO"}`)
	goodProto, _ := proto.Marshal(&killfeedv1.PollRequest{ClientId: "victim", SystemIds: []int64{jita, amarr}, Limit: 2, CommitMode: killfeedv1.CommitMode_COMMIT_MODE_AUTO})
	var reqs []hostileReq
	for len(reqs) < n {
		method := []string{"Poll", "Next", "Subscribe"}[rng.IntN(3)]
		codec := []string{"json", "proto"}[rng.IntN(2)]
		good := goodJSON
		if codec == "proto" {
			good = goodProto
		}
		body := mutate(rng, good)
		if validRPC(s, method, codec, body) {
			continue
		}
		r := hostileReq{name: fmt.Sprintf("random %s %s %q", codec, method, body), method: "POST", path: rpcPrefix + method, kind: "connect"}
		if method == "Subscribe" {
			r.kind = "stream"
			r.header = header("Content-Type", "application/connect+"+codec)
			body = envelope(0, body)
		} else {
			r.header = header("Content-Type", "application/"+codec)
		}
		r.body = body
		reqs = append(reqs, r)
	}
	return reqs
}

// A flood of hostile and broken requests — oversized, malformed, wrongly
// typed, wrongly framed — over REST, Connect (JSON and protobuf), gRPC and
// gRPC-Web: every one gets a client error, none a 5xx or no answer; the
// service keeps serving; and no client's positions move, so the client the
// requests name still gets exactly its unread events.
func TestHostileRequestsGetClientErrorsAndChangeNothing(t *testing.T) {
	e := newTestEnv(t, Options{})
	for range 2 {
		e.produce(jita)
	}
	if status, body, _ := e.get("/api/killfeed?client_id=victim&systems=30000142,30002187"); status != http.StatusOK {
		t.Fatalf("victim's first poll: %d %s", status, body)
	}
	before := e.store.Positions("victim")
	if len(before) == 0 {
		t.Fatal("victim has no positions after its first poll")
	}
	unread := []int64{killmailID(t, e.produce(jita)), killmailID(t, e.produce(amarr)), killmailID(t, e.produce(jita))}

	seed := uint64(time.Now().UnixNano())
	t.Logf("random requests from seed %d", seed)
	reqs := append(hostileRequests(), randomRequests(rand.New(rand.NewPCG(seed, seed)), 1500)...)

	// Several connections at once; HTTP/2 (h2c) for gRPC, which needs it.
	h1 := &http.Client{
		Transport: &http.Transport{MaxIdleConnsPerHost: 8},
		// A redirect is an answer too; following it would send another
		// request.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	h2 := h2cClient()
	work := make(chan hostileReq)
	var mu sync.Mutex
	var failures []string
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for r := range work {
				hc := h1
				if r.kind == "grpc" {
					hc = h2
				}
				if err := r.send(hc, e.url); err != nil {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("%.300s: %v", r.name, err))
					mu.Unlock()
				}
			}
		})
	}
	began := time.Now()
	for _, r := range reqs {
		work <- r
	}
	close(work)
	wg.Wait()
	t.Logf("%d hostile requests in %s", len(reqs), time.Since(began).Round(time.Millisecond))
	for i, f := range failures {
		if i == 30 {
			t.Errorf("... and %d more", len(failures)-i)
			break
		}
		t.Error(f)
	}

	// Nothing moved: the victim's positions are as they were, and no other
	// client named by the flood got any.
	if after := e.store.Positions("victim"); !positionsEqual(before, after) {
		t.Errorf("victim's positions moved:\nbefore %v\n after %v", before, after)
	}
	for _, c := range []string{"a", "b", "vic", "tim", "victim\x00", "c", ""} {
		if ps := e.store.Positions(c); len(ps) != 0 {
			t.Errorf("client %q got positions %v", c, ps)
		}
	}
	// The service still answers, and the victim gets exactly what it had
	// not read, over protobuf and over REST.
	got := killmailIDs(t, poll(t, e.client(h2cClient()), "victim", jita, amarr).Events)
	if !slices.Equal(got, unread) {
		t.Fatalf("victim's poll after the flood got %v, want its unread %v", got, unread)
	}
	if status, body, _ := e.get("/api/killfeed?client_id=victim&systems=30000142,30002187"); status != http.StatusOK || !bytes.Contains(body, []byte(`"events":[]`)) {
		t.Fatalf("victim's REST poll after the flood: %d %s, want 200 and no events", status, body)
	}
}

func positionsEqual[P comparable](a, b []P) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Any producer can write the topic. A record that is valid JSON but cannot
// be a google.protobuf.Struct (a number beyond a double; nesting deeper than
// protobuf decoders accept) is skipped like malformed JSON, rather than
// failing every protobuf read of its system.
func TestUnservableRecordsAreSkippedForEveryCodec(t *testing.T) {
	e := newTestEnv(t, Options{})
	key := []byte(strconv.Itoa(jita))
	good1 := killmailID(t, e.produce(jita))
	e.produceRaw(key, []byte(`{"killmail_id":1,"zkb":{"totalValue":1e400}}`))
	e.produceRaw(key, []byte(`{"killmail_id":2,"x":`+strings.Repeat("[", maxStructDepth)+strings.Repeat("]", maxStructDepth)+`}`))
	good2 := killmailID(t, e.produce(jita))
	if got := e.svc.Skipped(); got != 2 {
		t.Errorf("skipped %d records, want 2", got)
	}
	for i, p := range protocols {
		resp, err := e.client(p.http(), p.opts...).Poll(context.Background(), connect.NewRequest(&killfeedv1.PollRequest{ClientId: "c" + strconv.Itoa(i), SystemIds: []int64{jita}}))
		if err != nil {
			t.Fatalf("%s: %v", p.name, err)
		}
		if got := killmailIDs(t, resp.Msg.Events); !slices.Equal(got, []int64{good1, good2}) {
			t.Errorf("%s: got %v, want the two good killmails", p.name, got)
		}
	}
}

// ResetPositions to a time before 1970 (a zero or mistyped timestamp) starts
// the client at the earliest event. Kafka reads negative times as special
// requests: -1 ms meant "the end", skipping every event, and earlier times
// failed as unavailable, which clients retry for ever.
func TestResetToATimeBefore1970StartsAtTheEarliestEvent(t *testing.T) {
	e := newTestEnv(t, Options{})
	want := []int64{killmailID(t, e.produce(jita)), killmailID(t, e.produce(jita))}
	c := e.client(h2cClient())
	for _, ts := range []time.Time{time.UnixMilli(-1), time.UnixMilli(-2), time.Unix(-1, 0), time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), time.Unix(0, 0)} {
		_, err := c.ResetPositions(context.Background(), connect.NewRequest(&killfeedv1.ResetPositionsRequest{
			ClientId: "rewinder", SystemIds: []int64{jita}, To: &killfeedv1.ResetPositionsRequest_Time{Time: timestamppb.New(ts)},
		}))
		if err != nil {
			t.Fatalf("reset to %s: %v", ts, err)
		}
		if got := killmailIDs(t, poll(t, c, "rewinder", jita).Events); !slices.Equal(got, want) {
			t.Errorf("after a reset to %s the poll got %v, want every event %v", ts, got, want)
		}
	}
}

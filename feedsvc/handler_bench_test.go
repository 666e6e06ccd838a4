package feedsvc

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	killfeedv1 "github.com/killfeed/killfeed/proto/killfeed/v1"
	"github.com/killfeed/killfeed/proto/killfeed/v1/killfeedv1connect"
)

// BenchmarkPollHandler measures a caught-up Poll through the whole HTTP
// handler (Connect protocol, protobuf), called as a function: what a
// polling client costs the service apart from its socket. The read itself is
// BenchmarkPollReadPath; "connect-floor" is connect-go serving a Poll that
// does nothing, with the same handler options, so the difference is the
// per-request work this service adds (validation, positions, metrics).
func BenchmarkPollHandler(b *testing.B) {
	e := newTestEnv(b, Options{})
	follow := make([]int64, 10)
	for i := range follow {
		follow[i] = int64(30_000_001 + i)
		e.produce(follow[i])
	}
	body, err := proto.Marshal(&killfeedv1.PollRequest{ClientId: "bench", SystemIds: follow, Limit: 10_000,
		CommitMode: killfeedv1.CommitMode_COMMIT_MODE_AUTO})
	if err != nil {
		b.Fatal(err)
	}
	run := func(b *testing.B, h http.Handler) {
		c := newInProcessCall(http.MethodPost, killfeedv1connect.KillfeedServicePollProcedure, body,
			http.Header{"Content-Type": {"application/proto"}, "Connect-Protocol-Version": {"1"}})
		c.serve(b, h) // the first Poll reads the events and commits past them
		b.ReportAllocs()
		for b.Loop() {
			if n := c.serve(b, h); n != 0 {
				b.Fatalf("a caught-up Poll returned %d bytes", n)
			}
		}
	}
	b.Run("killfeed", func(b *testing.B) { run(b, e.svc.Handler()) })
	b.Run("connect-floor", func(b *testing.B) {
		mux := http.NewServeMux()
		mux.Handle(killfeedv1connect.NewKillfeedServiceHandler(noopPoll{}, e.svc.connectOptions()...))
		run(b, mux)
	})
}

// noopPoll answers every Poll with nothing.
type noopPoll struct {
	killfeedv1connect.UnimplementedKillfeedServiceHandler
}

func (noopPoll) Poll(context.Context, *connect.Request[killfeedv1.PollRequest]) (*connect.Response[killfeedv1.PollResponse], error) {
	return connect.NewResponse(&killfeedv1.PollResponse{}), nil
}

// inProcessCall is one request served by calling a handler directly, reused
// so that building it does not count.
type inProcessCall struct {
	req  *http.Request
	body []byte
	r    bytes.Reader
	w    discardWriter
}

func newInProcessCall(method, path string, body []byte, h http.Header) *inProcessCall {
	req, err := http.NewRequest(method, "http://killfeed"+path, nil)
	if err != nil {
		panic(err)
	}
	req.Header, req.RemoteAddr = h, "127.0.0.1:1"
	return &inProcessCall{req: req, body: body}
}

// serve calls h and returns the response's length.
func (c *inProcessCall) serve(b *testing.B, h http.Handler) int {
	c.r.Reset(c.body)
	c.req.Body = io.NopCloser(&c.r)
	c.w.reset()
	h.ServeHTTP(&c.w, c.req)
	if c.w.code != http.StatusOK && c.w.code != 0 { // 0: nothing written, which net/http sends as 200
		b.Fatalf("HTTP %d", c.w.code)
	}
	return c.w.n
}

// discardWriter is a ResponseWriter that keeps the status and the length.
type discardWriter struct {
	h    http.Header
	code int
	n    int
}

func (w *discardWriter) reset() {
	clear(w.h)
	w.code, w.n = 0, 0
}

func (w *discardWriter) Header() http.Header {
	if w.h == nil {
		w.h = http.Header{}
	}
	return w.h
}

func (w *discardWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *discardWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.n += len(p)
	return len(p), nil
}

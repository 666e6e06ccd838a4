package bench

import (
	"bytes"
	"io"
	"net/http"
)

// InProcessCall is one HTTP request served by calling a handler as a
// function, with no socket and no HTTP client. It is reused from call to
// call, so that what a timing measures is the handler's work, not the
// building of a request and a recorder.
type InProcessCall struct {
	req  *http.Request
	body []byte
	r    bytes.Reader
	w    responseBuffer
}

// NewInProcessCall prepares a request of method to path (a URL path, such as
// a Connect procedure) with body and header, from a loopback peer.
func NewInProcessCall(method, path string, body []byte, header http.Header) *InProcessCall {
	req, err := http.NewRequest(method, "http://killfeed"+path, nil)
	if err != nil {
		panic(err) // a path that does not parse is the caller's bug
	}
	req.Header, req.RemoteAddr = header, "127.0.0.1:1"
	return &InProcessCall{req: req, body: body}
}

// Serve calls h with the request and returns the response's status and body.
// The body is valid until the next Serve.
func (c *InProcessCall) Serve(h http.Handler) (status int, body []byte) {
	c.r.Reset(c.body)
	c.req.Body = io.NopCloser(&c.r)
	c.w.reset()
	h.ServeHTTP(&c.w, c.req)
	if c.w.code == 0 { // nothing written, which net/http sends as 200
		c.w.code = http.StatusOK
	}
	return c.w.code, c.w.buf.Bytes()
}

// responseBuffer is a ResponseWriter that keeps the status and the body.
type responseBuffer struct {
	h    http.Header
	code int
	buf  bytes.Buffer
}

func (w *responseBuffer) reset() {
	clear(w.h)
	w.code = 0
	w.buf.Reset()
}

func (w *responseBuffer) Header() http.Header {
	if w.h == nil {
		w.h = http.Header{}
	}
	return w.h
}

func (w *responseBuffer) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *responseBuffer) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.buf.Write(p)
}

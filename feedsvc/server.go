package feedsvc

import (
	"net/http"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"

	"github.com/killfeed/killfeed/proto/killfeed/v1/killfeedv1connect"
)

// maxRequestBytes bounds a request message; the largest legitimate one (a
// Poll for the maximum number of systems) is far smaller.
const maxRequestBytes = 1 << 20

// Handler serves the whole API on one http.Handler: KillfeedService over
// Connect, gRPC and gRPC-Web (JSON and protobuf), the seed REST routes, gRPC
// health and reflection, and /healthz.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle(killfeedv1connect.NewKillfeedServiceHandler(&connectHandler{svc: s},
		connect.WithCodec(jsonCodec{}),
		connect.WithReadMaxBytes(maxRequestBytes),
	))
	mux.HandleFunc("GET /api/killfeed", s.restPoll)
	mux.HandleFunc("GET /api/killfeed/next", s.restNext)
	mux.Handle(grpchealth.NewHandler(grpchealth.NewStaticChecker(killfeedv1connect.KillfeedServiceName)))
	reflector := grpcreflect.NewStaticReflector(killfeedv1connect.KillfeedServiceName)
	mux.Handle(grpcreflect.NewHandlerV1(reflector))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

// NewHTTPServer returns a server for h on addr speaking HTTP/1.1 and
// unencrypted HTTP/2 (h2c), as gRPC clients need, on one port. It sets no
// write timeout: Subscribe streams are long-lived.
func NewHTTPServer(addr string, h http.Handler) *http.Server {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		Protocols:         &protocols,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
}

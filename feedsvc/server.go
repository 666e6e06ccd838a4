package feedsvc

import (
	"compress/gzip"
	"io"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"

	"github.com/killfeed/killfeed/proto/killfeed/v1/killfeedv1connect"
)

// Handler serves the whole API on one http.Handler: KillfeedService over
// Connect, gRPC and gRPC-Web (JSON and protobuf), the seed REST routes, gRPC
// health and reflection, and /healthz.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle(killfeedv1connect.NewKillfeedServiceHandler(&connectHandler{svc: s}, s.connectOptions()...))
	mux.HandleFunc(restPollRoute, s.restRoute(restPollRoute, s.restPoll))
	mux.HandleFunc(restNextRoute, s.restRoute(restNextRoute, s.restNext))
	mux.Handle(grpchealth.NewHandler(s.health()))
	reflector := grpcreflect.NewStaticReflector(killfeedv1connect.KillfeedServiceName, grpchealth.HealthV1ServiceName)
	mux.Handle(grpcreflect.NewHandlerV1(reflector))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := s.Ready(r.Context()); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	return mux
}

// connectOptions configure the Connect, gRPC and gRPC-Web handler.
func (s *Service) connectOptions() []connect.HandlerOption {
	return []connect.HandlerOption{
		connect.WithCodec(jsonCodec{}),
		connect.WithCompression("gzip", newGzipReader, newFastGzipWriter),
		connect.WithReadMaxBytes(s.opts.MaxRequestBytes),
		connect.WithInterceptors(s.metrics.interceptor(), requestErrors{}),
	}
}

// newGzipReader and newFastGzipWriter replace connect's gzip, which
// compresses at gzip's default level. Clients such as connect-go accept gzip
// by default, so every stream message they get is compressed: at the default
// level that was about four fifths of the service's CPU while delivering a
// backfill. The fastest level takes about half the time and compresses
// killmails nearly as well (see BENCHMARKS.md).
func newGzipReader() connect.Decompressor { return &gzip.Reader{} }

func newFastGzipWriter() connect.Compressor {
	w, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed) // a valid level: no error
	return w
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
		// A query for the most systems allowed is about 10 KB.
		MaxHeaderBytes: 64 << 10,
		IdleTimeout:    2 * time.Minute,
	}
}

package bench

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	killfeedv1 "github.com/killfeed/killfeed/proto/killfeed/v1"
	"github.com/killfeed/killfeed/proto/killfeed/v1/killfeedv1connect"
)

// NewH2CClient returns an HTTP client with a connection pool of its own that
// speaks unencrypted HTTP/2 with prior knowledge, as gRPC clients of an
// http:// killfeed do. Streams of one client share its connection. If wire
// is not nil, it counts the bytes read from the network.
func NewH2CClient(wire *atomic.Int64) *http.Client {
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil || wire == nil {
				return c, err
			}
			return &countingConn{Conn: c, n: wire}, nil
		},
		// One connection carries every stream of this client: the server
		// allows far more concurrent streams than the load generator puts
		// on one connection.
		MaxConnsPerHost: 1,
	}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: tr}
}

// countingConn counts the bytes read from a connection.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// Protocols the load generator speaks.
const (
	// ProtocolGRPC is gRPC with protobuf messages.
	ProtocolGRPC = "grpc"
	// ProtocolConnectJSON is the Connect protocol with JSON messages.
	ProtocolConnectJSON = "connect-json"
)

// Stream is one open Subscribe stream whose messages are read as Frames.
type Stream struct {
	s    *connect.ServerStreamForClient[rawFrame]
	json bool
	// Bytes counts the message bytes received.
	Bytes int64
}

// OpenStream opens a Subscribe stream over hc to the killfeed at baseURL.
//
// Like every connect-go client, it accepts gzip-compressed responses, so the
// service compresses what it sends; with identity it asks for uncompressed
// messages, as grpc-go clients do unless told otherwise.
func OpenStream(ctx context.Context, hc *http.Client, baseURL, protocol string, identity bool, req *killfeedv1.SubscribeRequest) (*Stream, error) {
	url := strings.TrimSuffix(baseURL, "/") + killfeedv1connect.KillfeedServiceSubscribeProcedure
	var opts []connect.ClientOption
	asJSON := false
	switch protocol {
	case ProtocolGRPC:
		opts = append(opts, connect.WithGRPC(), connect.WithCodec(rawCodec{name: "proto"}))
	case ProtocolConnectJSON:
		asJSON = true
		opts = append(opts, connect.WithCodec(rawCodec{name: "json"}))
	default:
		return nil, fmt.Errorf("protocol %q: want %s or %s", protocol, ProtocolGRPC, ProtocolConnectJSON)
	}
	// Responses are large during backfill; the default read limit would be
	// unbounded anyway, but say it.
	opts = append(opts, connect.WithReadMaxBytes(64<<20))
	if identity {
		opts = append(opts, connect.WithAcceptCompression("gzip", nil, nil))
	}
	c := connect.NewClient[killfeedv1.SubscribeRequest, rawFrame](hc, url, opts...)
	s, err := c.CallServerStream(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, fmt.Errorf("opening Subscribe stream: %w", err)
	}
	return &Stream{s: s, json: asJSON}, nil
}

// Next waits for the next message and reads it; with stamps it also reads
// each event's produce stamp.
func (s *Stream) Next(stamps bool) (Frame, error) {
	if !s.s.Receive() {
		err := s.s.Err()
		if err == nil {
			err = fmt.Errorf("the server ended the stream")
		}
		return Frame{}, err
	}
	b := s.s.Msg().b
	s.Bytes += int64(len(b))
	if s.json {
		return ParseJSONFrame(b, stamps)
	}
	return ParseProtoFrame(b, stamps)
}

// Close ends the stream.
func (s *Stream) Close() error { return s.s.Close() }

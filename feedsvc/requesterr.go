package feedsvc

import (
	"context"
	"errors"

	"connectrpc.com/connect"
)

// requestErrors makes a Connect-protocol stream whose request cannot be read
// (a truncated envelope, a compressed flag without an encoding, unknown
// flags) fail with invalid_argument, as a unary Connect call with an
// unreadable body does. connect-go reports these as internal, which is the
// server's fault (HTTP 500 in Connect's mapping). gRPC and gRPC-Web keep
// internal: their status code table prescribes it for an unparseable request.
type requestErrors struct{}

func (requestErrors) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc { return next }

func (requestErrors) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (requestErrors) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if conn.Peer().Protocol != connect.ProtocolConnect {
			return next(ctx, conn)
		}
		return next(ctx, requestReader{conn})
	}
}

// requestReader blames the client for a request it cannot read.
type requestReader struct {
	connect.StreamingHandlerConn
}

func (r requestReader) Receive(msg any) error {
	err := r.StreamingHandlerConn.Receive(msg)
	var ce *connect.Error
	if errors.As(err, &ce) && ce.Code() == connect.CodeInternal {
		return connect.NewError(connect.CodeInvalidArgument, errors.New(ce.Message()))
	}
	return err
}

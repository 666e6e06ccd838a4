package bench

import (
	"context"

	"connectrpc.com/connect"

	killfeedv1 "github.com/killfeed/killfeed/proto/killfeed/v1"
	"github.com/killfeed/killfeed/proto/killfeed/v1/killfeedv1connect"
)

// EmptyPoll is a KillfeedService whose Poll returns nothing at once (the
// other methods are unimplemented). Served by connect-go, it measures what
// connect-go alone costs per Poll: the floor of any Connect handler, which
// bounds how much faster than the seeds' algorithm a whole handler can be.
type EmptyPoll struct {
	killfeedv1connect.UnimplementedKillfeedServiceHandler
}

// Poll returns an empty response.
func (EmptyPoll) Poll(context.Context, *connect.Request[killfeedv1.PollRequest]) (*connect.Response[killfeedv1.PollResponse], error) {
	return connect.NewResponse(&killfeedv1.PollResponse{}), nil
}

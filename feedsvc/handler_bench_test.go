package feedsvc

import (
	"net/http"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/killfeed/killfeed/internal/bench"
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
		c := bench.NewInProcessCall(http.MethodPost, killfeedv1connect.KillfeedServicePollProcedure, body,
			http.Header{"Content-Type": {"application/proto"}, "Connect-Protocol-Version": {"1"}})
		// The first Poll reads the events and commits past them.
		if status, resp := c.Serve(h); status != http.StatusOK {
			b.Fatalf("Poll: HTTP %d: %s", status, resp)
		}
		b.ReportAllocs()
		for b.Loop() {
			if status, resp := c.Serve(h); status != http.StatusOK || len(resp) != 0 {
				b.Fatalf("a caught-up Poll: HTTP %d, %d bytes", status, len(resp))
			}
		}
	}
	b.Run("killfeed", func(b *testing.B) { run(b, e.svc.Handler()) })
	b.Run("connect-floor", func(b *testing.B) {
		mux := http.NewServeMux()
		mux.Handle(killfeedv1connect.NewKillfeedServiceHandler(bench.EmptyPoll{}, e.svc.connectOptions()...))
		run(b, mux)
	})
}

package feedsvc

import (
	"net/http"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/killfeed/killfeed/internal/bench"
	killfeedv1 "github.com/killfeed/killfeed/proto/killfeed/v1"
	"github.com/killfeed/killfeed/proto/killfeed/v1/killfeedv1connect"
)

// BenchmarkPollHandler measures a Poll through the whole HTTP handler
// (Connect protocol, protobuf), called as a function: what a polling client
// costs the service apart from its socket. "caught-up" is a Poll that finds
// nothing, as nearly every Poll does; "first" is a client without positions
// reading 200 events (explicit mode, so it stays without). The read itself is
// BenchmarkPollReadPath; "connect-floor" is connect-go serving a Poll that
// does nothing, with the same handler options, so the difference is the
// per-request work this service adds (validation, positions, metrics).
func BenchmarkPollHandler(b *testing.B) {
	e := newTestEnv(b, Options{})
	follow := make([]int64, 10)
	for i := range follow {
		follow[i] = int64(30_000_001 + i)
	}
	for range 20 {
		for _, sys := range follow {
			e.produce(sys)
		}
	}
	body := func(client string, mode killfeedv1.CommitMode) []byte {
		body, err := proto.Marshal(&killfeedv1.PollRequest{ClientId: client, SystemIds: follow, Limit: 10_000, CommitMode: mode})
		if err != nil {
			b.Fatal(err)
		}
		return body
	}
	run := func(b *testing.B, h http.Handler, body []byte, events int) {
		c := bench.NewInProcessCall(http.MethodPost, killfeedv1connect.KillfeedServicePollProcedure, body,
			http.Header{"Content-Type": {"application/proto"}, "Connect-Protocol-Version": {"1"}})
		// The first Poll reads the events and, in automatic mode, commits
		// past them.
		c.Serve(h)
		status, resp := c.Serve(h)
		var got killfeedv1.PollResponse
		if err := proto.Unmarshal(resp, &got); status != http.StatusOK || err != nil || len(got.Events) != events {
			b.Fatalf("Poll: HTTP %d, %d events (%v), want %d", status, len(got.Events), err, events)
		}
		b.ReportAllocs()
		for b.Loop() {
			if status, resp := c.Serve(h); status != http.StatusOK || (events == 0) != (len(resp) == 0) {
				b.Fatalf("Poll: HTTP %d, %d bytes, want %d events", status, len(resp), events)
			}
		}
	}
	caughtUp := body("bench", killfeedv1.CommitMode_COMMIT_MODE_AUTO)
	b.Run("caught-up/killfeed", func(b *testing.B) { run(b, e.svc.Handler(), caughtUp, 0) })
	b.Run("caught-up/connect-floor", func(b *testing.B) {
		mux := http.NewServeMux()
		mux.Handle(killfeedv1connect.NewKillfeedServiceHandler(bench.EmptyPoll{}, e.svc.connectOptions()...))
		run(b, mux, caughtUp, 0)
	})
	b.Run("first/killfeed", func(b *testing.B) {
		run(b, e.svc.Handler(), body("first", killfeedv1.CommitMode_COMMIT_MODE_EXPLICIT), 10*20)
	})
}

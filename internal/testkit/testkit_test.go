package testkit_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/killfeed/killfeed/internal/testkit"
	killfeedv1 "github.com/killfeed/killfeed/proto/killfeed/v1"
	"github.com/killfeed/killfeed/proto/killfeed/v1/killfeedv1connect"
)

const jita = 30000142

func TestKillmailIsValidJSON(t *testing.T) {
	var km struct {
		ID     int64 `json:"killmail_id"`
		System int64 `json:"solar_system_id"`
		Zkb    struct {
			TotalValue float64 `json:"totalValue"`
		} `json:"zkb"`
	}
	if err := json.Unmarshal(testkit.Killmail(130000001, jita, time.Now()), &km); err != nil {
		t.Fatal(err)
	}
	if km.ID != 130000001 || km.System != jita || km.Zkb.TotalValue <= 0 {
		t.Fatalf("killmail = %+v", km)
	}
}

// TestStartProduceSubscribe checks the whole kit: what Produce writes is
// served, a dropped connection ends a stream without stopping the service,
// and a restart keeps the URL and the clients' positions.
func TestStartProduceSubscribe(t *testing.T) {
	env := testkit.Start(t)
	c := killfeedv1connect.NewKillfeedServiceClient(http.DefaultClient, env.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	first := env.Produce(jita)
	stream, err := c.Subscribe(ctx, connect.NewRequest(&killfeedv1.SubscribeRequest{ClientId: "kit", SystemIds: []int64{jita}}))
	if err != nil {
		t.Fatal(err)
	}
	if got := nextKillmail(t, stream); got != first {
		t.Fatalf("got killmail %d, want %d", got, first)
	}
	// Automatic commit mode commits just after sending; wait for it.
	for {
		res, err := c.GetPositions(ctx, connect.NewRequest(&killfeedv1.GetPositionsRequest{ClientId: "kit"}))
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Msg.GetPositions()) == 1 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}

	env.DropConnections()
	for stream.Receive() {
	}
	if stream.Err() == nil {
		t.Fatal("stream did not fail when its connection was dropped")
	}
	stream.Close()

	env.Restart()
	second := env.Produce(jita)
	stream, err = c.Subscribe(ctx, connect.NewRequest(&killfeedv1.SubscribeRequest{ClientId: "kit", SystemIds: []int64{jita}}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if got := nextKillmail(t, stream); got != second {
		t.Fatalf("after restart got killmail %d, want %d", got, second)
	}
}

// nextKillmail returns the killmail_id of the stream's next event.
func nextKillmail(t *testing.T, s *connect.ServerStreamForClient[killfeedv1.SubscribeResponse]) int64 {
	t.Helper()
	for s.Receive() {
		if evs := s.Msg().GetEvents().GetEvents(); len(evs) > 0 {
			return int64(evs[0].GetKillmail().GetFields()["killmail_id"].GetNumberValue())
		}
	}
	t.Fatalf("stream ended: %v", s.Err())
	return 0
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/killfeed/killfeed/internal/bench"
	"github.com/killfeed/killfeed/internal/killmail"
	killfeedv1 "github.com/killfeed/killfeed/proto/killfeed/v1"
	"github.com/killfeed/killfeed/proto/killfeed/v1/killfeedv1connect"
)

// measurePoll runs measurement 1 at each size: the latency of one Poll by a
// client following a few systems, killfeed against the seeds' algorithm,
// both in-process and over HTTP.
func (r *runner) measurePoll(ctx context.Context) error {
	for _, n := range r.sz.pollEvents {
		if err := r.pollSize(ctx, n); err != nil {
			return fmt.Errorf("measurement 1 (Poll, %s events): %w", shortCount(n), err)
		}
	}
	return nil
}

// pollTarget is the size the Poll target applies to, and the target.
const (
	pollTargetEvents = 100_000
	pollTargetRatio  = 100
)

func (r *runner) pollSize(ctx context.Context, n int) error {
	label := shortCount(n)
	r.progress("1 Poll, %s events in %d systems: writing them to Kafka and to the seeds port", label, r.sz.pollSystems)
	topic, err := r.kafka.CreateKillmails(ctx, "poll-"+label, 16)
	if err != nil {
		return err
	}
	defer func() { _ = r.kafka.DeleteTopic(context.WithoutCancel(ctx), topic) }()

	// The same killmails, in the same order, go to Kafka and to the port.
	seeds := bench.NewSeedStore()
	rng := rand.New(rand.NewPCG(uint64(n), 1))
	first := r.ids(n)
	var decodeErr error
	err = bench.Fill(ctx, r.kafka.Brokers, topic, n, func(i int) ([]byte, []byte) {
		sys := int64(30_000_001 + rng.IntN(r.sz.pollSystems))
		v := bench.SmallKillmail(first+int64(i), sys)
		// The seeds store the parser's decoded map, not JSON.
		var m map[string]any
		if err := json.Unmarshal(v, &m); err != nil && decodeErr == nil {
			decodeErr = err
		}
		seeds.Insert(sys, m)
		return killmail.Key(sys), v
	}, r.fillProgress("Poll "+label, n))
	if err == nil {
		err = decodeErr
	}
	if err != nil {
		return err
	}
	svc, err := r.serve(ctx, topic, 0)
	if err != nil {
		return err
	}
	defer svc.Close()
	seedLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listening: %w", err)
	}
	seedSrv := &http.Server{Handler: seeds.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = seedSrv.Serve(seedLn) }()
	defer seedSrv.Close()
	seedURL := "http://" + seedLn.Addr().String()

	follow := make([]int64, r.sz.pollFollow)
	for i := range follow {
		follow[i] = int64(30_000_001 + i)
	}
	floorMux := http.NewServeMux()
	floorMux.Handle(killfeedv1connect.NewKillfeedServiceHandler(bench.EmptyPoll{}))
	pc := &pollClients{handler: svc.svc.Handler(), floor: floorMux, url: svc.url, seedURL: seedURL, follow: follow,
		// HTTP/1.1 with keep-alive for both: one connection, reused.
		hc: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}}
	defer pc.hc.CloseIdleConnections()

	// A caught-up client has read everything: its Poll returns nothing,
	// which is what a polling client sees nearly every time.
	seeds.FetchForClient("seed-caught-up", follow)
	for {
		res, err := pc.killfeedInProcess("kf-caught-up", true)
		if err != nil {
			return err
		}
		if !res.more {
			break
		}
	}
	// A first Poll returns every retained event of the client's systems.
	want := len(seeds.FetchForClient("seed-first", follow))
	got, err := pc.killfeedInProcess("kf-first", false)
	if err != nil {
		return err
	}
	if got.events != want || got.more {
		return fmt.Errorf("killfeed's first Poll returned %d events (more=%v), the seeds port %d", got.events, got.more, want)
	}

	type pair struct {
		what     string
		kf, seed *variant
	}
	expectEvents := func(want int, f func() (pollResult, error)) func() error {
		return func() error {
			res, err := f()
			if err == nil && res.events != want {
				err = fmt.Errorf("poll returned %d events, want %d", res.events, want)
			}
			return err
		}
	}
	pairs := []pair{
		{what: "caught up, in-process handler",
			kf:   &variant{fn: expectEvents(0, func() (pollResult, error) { return pc.killfeedInProcess("kf-caught-up", true) })},
			seed: &variant{fn: func() error { seeds.FetchForClient("seed-caught-up", follow); return nil }}},
		{what: "caught up, HTTP",
			kf:   &variant{fn: expectEvents(0, func() (pollResult, error) { return pc.killfeedHTTP("kf-caught-up", true) })},
			seed: &variant{fn: expectEvents(0, func() (pollResult, error) { return pc.seedHTTP("seed-caught-up", false) })}},
		{what: fmt.Sprintf("first Poll (%d events), in-process handler", want),
			kf: &variant{fn: expectEvents(want, func() (pollResult, error) { return pc.killfeedInProcess("kf-first", false) })},
			seed: &variant{fn: func() error {
				seeds.ForgetClient("seed-first")
				if got := len(seeds.FetchForClient("seed-first", follow)); got != want {
					return fmt.Errorf("seeds port returned %d events, want %d", got, want)
				}
				return nil
			}}},
		{what: fmt.Sprintf("first Poll (%d events), HTTP", want),
			kf: &variant{fn: expectEvents(want, func() (pollResult, error) { return pc.killfeedHTTP("kf-first", false) })},
			seed: &variant{fn: func() error {
				seeds.ForgetClient("seed-first")
				_, err := pc.seedHTTP("seed-first", true)
				return err
			}}},
	}
	var all []*variant
	for _, p := range pairs {
		all = append(all, p.kf, p.seed)
	}
	// connect-go serving a Poll that does nothing: the least any Connect
	// handler costs, which bounds how much faster than the port a whole
	// handler can be.
	floor := &variant{fn: expectEvents(0, func() (pollResult, error) {
		return pc.inProcess(pc.floor, "kf-caught-up", true)
	})}
	all = append(all, floor)
	r.progress("  measuring %d variants for about %s", len(all), time.Duration(len(all))*r.sz.pollBudget)
	if err := measure(ctx, all, r.sz.pollBudget, 5); err != nil {
		return err
	}
	for _, p := range pairs {
		kf, seed := bench.Summarize(p.kf.samples), bench.Summarize(p.seed.samples)
		ratio50 := float64(seed.P50) / float64(max(1, kf.P50))
		ratio99 := float64(seed.P99) / float64(max(1, kf.P99))
		row := bench.Row{
			ID:        "1",
			What:      fmt.Sprintf("Poll p50 / p99, %s events, %s", label, p.what),
			Killfeed:  bench.FormatDuration(kf.P50) + " / " + bench.FormatDuration(kf.P99),
			Reference: "seeds port " + bench.FormatDuration(seed.P50) + " / " + bench.FormatDuration(seed.P99),
			Ratio:     bench.FormatRatio(ratio50) + " / " + bench.FormatRatio(ratio99),
		}
		if n == pollTargetEvents {
			row.Target = fmt.Sprintf("≥%d× (p50)", pollTargetRatio)
			row.Met = met(ratio50 >= pollTargetRatio)
		}
		row.Note = fmt.Sprintf("%s events in %d systems, the client follows %d; %d and %d samples", bench.FormatCount(int64(n)), r.sz.pollSystems, len(follow), kf.N, seed.N)
		r.add(row)
	}
	{
		fl, seed := bench.Summarize(floor.samples), bench.Summarize(pairs[0].seed.samples)
		r.add(bench.Row{
			ID:        "1",
			What:      fmt.Sprintf("Poll p50 / p99, %s events, caught up, connect-go floor (an empty Poll handler), in-process", label),
			Killfeed:  bench.FormatDuration(fl.P50) + " / " + bench.FormatDuration(fl.P99),
			Reference: "seeds port " + bench.FormatDuration(seed.P50) + " / " + bench.FormatDuration(seed.P99),
			Ratio:     bench.FormatRatio(float64(seed.P50)/float64(max(1, fl.P50))) + " / " + bench.FormatRatio(float64(seed.P99)/float64(max(1, fl.P99))),
			Note: fmt.Sprintf("not killfeed: connect-go's own unary handling of the same request, with no service behind it, the floor of any Connect handler; %d samples",
				fl.N),
		})
	}
	return nil
}

// variant is one thing measured by measure.
type variant struct {
	fn      func() error
	samples []time.Duration
}

// measure times every variant's fn repeatedly for about budget each, in
// rounds that visit the variants in turn (forwards, then backwards), so that
// a noisy neighbour slows all of them rather than one.
func measure(ctx context.Context, vs []*variant, budget time.Duration, rounds int) error {
	for _, v := range vs {
		for range 3 { // warm caches and connections
			if err := v.fn(); err != nil {
				return err
			}
		}
	}
	slot := budget / time.Duration(rounds)
	for round := range rounds {
		for i := range vs {
			v := vs[i]
			if round%2 == 1 {
				v = vs[len(vs)-1-i]
			}
			deadline := time.Now().Add(slot)
			for k := 0; k < 3 || time.Now().Before(deadline); k++ {
				began := time.Now()
				if err := v.fn(); err != nil {
					return err
				}
				v.samples = append(v.samples, time.Since(began))
			}
			if err := ctx.Err(); err != nil {
				return err
			}
		}
	}
	return nil
}

// pollClients issues Polls to killfeed and to the seeds port.
type pollClients struct {
	handler http.Handler // killfeed's, called in-process
	floor   http.Handler // connect-go with a Poll that does nothing
	url     string       // killfeed's, over HTTP
	seedURL string
	follow  []int64
	hc      *http.Client
	bodies  map[pollKey][]byte
	calls   map[pollKey]*bench.InProcessCall
}

// pollResult is what a Poll returned.
type pollResult struct {
	events int
	more   bool
}

// pollBody encodes a client's Poll, once per client and mode.
func (c *pollClients) pollBody(k pollKey) []byte {
	if body, ok := c.bodies[k]; ok {
		return body
	}
	mode := killfeedv1.CommitMode_COMMIT_MODE_EXPLICIT
	if k.auto {
		mode = killfeedv1.CommitMode_COMMIT_MODE_AUTO
	}
	body, _ := proto.Marshal(&killfeedv1.PollRequest{ClientId: k.client, SystemIds: c.follow, Limit: 10_000, CommitMode: mode})
	if c.bodies == nil {
		c.bodies = map[pollKey][]byte{}
	}
	c.bodies[k] = body
	return body
}

// pollHeader is the Connect protocol's unary form: a plain POST of the
// message.
func pollHeader() http.Header {
	return http.Header{"Content-Type": {"application/proto"}, "Connect-Protocol-Version": {"1"}}
}

// pollRequest builds a Poll to send over HTTP.
func (c *pollClients) pollRequest(client string, auto bool) *http.Request {
	body := c.pollBody(pollKey{client, auto})
	req, _ := http.NewRequest(http.MethodPost, c.url+killfeedv1connect.KillfeedServicePollProcedure, bytes.NewReader(body))
	req.Header = pollHeader()
	return req
}

// pollKey names a cached Poll request body.
type pollKey struct {
	client string
	auto   bool
}

// killfeedInProcess polls through killfeed's whole HTTP handler (Connect
// protocol, protobuf), called as a function: no socket, no HTTP client.
func (c *pollClients) killfeedInProcess(client string, auto bool) (pollResult, error) {
	return c.inProcess(c.handler, client, auto)
}

// inProcess calls h with a Poll, as an HTTP server would. Each client's
// call is built once and reused, so the time is the handler's.
func (c *pollClients) inProcess(h http.Handler, client string, auto bool) (pollResult, error) {
	k := pollKey{client, auto}
	call, ok := c.calls[k]
	if !ok {
		call = bench.NewInProcessCall(http.MethodPost, killfeedv1connect.KillfeedServicePollProcedure, c.pollBody(k), pollHeader())
		if c.calls == nil {
			c.calls = map[pollKey]*bench.InProcessCall{}
		}
		c.calls[k] = call
	}
	status, body := call.Serve(h)
	if status != http.StatusOK {
		return pollResult{}, fmt.Errorf("killfeed Poll: HTTP %d: %s", status, body)
	}
	return parsePollResponse(body)
}

// killfeedHTTP polls killfeed over a loopback TCP connection.
func (c *pollClients) killfeedHTTP(client string, auto bool) (pollResult, error) {
	resp, err := c.hc.Do(c.pollRequest(client, auto))
	if err != nil {
		return pollResult{}, fmt.Errorf("killfeed Poll: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return pollResult{}, fmt.Errorf("killfeed Poll: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return pollResult{}, fmt.Errorf("killfeed Poll: HTTP %d: %s", resp.StatusCode, body)
	}
	return parsePollResponse(body)
}

// seedHTTP polls the seeds port's REST route. Counting its events means
// decoding the JSON, which is left out unless count is set.
func (c *pollClients) seedHTTP(client string, count bool) (pollResult, error) {
	q := url.Values{"client_id": {client}}
	for _, s := range c.follow {
		q.Add("systems[]", strconv.FormatInt(s, 10))
	}
	resp, err := c.hc.Get(c.seedURL + "/api/killfeed?" + q.Encode())
	if err != nil {
		return pollResult{}, fmt.Errorf("seeds port poll: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return pollResult{}, fmt.Errorf("seeds port poll: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return pollResult{}, fmt.Errorf("seeds port poll: HTTP %d: %s", resp.StatusCode, body)
	}
	if !count {
		return pollResult{}, nil
	}
	var v struct {
		Events []json.RawMessage `json:"events"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return pollResult{}, fmt.Errorf("seeds port poll: %w", err)
	}
	return pollResult{events: len(v.Events)}, nil
}

// parsePollResponse counts a PollResponse's events (field 1) and reads more
// (field 2) without decoding the killmails.
func parsePollResponse(b []byte) (pollResult, error) {
	var res pollResult
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return res, errors.New("bad PollResponse")
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			res.events++
		case num == 2 && typ == protowire.VarintType:
			v, _ := protowire.ConsumeVarint(b)
			res.more = v != 0
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return res, errors.New("bad PollResponse")
		}
		b = b[n:]
	}
	return res, nil
}

// shortCount prints 10000 as 10k and 1000000 as 1M.
func shortCount(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return strconv.Itoa(n/1_000_000) + "M"
	case n >= 1000 && n%1000 == 0:
		return strconv.Itoa(n/1000) + "k"
	}
	return strconv.Itoa(n)
}

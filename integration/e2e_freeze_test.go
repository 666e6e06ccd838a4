//go:build integration

package integration

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"

	"github.com/killfeed/killfeed/feedsvc"
	killfeedv1 "github.com/killfeed/killfeed/proto/killfeed/v1"
)

// TestE2EKafkaFrozen freezes the broker (docker pause: connections stay
// open, nothing answers, as in a long GC pause or a network partition) while
// a commit is on its way to it. Such a commit is in flight, and franz-go
// never fails an in-flight idempotent record before Kafka answers, so
// without a bound of killfeed's own the call would hang until the broker
// came back. What users must see instead: calls that need Kafka (Commit, a
// Poll that commits) fail with unavailable within the server's commit
// timeout; reads that do not (an explicit-mode Poll) keep being served from
// memory; once the broker thaws, commits work again, and the client that
// retries its commit ends with exactly the position it committed, nothing
// rewound and nothing skipped.
//
// No t.Parallel: it freezes the broker every test shares.
func TestE2EKafkaFrozen(t *testing.T) {
	topic := newKillmailsTopic(t, 2)
	f := startFeed(t, "a", topic, offsetsTopicName(t), feedsvc.Options{})
	systems := []int64{jita, amarr}
	cl := newClient(t)
	for i := range 20 {
		sys := systems[i%2]
		produceRecords(t, cl, keyed(topic, sys, testKillmail(800_000_000+int64(i), sys)))
	}
	all := readTopic(t, topic, 20)
	waitServed(t, f, systems, len(all))

	c := f.client(grpcH2C)
	p := f.rpcPoller(grpcH2C)
	explicit := killfeedv1.CommitMode_COMMIT_MODE_EXPLICIT
	res, err := p.Poll(testContext(t), "committer", systems, 8, explicit)
	if err != nil || len(res.Events) != 8 {
		t.Fatalf("Poll: %d events, %v", len(res.Events), err)
	}
	processed := res.Events
	// A first commit, so the positions store's producer is set up and the
	// next commit goes straight out to the broker.
	commit(t, c, "committer", processed[:1])

	thaw := freezeKafka(t)
	frozeAt := time.Now()

	// No deadlines on these calls (connect-go would pass one to the
	// server, which would then wait that long): the server must bound them.
	noDeadline := func() context.Context {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		time.AfterFunc(2*time.Minute, cancel)
		return ctx
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		_, err := c.Commit(noDeadline(), connect.NewRequest(commitRequest("committer", processed)))
		if codeOf(err) != connect.CodeUnavailable {
			t.Errorf("Commit while Kafka is frozen: %v; want unavailable", err)
		}
		t.Logf("Commit while frozen: %s: %v", time.Since(frozeAt).Round(time.Millisecond), err)
	}()
	go func() {
		defer wg.Done()
		_, err := p.Poll(noDeadline(), "auto-poller", systems, 0, killfeedv1.CommitMode_COMMIT_MODE_AUTO)
		if codeOf(err) != connect.CodeUnavailable {
			t.Errorf("Poll (automatic commits) while Kafka is frozen: %v; want unavailable", err)
		}
	}()
	// Reads that need no commit are served meanwhile.
	time.Sleep(500 * time.Millisecond) // let the commit reach the frozen broker first
	began := time.Now()
	res, err = p.Poll(noDeadline(), "reader", systems, 0, explicit)
	if err != nil || len(res.Events) != len(all) {
		t.Errorf("explicit Poll while Kafka is frozen: %d events, %v; want all %d from memory", len(res.Events), err, len(all))
	} else {
		t.Logf("explicit Poll while frozen served in %s", time.Since(began).Round(time.Millisecond))
	}
	if status, body, _, err := httpGet(testContext(t), http1Client(), f.baseURL()+"/readyz"); err != nil || status != http.StatusServiceUnavailable {
		t.Errorf("/readyz while Kafka is frozen: %d %s %v; want 503", status, body, err)
	}
	wg.Wait()
	if took := time.Since(frozeAt); took > time.Minute {
		t.Errorf("calls needing Kafka took %s to fail; want them bounded by the commit timeout", took)
	}

	thaw()
	eventually(t, time.Minute, "commits working after the thaw", func() error {
		_, err := c.Commit(testContext(t), connect.NewRequest(commitRequest("committer", processed)))
		return err
	})
	last := map[int64]int64{}
	for _, e := range processed {
		last[e.SystemID] = max(last[e.SystemID], e.EventID)
	}
	for _, pos := range positions(t, c, "committer") {
		if pos.GetEventId() != last[pos.GetSystemId()] {
			t.Errorf("committer's position in %d is event %d; want %d, the last it committed", pos.GetSystemId(), pos.GetEventId(), last[pos.GetSystemId()])
		}
	}
	res, err = p.Poll(testContext(t), "committer", systems, 0, explicit)
	if err != nil {
		t.Fatal(err)
	}
	checkExactlyOnce(t, "committer across the freeze", append(processed, res.Events...), all)
}

// freezeKafka pauses the broker's container and returns a function that
// resumes it and waits until the broker serves again; the broker is resumed
// when the test ends if the test did not. Like stopKafka, not for tests
// that call t.Parallel.
func freezeKafka(t testing.TB) (thaw func()) {
	t.Helper()
	docker, err := testcontainers.NewDockerClientWithOpts(testContext(t))
	if err != nil {
		t.Fatalf("connecting to Docker: %v", err)
	}
	t.Cleanup(func() { docker.Close() })
	id := kafka.ctr.GetContainerID()
	if _, err := docker.ContainerPause(testContext(t), id, client.ContainerPauseOptions{}); err != nil {
		t.Fatalf("pausing Kafka: %v", err)
	}
	var once sync.Once
	thaw = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if _, err := docker.ContainerUnpause(ctx, id, client.ContainerUnpauseOptions{}); err != nil {
				t.Errorf("resuming Kafka: %v", err)
				return
			}
			if err := kafka.waitServing(ctx); err != nil {
				t.Errorf("resuming Kafka: %v", fmt.Errorf("not serving: %w", err))
			}
		})
	}
	t.Cleanup(thaw)
	return thaw
}

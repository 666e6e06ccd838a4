//go:build integration

package integration

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestBrokerRestartKeepsDataAndAddress checks the harness's stopKafka and
// startKafka, which recovery tests rely on: while stopped the broker is
// really unreachable; after the start it is back at the same address with
// its records, and a client made before the outage works again.
//
// No t.Parallel: it runs while every parallel test is paused.
func TestBrokerRestartKeepsDataAndAddress(t *testing.T) {
	topic := uniqueTopic(t)
	createTopic(t, newAdmin(t), topic, 1, nil)
	cl := newClient(t) // outlives the restart
	if err := cl.ProduceSync(testContext(t), &kgo.Record{Topic: topic, Value: []byte("before")}).FirstErr(); err != nil {
		t.Fatalf("producing before the restart: %v", err)
	}
	addr := brokerAddr()

	stopKafka(t)
	probe := newClient(t)
	ctx, cancel := context.WithTimeout(testContext(t), 3*time.Second)
	err := probe.Ping(ctx)
	cancel()
	if err == nil {
		t.Fatal("the broker answered while stopped")
	}

	startKafka(t)
	if brokerAddr() != addr {
		t.Fatalf("address changed across the restart: %s, then %s", addr, brokerAddr())
	}
	mapped, err := kafka.ctr.MappedPort(testContext(t), containerPort)
	if err != nil {
		t.Fatalf("reading the mapped port: %v", err)
	}
	if _, port, _ := net.SplitHostPort(addr); mapped.Port() != port {
		t.Errorf("after the restart the broker is published on port %s; want %s", mapped.Port(), port)
	}

	if err := cl.ProduceSync(testContext(t), &kgo.Record{Topic: topic, Value: []byte("after")}).FirstErr(); err != nil {
		t.Fatalf("producing after the restart with the old client: %v", err)
	}
	recs := consumeAll(t, topic, 2)
	if len(recs) != 2 || string(recs[0].Value) != "before" || string(recs[1].Value) != "after" ||
		recs[0].Offset != 0 || recs[1].Offset != 1 {
		for _, r := range recs {
			t.Logf("offset %d: %q", r.Offset, r.Value)
		}
		t.Fatalf("after the restart the topic holds %d records; want before@0 and after@1", len(recs))
	}
}

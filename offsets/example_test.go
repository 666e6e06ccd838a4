package offsets_test

import (
	"context"
	"fmt"
	"log"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/killfeed/killfeed/offsets"
)

func Example() {
	// An in-process Kafka broker; in production, the cluster's seed brokers.
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		log.Fatal(err)
	}
	defer cluster.Close()
	ctx := context.Background()

	store, err := offsets.Open(ctx, cluster.ListenAddrs(), offsets.Options{Topic: "example-offsets"})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	// The client has consumed Jita (30000142) up to offset 1233 of
	// partition 3, and Amarr (30002187) up to offset 99 of partition 7.
	err = store.Commit(ctx, "my-client", []offsets.Position{
		{SystemID: 30002187, Partition: 7, Offset: 100},
		{SystemID: 30000142, Partition: 3, Offset: 1234},
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, p := range store.Positions("my-client") {
		fmt.Printf("system %d partition %d: next offset %d\n", p.SystemID, p.Partition, p.Offset)
	}
	// Output:
	// system 30000142 partition 3: next offset 1234
	// system 30002187 partition 7: next offset 100
}

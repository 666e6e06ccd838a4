package broker

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Listening on every interface (as in a container, --kafka-listen
// 0.0.0.0:9092), the broker advertises an address clients can dial, not
// 0.0.0.0 or [::], which kcat and others refuse.
func TestWildcardListenAdvertisesADialableAddress(t *testing.T) {
	for _, listen := range []string{"0.0.0.0:0", "[::]:0", ":0"} {
		t.Run(listen, func(t *testing.T) {
			b, err := Start(Options{Listen: listen})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			host, port, _ := net.SplitHostPort(b.Addr())
			if host != "127.0.0.1" || port == "0" {
				t.Fatalf("Addr() = %q, want 127.0.0.1:<port>", b.Addr())
			}
			cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			md, err := kadm.NewClient(cl).BrokerMetadata(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(md.Brokers) != 1 || md.Brokers[0].Host != "127.0.0.1" || strconv.Itoa(int(md.Brokers[0].Port)) != port {
				t.Fatalf("advertised brokers %+v, want 127.0.0.1:%s", md.Brokers, port)
			}
		})
	}
}

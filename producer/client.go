package producer

import "github.com/twmb/franz-go/pkg/kgo"

// ClientOpts returns the franz-go options that the client given to New (and
// the R2Z2 ingester's clients, derived from it) needs beyond franz-go's
// defaults. Pass them to kgo.NewClient with the seed brokers and any TLS or
// SASL options.
//
// kgo.AlwaysRetryEOF: franz-go takes a connection that the broker closes at
// once as a TLS or SASL mistake, and fails every buffered record instead of
// retrying. A broker restarting behind a TCP proxy (a port published by
// Docker, as deploy/compose.yaml does for the host; a load balancer) looks
// just like that for as long as it is down: the proxy accepts, finds no
// broker and closes. Without this option a Kafka restart fails every
// killmail in flight and ends Run. The cost is that a real TLS or SASL
// mistake is retried, and logged by franz-go, rather than failing at once.
func ClientOpts() []kgo.Opt {
	return []kgo.Opt{kgo.AlwaysRetryEOF()}
}

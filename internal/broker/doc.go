// Package broker runs the embedded Kafka-compatible broker (franz-go's kfake)
// that lets `killfeed serve` work on one machine with no Kafka installed. Its
// data directory makes killmails and positions survive a restart.
//
// It owns the broker's lifecycle only; topics are created by their users.
// kfake is a test and localhost broker: deployments at scale point
// --brokers at Apache Kafka or Redpanda instead.
package broker

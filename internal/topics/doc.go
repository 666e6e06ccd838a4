// Package topics creates and checks the Kafka topics killfeed relies on: the
// killmails topic (partitioned by solar system, bounded by retention) and the
// compacted offsets topic.
//
// It owns topic settings only. It must not read or write records; producer,
// feedsvc and offsets do that.
package topics

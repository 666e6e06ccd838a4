// Package bench holds the pieces of the killfeed-bench command that are not
// specific to one measurement: a Go port of the seeds' killmail store (the
// reference for Poll latency), killmail generators, Kafka helpers, the
// load-generator protocol and its stream clients, latency statistics and
// process memory readings.
//
// Nothing here is used by the product; it exists to measure it.
package bench

// Package offsets keeps every client's committed positions in a compacted
// Kafka topic and serves them from memory.
//
// A position is per client, per solar system and per partition of the
// killmails topic: the offset of the next record the client has not yet
// consumed. One record per (client, system) holds the system's positions, so
// compaction keeps exactly the latest state. The store rebuilds its memory
// from the topic at start, keeps tailing it (so several feedsvc replicas see
// each other's commits), and expires idle clients with tombstones.
//
// Concurrency: every method is safe for concurrent use. Commits of one client
// from two goroutines race like two Kafka consumers in one group would; the
// caller (feedsvc) serialises each client's read-modify-commit.
//
// offsets is used by feedsvc. It must not read the killmails topic or know
// about the API; it only stores numbers.
package offsets

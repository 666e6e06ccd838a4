// Package producer turns killmail sources into records on the killmails
// topic: it normalises each killmail, rejects what cannot be stored with a
// reason, drops killmails it has already written, and writes the rest keyed
// by solar system.
//
// Two writers share the record format and the normalisation. Producer takes
// any Source (an NDJSON file or stdin, a synthetic generator) and produces
// idempotently. R2Z2 ingests zKillboard's R2Z2 feed exactly once: each batch
// of killmails is written in one Kafka transaction with a cursor record (the
// last sequence ingested) in a small compacted topic, so a restart at any
// instant continues after the last committed batch.
//
// It owns the write side only. It must not serve clients or read or commit
// client positions; feedsvc and offsets do that. The only records it reads
// are the recent tail of the killmails topic, at start, to remember which
// killmail ids it already wrote, and the R2Z2 cursor.
package producer

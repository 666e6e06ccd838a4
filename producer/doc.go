// Package producer turns killmail sources (an NDJSON file or stdin, a
// synthetic generator) into records on the killmails topic: it normalises
// each killmail, rejects what cannot be stored with a reason, drops killmails
// it has already written, and produces the rest idempotently, keyed by solar
// system.
//
// It owns the write side only. It must not serve clients or read or commit
// client positions; feedsvc and offsets do that. The only records it reads
// are the recent tail of the killmails topic, at start, to remember which
// killmail ids it already wrote.
package producer

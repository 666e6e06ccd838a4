// Package feedsvc is the feed service: it tails the killmails topic into a
// bounded in-memory index, and serves Poll, Next and Subscribe per client
// over Connect-RPC (Connect, gRPC, gRPC-Web, HTTP/JSON) and the seed REST
// routes, committing each client's positions through package offsets.
//
// Data flows one way: Kafka → tail → memory → read → handlers → clients.
// Memory holds at most MaxEventsPerSystem events per system and nothing below
// a partition's log start; a client behind memory is served from Kafka, and a
// client behind Kafka's retention is told which events it lost.
//
// An event's id packs its Kafka position: offset<<10 | partition. It is
// unique in the topic, increasing within a system (a system's records share a
// partition) and stable across restarts.
//
// feedsvc must not produce killmails, and must not touch the offsets topic
// except through package offsets.
package feedsvc

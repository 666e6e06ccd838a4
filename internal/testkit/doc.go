// Package testkit starts a complete killfeed — an in-process Kafka broker
// (franz-go's kfake), the killmails topic, the positions store and the feed
// service — behind a real HTTP listener on 127.0.0.1, so a test or an example
// can talk to it exactly as a client talks to a deployed service.
//
//	env := testkit.Start(t)
//	id := env.Produce(30000142) // a killmail in Jita
//	// dial env.URL with any Connect, gRPC or gRPC-Web client
//
// It exists for tests and examples only. Production code must never import
// it: it depends on package testing and runs an in-memory broker that loses
// everything when the test ends.
package testkit

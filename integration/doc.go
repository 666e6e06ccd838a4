//go:build integration

// Package integration holds killfeed's end-to-end tests against a real Apache
// Kafka broker running in a container, and the harness that runs it.
//
// TestMain starts one single-node KRaft broker for the whole package with
// testcontainers-go and every test shares it: tests use their own topics
// (uniqueTopic) and may run in parallel, except tests that stop and start the
// broker, which must not call t.Parallel. The image is KILLFEED_KAFKA_IMAGE
// if set, else the official apache/kafka image if it is present or can be
// pulled, else the local image that kafkaimage/build.sh builds from Apache
// Kafka's jars on Maven Central.
//
// Every file carries the integration build tag, so `go test ./...` never
// needs Docker; the tests run with `go test -tags integration ./integration/...`
// (the project's .ci/test does this, with Docker set up).
//
// The package owns tests only. It must not hold production code, and no
// other package may import it.
package integration

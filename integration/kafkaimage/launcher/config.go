package main

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// defaults returns the properties of a single-node KRaft server that is both
// broker and controller, tuned for tests. advertised is the host:port clients
// outside the container dial.
//
// There are three listeners: PLAINTEXT on 9092 (published, advertised as
// advertised), BROKER on 127.0.0.1:29092 for the broker's own inter-broker
// connections (which must not go to a host port that means nothing inside the
// container), and CONTROLLER on 127.0.0.1:9093 for the KRaft quorum.
func defaults(advertised string) map[string]string {
	return map[string]string{
		"process.roles":                    "broker,controller",
		"node.id":                          "1",
		"controller.quorum.voters":         "1@127.0.0.1:9093",
		"controller.listener.names":        "CONTROLLER",
		"listeners":                        "PLAINTEXT://0.0.0.0:9092,BROKER://127.0.0.1:29092,CONTROLLER://127.0.0.1:9093",
		"advertised.listeners":             "PLAINTEXT://" + advertised + ",BROKER://127.0.0.1:29092",
		"listener.security.protocol.map":   "PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT,CONTROLLER:PLAINTEXT",
		"inter.broker.listener.name":       "BROKER",
		"log.dirs":                         "/var/lib/kafka/data",
		"num.partitions":                   "1",
		"group.initial.rebalance.delay.ms": "0",
		// One node: every internal topic has one replica.
		"offsets.topic.replication.factor":                 "1",
		"transaction.state.log.replication.factor":         "1",
		"transaction.state.log.min.isr":                    "1",
		"share.coordinator.state.topic.replication.factor": "1",
		"share.coordinator.state.topic.min.isr":            "1",
	}
}

// notProperties are KAFKA_* variables that configure the JVM or the launcher
// rather than the broker.
var notProperties = map[string]bool{
	"KAFKA_ADVERTISED":           true,
	"KAFKA_HEAP_OPTS":            true,
	"KAFKA_JVM_PERFORMANCE_OPTS": true,
	"KAFKA_OPTS":                 true,
	"KAFKA_GC_LOG_OPTS":          true,
	"KAFKA_LOG4J_OPTS":           true,
	"KAFKA_JMX_OPTS":             true,
	"KAFKA_DEBUG":                true,
	"KAFKA_HOME":                 true,
	"KAFKA_VERSION":              true,
}

// envProperties returns the broker properties set in env (os.Environ form).
func envProperties(env []string) map[string]string {
	props := map[string]string{}
	for _, kv := range env {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || notProperties[name] {
			continue
		}
		if prop, ok := propertyName(name); ok {
			props[prop] = value
		}
	}
	return props
}

// propertyName maps an environment variable to the broker property it sets,
// the way the official apache/kafka image does: KAFKA_LOG_DIRS is log.dirs,
// KAFKA_SOME__NAME is some_name and KAFKA_SOME___NAME is some-name.
func propertyName(envName string) (string, bool) {
	rest, ok := strings.CutPrefix(envName, "KAFKA_")
	if !ok || rest == "" {
		return "", false
	}
	// Longest run first, through placeholders that cannot occur in a
	// variable name, so "___" is not read as "__" followed by "_".
	r := strings.NewReplacer("___", "\x00", "__", "\x01")
	name := strings.ToLower(r.Replace(rest))
	name = strings.ReplaceAll(name, "_", ".")
	name = strings.NewReplacer("\x00", "-", "\x01", "_").Replace(name)
	return name, true
}

// render writes props in java.util.Properties format, sorted so the file is
// easy to read in the container log.
func render(props map[string]string) []byte {
	var b strings.Builder
	esc := strings.NewReplacer(`\`, `\\`, "\n", `\n`, "\r", `\r`)
	for _, k := range slices.Sorted(maps.Keys(props)) {
		fmt.Fprintf(&b, "%s=%s\n", k, esc.Replace(props[k]))
	}
	return []byte(b.String())
}

// logDirs returns the directories kafka-storage format initialises.
func logDirs(props map[string]string) []string {
	dirs := props["log.dirs"]
	if dirs == "" {
		dirs = props["log.dir"]
	}
	if dirs == "" {
		dirs = "/tmp/kafka-logs" // Kafka's own default
	}
	out := strings.Split(dirs, ",")
	if meta := props["metadata.log.dir"]; meta != "" {
		out = append(out, meta)
	}
	return out
}

// formatFlags returns the extra kafka-storage format flags props need: a
// controller with no static controller.quorum.voters uses a dynamic quorum,
// which must be bootstrapped with itself as the only voter.
func formatFlags(props map[string]string) []string {
	roles := strings.Split(props["process.roles"], ",")
	if props["controller.quorum.voters"] == "" && slices.Contains(roles, "controller") {
		return []string{"--standalone"}
	}
	return nil
}

// randomClusterID returns a new KRaft cluster id: 16 random bytes in
// URL-safe base64 without padding, the form Kafka's Uuid.toString writes.
func randomClusterID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generating a cluster id: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

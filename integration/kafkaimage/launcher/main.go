// Command launcher is the entrypoint of the local Apache Kafka test image
// built by integration/kafkaimage/build.sh. The image is FROM scratch and has
// no shell, so this small static program does what the official image's
// scripts do: it writes server.properties for a single-node KRaft broker that
// is also its own controller, formats the storage directory on first start,
// and then replaces itself with the broker JVM (so the broker is PID 1 and
// gets docker stop's SIGTERM directly).
//
// It is configured through the environment, using the official apache/kafka
// image's convention so one set of variables works for both images:
//
//   - KAFKA_<NAME> sets a broker property: the prefix is dropped, the rest is
//     lower-cased, "___" becomes "-", "__" becomes "_" and "_" becomes ".".
//     KAFKA_LOG_CLEANER_BACKOFF_MS=1000 sets log.cleaner.backoff.ms=1000.
//     These override the defaults in [defaults].
//   - KAFKA_ADVERTISED is the host:port clients outside the container dial
//     (the mapped host port); default localhost:9092. It sets the PLAINTEXT
//     entry of advertised.listeners unless KAFKA_ADVERTISED_LISTENERS is set.
//   - CLUSTER_ID is the KRaft cluster id used when formatting; default a
//     random one. A restarted container keeps the id it was formatted with.
//   - KAFKA_HEAP_OPTS, KAFKA_JVM_PERFORMANCE_OPTS and KAFKA_OPTS are JVM
//     options, as in Kafka's own start scripts.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
)

// Paths inside the image; build.sh puts the files there.
const (
	javaBin      = "/opt/jre/bin/java"
	classPath    = "/opt/kafka/libs/*"
	serverConfig = "/opt/kafka/config/server.properties"
	log4jConfig  = "/opt/kafka/config/log4j2.properties"
)

// JVM options used when the matching variable is unset. The heap is small
// because the image only ever serves tests.
const (
	defaultHeapOpts = "-Xms256m -Xmx1g"
	defaultPerfOpts = "-XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true"
	// formatOpts keep the one-off storage format run short: it needs no JIT
	// beyond C1 and almost no heap.
	formatOpts = "-Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Djava.awt.headless=true"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "launcher: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	props := defaults(envOr("KAFKA_ADVERTISED", "localhost:9092"))
	for k, v := range envProperties(os.Environ()) {
		props[k] = v
	}
	rendered := render(props)
	if err := os.WriteFile(serverConfig, rendered, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", serverConfig, err)
	}
	fmt.Printf("launcher: %s:\n%s", serverConfig, rendered)

	if formatted(props) {
		fmt.Println("launcher: storage already formatted; keeping its data and cluster id")
	} else if err := format(props); err != nil {
		return err
	}

	argv := []string{javaBin}
	argv = append(argv, strings.Fields(envOr("KAFKA_HEAP_OPTS", defaultHeapOpts))...)
	argv = append(argv, strings.Fields(envOr("KAFKA_JVM_PERFORMANCE_OPTS", defaultPerfOpts))...)
	argv = append(argv, "-Dlog4j2.configurationFile="+log4jConfig)
	argv = append(argv, strings.Fields(os.Getenv("KAFKA_OPTS"))...)
	argv = append(argv, "-cp", classPath, "kafka.Kafka", serverConfig)
	fmt.Printf("launcher: exec %s\n", strings.Join(argv, " "))
	if err := syscall.Exec(javaBin, argv, os.Environ()); err != nil {
		return fmt.Errorf("exec %s: %w", javaBin, err)
	}
	return nil // not reached: Exec replaced this process
}

// formatted reports whether every log directory already holds the
// meta.properties that kafka-storage format writes, so a restarted container
// skips a JVM start.
func formatted(props map[string]string) bool {
	for _, dir := range logDirs(props) {
		if _, err := os.Stat(filepath.Join(dir, "meta.properties")); err != nil {
			return false
		}
	}
	return true
}

// format runs kafka-storage format. --ignore-formatted makes a half-formatted
// set of directories (one disk replaced) a repair rather than an error.
func format(props map[string]string) error {
	clusterID := os.Getenv("CLUSTER_ID")
	if clusterID == "" {
		var err error
		if clusterID, err = randomClusterID(); err != nil {
			return err
		}
	}
	argv := append(strings.Fields(formatOpts),
		"-Dlog4j2.configurationFile="+log4jConfig,
		"-cp", classPath, "kafka.tools.StorageTool",
		"format", "--config", serverConfig, "--cluster-id", clusterID, "--ignore-formatted")
	argv = append(argv, formatFlags(props)...)
	fmt.Printf("launcher: formatting storage: %s %s\n", javaBin, strings.Join(argv, " "))

	cmd := exec.Command(javaBin, argv...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting kafka-storage format: %w", err)
	}
	// As PID 1 this process ignores SIGTERM unless it handles it; pass it on
	// so docker stop during the format does not wait for its kill timeout.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	go func() {
		for s := range sigs {
			_ = cmd.Process.Signal(s)
		}
	}()
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("kafka-storage format: %w", err)
	}
	return nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

//go:build integration

package integration

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
	"github.com/twmb/franz-go/pkg/kgo"
)

const (
	// containerPort is the broker's client listener inside the container.
	containerPort = "9092/tcp"
	// startedLine is what the broker logs once it serves clients, in the
	// official image and the local one alike.
	startedLine = "Kafka Server started"
	// startTimeout bounds one broker start. A cold JVM start on two busy
	// cores has taken close to a minute.
	startTimeout = 3 * time.Minute
	// stopTimeout is how long docker stop lets the broker shut down cleanly
	// before killing it; a clean shutdown keeps restarts quick.
	stopTimeout = 30 * time.Second
)

// clusterID is the KRaft cluster id the broker is formatted with: 16 bytes
// in Kafka's URL-safe base64. Fixed, so a failing run's logs are comparable.
var clusterID = base64.RawURLEncoding.EncodeToString([]byte("killfeed-itests!"))

// broker is the Kafka container the package's tests share.
type broker struct {
	image string
	addr  string // host:port that clients outside the container dial

	ctr *testcontainers.DockerContainer
	// starts counts the broker's starts. Docker keeps a container's log
	// across stop and start, so readiness after a restart means seeing
	// startedLine one more time than before.
	starts atomic.Int32

	mu      sync.Mutex // serialises stop and start
	stopped bool
}

// brokerEnv configures the broker through environment variables named the
// way the official apache/kafka image reads them (KAFKA_LOG_DIRS is
// log.dirs); the local image's launcher reads the same names. With any
// KAFKA_* variable set the official image uses no defaults, so this is the
// whole configuration.
func brokerEnv(addr string) map[string]string {
	return map[string]string{
		"CLUSTER_ID":          clusterID,
		"KAFKA_NODE_ID":       "1",
		"KAFKA_PROCESS_ROLES": "broker,controller",
		// PLAINTEXT is published on the host and advertised with the host
		// address; the broker's own connections use listeners that only
		// exist inside the container.
		"KAFKA_LISTENERS":                      "PLAINTEXT://0.0.0.0:9092,BROKER://127.0.0.1:29092,CONTROLLER://127.0.0.1:9093",
		"KAFKA_ADVERTISED_LISTENERS":           "PLAINTEXT://" + addr + ",BROKER://127.0.0.1:29092",
		"KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT,CONTROLLER:PLAINTEXT",
		"KAFKA_INTER_BROKER_LISTENER_NAME":     "BROKER",
		"KAFKA_CONTROLLER_LISTENER_NAMES":      "CONTROLLER",
		"KAFKA_CONTROLLER_QUORUM_VOTERS":       "1@127.0.0.1:9093",
		"KAFKA_LOG_DIRS":                       "/tmp/kraft-combined-logs",
		"KAFKA_NUM_PARTITIONS":                 "1",
		// Code under test must create its topics; a broker that made them
		// on first use would hide a missing create.
		"KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
		// One node: every internal topic has one replica. One partition for
		// the group offsets topic keeps the first group join quick.
		"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR":                 "1",
		"KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS":                     "1",
		"KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR":         "1",
		"KAFKA_TRANSACTION_STATE_LOG_MIN_ISR":                    "1",
		"KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
		"KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR":            "1",
		"KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS":                 "0",
		// Retention and compaction run within seconds rather than after
		// Kafka's production delays (5 min checks, 30 s initial delay, 15 s
		// cleaner back-off), so tests of them need not wait long.
		"KAFKA_LOG_RETENTION_CHECK_INTERVAL_MS": "1000",
		"KAFKA_LOG_INITIAL_TASK_DELAY_MS":       "1000",
		"KAFKA_LOG_CLEANER_BACKOFF_MS":          "1000",
		"KAFKA_LOG_SEGMENT_DELETE_DELAY_MS":     "1000",
		"KAFKA_HEAP_OPTS":                       "-Xms256m -Xmx1g",
	}
}

// startBroker chooses an image, starts the container with its client port
// bound to a fixed host port, and waits until the broker serves clients.
func startBroker(ctx context.Context) (*broker, error) {
	docker, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return nil, fmt.Errorf("connecting to Docker: %w", err)
	}
	defer docker.Close()
	image, why, err := chooseImage(ctx, docker)
	if err != nil {
		return nil, err
	}
	banner("Kafka image: %s\n%s", image, why)

	port, err := hostPort()
	if err != nil {
		return nil, err
	}
	b := &broker{image: image, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	b.starts.Store(1)

	req := testcontainers.ContainerRequest{
		Image:        image,
		Env:          brokerEnv(b.addr),
		ExposedPorts: []string{containerPort},
		// A fixed host port, not a random one: the broker advertises it, so
		// it must be known before the start and must survive a restart.
		HostConfigModifier: func(hc *container.HostConfig) {
			hc.PortBindings = network.PortMap{
				network.MustParsePort(containerPort): {{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: strconv.Itoa(port)}},
			}
		},
		WaitingFor: serverStarted{b: b},
	}
	// .ci/test labels its run's containers so its cleanup removes those and
	// leaves other runs on the same Docker daemon alone.
	if run := os.Getenv("KILLFEED_TEST_RUN"); run != "" {
		req.Labels = map[string]string{"io.killfeed.test-run": run}
	}
	if os.Getenv("KILLFEED_KAFKA_LOGS") != "" {
		req.LogConsumerCfg = &testcontainers.LogConsumerConfig{Consumers: []testcontainers.LogConsumer{stderrLogs{}}}
	}
	started := time.Now()
	ctr, err := testcontainers.GenericContainer(ctx, testcontainers.GenericContainerRequest{ContainerRequest: req, Started: true})
	if ctr != nil {
		b.ctr, _ = ctr.(*testcontainers.DockerContainer)
	}
	if err == nil && b.ctr == nil {
		err = fmt.Errorf("testcontainers returned a %T, not a Docker container", ctr)
	}
	if err == nil {
		err = b.waitServing(ctx)
	}
	if err != nil {
		b.dumpLogs(ctx)
		_ = b.terminate(ctx)
		return nil, fmt.Errorf("starting Kafka (%s): %w", image, err)
	}
	banner("Kafka %s is serving at %s (started in %s)", image, b.addr, time.Since(started).Round(100*time.Millisecond))
	return b, nil
}

// stop stops the container and keeps it, with its data and port binding.
func (b *broker) stop(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return nil
	}
	timeout := stopTimeout
	if err := b.ctr.Stop(ctx, &timeout); err != nil {
		return fmt.Errorf("stopping Kafka: %w", err)
	}
	b.stopped = true
	return nil
}

// start starts the stopped container again and waits until the broker
// serves clients at the same address.
func (b *broker) start(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.stopped {
		return nil
	}
	b.starts.Add(1)
	if err := b.ctr.Start(ctx); err != nil {
		b.dumpLogs(ctx)
		return fmt.Errorf("restarting Kafka: %w", err)
	}
	b.stopped = false
	if err := b.waitServing(ctx); err != nil {
		b.dumpLogs(ctx)
		return fmt.Errorf("restarting Kafka: %w", err)
	}
	return nil
}

// terminate removes the container and its data.
func (b *broker) terminate(ctx context.Context) error {
	if b.ctr == nil {
		return nil
	}
	if err := b.ctr.Terminate(ctx); err != nil {
		return fmt.Errorf("removing the Kafka container: %w", err)
	}
	return nil
}

// waitServing waits until a client outside the container gets an answer
// from the broker: the log line says the broker is up, this proves the
// port mapping and advertised address work too.
func (b *broker) waitServing(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.addr))
	if err != nil {
		return fmt.Errorf("creating a client: %w", err)
	}
	defer cl.Close()
	for {
		err := cl.Ping(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("broker at %s does not answer: %w", b.addr, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// dumpLogs prints the end of the container log, the first thing to read
// when the broker does not come up.
func (b *broker) dumpLogs(ctx context.Context) {
	if b.ctr == nil {
		return
	}
	rc, err := b.ctr.Logs(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "integration: reading the Kafka log: %v\n", err)
		return
	}
	defer rc.Close()
	var lines []string
	sc := bufio.NewScanner(rc)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	lines = lines[max(0, len(lines)-150):]
	fmt.Fprintf(os.Stderr, "integration: last %d lines of the Kafka log:\n%s\n", len(lines), strings.Join(lines, "\n"))
}

// serverStarted is the readiness check: wait.ForLog for the n-th
// startedLine, n being the number of starts so far.
type serverStarted struct{ b *broker }

// WaitUntilReady implements [wait.Strategy].
func (s serverStarted) WaitUntilReady(ctx context.Context, target wait.StrategyTarget) error {
	return wait.ForLog(startedLine).
		WithOccurrence(int(s.b.starts.Load())).
		WithStartupTimeout(startTimeout).
		WithPollInterval(250*time.Millisecond).
		WaitUntilReady(ctx, target)
}

// String describes the check in testcontainers' log.
func (s serverStarted) String() string {
	return fmt.Sprintf("log line %q (start #%d)", startedLine, s.b.starts.Load())
}

// hostPort returns KILLFEED_KAFKA_PORT, or a port that is free now.
func hostPort() (int, error) {
	if v := os.Getenv("KILLFEED_KAFKA_PORT"); v != "" {
		p, err := strconv.Atoi(v)
		if err != nil || p <= 0 || p > 65535 {
			return 0, fmt.Errorf("KILLFEED_KAFKA_PORT=%q is not a port", v)
		}
		return p, nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// stderrLogs streams the broker log when KILLFEED_KAFKA_LOGS is set.
type stderrLogs struct{}

// Accept implements [testcontainers.LogConsumer].
func (stderrLogs) Accept(l testcontainers.Log) { _, _ = os.Stderr.Write(l.Content) }

// banner prints a message that stands out in go test's output.
func banner(format string, args ...any) {
	line := strings.Repeat("=", 78)
	fmt.Fprintf(os.Stderr, "%s\n%s\n%s\n", line, fmt.Sprintf(format, args...), line)
}

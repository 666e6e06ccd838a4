package broker

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Options configures the embedded broker. The zero value of each field means
// the default noted beside it.
type Options struct {
	// Listen is the Kafka address to listen on, so kcat and other producers
	// can reach the broker. Default "127.0.0.1:9092". Port 0 picks a free
	// port.
	Listen string
	// DataDir persists records, topic configs and offsets. Empty keeps
	// everything in memory (lost at exit).
	DataDir string
	// CleanEvery is how often retention and compaction run. Default 1m.
	CleanEvery time.Duration
	// Logger receives lifecycle lines. Default: discard.
	Logger *slog.Logger
}

// Broker is a running embedded broker.
type Broker struct {
	cluster *kfake.Cluster
	addr    string
	cancel  context.CancelFunc
	done    chan struct{}
}

// Start starts the broker and its retention/compaction loop.
func Start(opts Options) (*Broker, error) {
	if opts.Listen == "" {
		opts.Listen = "127.0.0.1:9092"
	}
	if opts.CleanEvery == 0 {
		opts.CleanEvery = time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	host, _, err := net.SplitHostPort(opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("embedded broker: bad listen address %q: %w", opts.Listen, err)
	}
	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("embedded broker: listening on %s: %w", opts.Listen, err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		// kfake advertises its listener's address, and clients cannot dial
		// 0.0.0.0 or [::] (kcat refuses them). Advertise loopback: clients
		// on this machine, or through a container port published on the
		// same number, reach it.
		host = "127.0.0.1"
	}
	addr := net.JoinHostPort(host, port)
	kopts := []kfake.Opt{
		kfake.NumBrokers(1),
		// kfake asks for a listener per broker; hand it the one bound above
		// so a busy port fails here, clearly, before anything starts.
		kfake.ListenFn(func(string, string) (net.Listener, error) { return advertised{ln, addr}, nil }),
		kfake.BrokerConfigs(map[string]string{"log.cleaner.backoff.ms": fmt.Sprint(opts.CleanEvery.Milliseconds())}),
	}
	if opts.DataDir != "" {
		if err := os.MkdirAll(opts.DataDir, 0o755); err != nil {
			ln.Close()
			return nil, fmt.Errorf("embedded broker: creating data dir: %w", err)
		}
		kopts = append(kopts, kfake.DataDir(opts.DataDir))
	}
	c, err := kfake.NewCluster(kopts...)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("embedded broker: starting: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Broker{cluster: c, addr: addr, cancel: cancel, done: make(chan struct{})}
	go b.clean(ctx, opts.CleanEvery)
	opts.Logger.Info("embedded Kafka broker listening", "addr", addr, "data_dir", opts.DataDir)
	return b, nil
}

// clean applies retention and compaction periodically. kfake's own cleaner
// timer does not restart after a restart from a data directory, so killfeed
// drives it.
func (b *Broker) clean(ctx context.Context, every time.Duration) {
	defer close(b.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			b.cluster.ApplyRetention()
			b.cluster.Compact()
		}
	}
}

// advertised is a listener reporting the address clients should dial, which
// kfake advertises in metadata.
type advertised struct {
	net.Listener
	addr string
}

func (a advertised) Addr() net.Addr { return advertisedAddr(a.addr) }

type advertisedAddr string

func (a advertisedAddr) Network() string { return "tcp" }
func (a advertisedAddr) String() string  { return string(a) }

// Addr is the address Kafka clients dial.
func (b *Broker) Addr() string { return b.addr }

// Cluster exposes the kfake cluster, for tests that drive retention.
func (b *Broker) Cluster() *kfake.Cluster { return b.cluster }

// Close stops the broker, flushing its data directory.
func (b *Broker) Close() {
	b.cancel()
	<-b.done
	b.cluster.Close()
}

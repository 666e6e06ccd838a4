// Command killfeed runs the killfeed service and its tools. See the README
// for the subcommands and their flags.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/alecthomas/kong"
)

// cli is the whole command line. Every flag also reads a KILLFEED_* variable,
// so containers can be configured from the environment.
type cli struct {
	LogFormat string `help:"Log format: text or json." enum:"text,json" default:"text" env:"KILLFEED_LOG_FORMAT"`
	LogLevel  string `help:"Log level: debug, info, warn or error." enum:"debug,info,warn,error" default:"info" env:"KILLFEED_LOG_LEVEL"`

	Serve serveCmd `cmd:"" help:"Run the feed service (with an embedded Kafka-compatible broker when --brokers is empty)."`

	Produce produceCmd `cmd:"" help:"Write killmails from zKillboard's R2Z2 feed, an NDJSON file, stdin or the synthetic generator to the killmails topic."`
}

// logger builds the process logger from the global flags.
func (c *cli) logger() *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var c cli
	k := kong.Parse(&c,
		kong.Name("killfeed"),
		kong.Description("Every EVE Online killmail in the solar systems you follow, in real time, from Kafka."),
		kong.UsageOnError(),
		kong.BindTo(ctx, (*context.Context)(nil)),
	)
	k.Bind(c.logger())
	if err := k.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "killfeed: %v\n", err)
		os.Exit(1)
	}
}

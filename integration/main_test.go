//go:build integration

package integration

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"
)

// kafka is the broker every test in the package uses; TestMain starts it
// before the tests and removes it after them.
var kafka *broker

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	// What these machines need (see .ci/test), unless the caller says
	// otherwise: the Ryuk reaper's image cannot be pulled, and a /.dockerenv
	// file makes testcontainers look for Docker at the wrong address.
	// Without Ryuk, this function removes the container itself.
	setDefaultEnv("TESTCONTAINERS_RYUK_DISABLED", "true")
	setDefaultEnv("TESTCONTAINERS_HOST_OVERRIDE", "localhost")

	ctx := context.Background()
	b, err := startBroker(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "integration: %v\n", err)
		return 1
	}
	kafka = b
	code := m.Run()

	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := b.terminate(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "integration: %v\n", err)
	}
	return code
}

func setDefaultEnv(name, value string) {
	if _, ok := os.LookupEnv(name); !ok {
		os.Setenv(name, value)
	}
}

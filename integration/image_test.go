//go:build integration

package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
)

// The Apache Kafka version the tests run, as the official image and as the
// local image kafkaimage/build.sh builds.
const (
	kafkaVersion  = "4.4.0"
	officialImage = "apache/kafka:" + kafkaVersion
	localImage    = "killfeed-kafka:" + kafkaVersion
)

const (
	// pullTimeout bounds one pull of the official image. Without a
	// registry the pull fails at once; the bound covers a slow registry.
	pullTimeout = 5 * time.Minute
	// buildTimeout bounds kafkaimage/build.sh: about 40 s with a warm
	// Maven cache, a few minutes when it downloads the jars.
	buildTimeout = 15 * time.Minute
)

// chooseImage returns the broker image and why it was chosen:
//
//  1. KILLFEED_KAFKA_IMAGE, if set (pulled if it is not present);
//  2. the official apache/kafka image, if present or pullable;
//  3. the local image, built by kafkaimage/build.sh (a quick no-op when an
//     image built from the same inputs exists).
func chooseImage(ctx context.Context, docker *testcontainers.DockerClient) (image, why string, err error) {
	if img := os.Getenv("KILLFEED_KAFKA_IMAGE"); img != "" {
		if err := ensureImage(ctx, docker, img); err != nil {
			return "", "", fmt.Errorf("KILLFEED_KAFKA_IMAGE=%s: %w (for the local image run integration/kafkaimage/build.sh)", img, err)
		}
		return img, "chosen by KILLFEED_KAFKA_IMAGE", nil
	}
	pullErr := ensureImage(ctx, docker, officialImage)
	if pullErr == nil {
		return officialImage, "the official Apache Kafka image", nil
	}
	fmt.Fprintf(os.Stderr, "integration: cannot use %s (%v); using the local image %s\n", officialImage, pullErr, localImage)
	if err := buildLocalImage(ctx); err != nil {
		return "", "", err
	}
	return localImage, fmt.Sprintf("the local image built by integration/kafkaimage/build.sh from the Apache Kafka %s jars on Maven Central\n(%s could not be pulled: %v)", kafkaVersion, officialImage, pullErr), nil
}

// ensureImage makes image present locally, pulling it once if it is not.
// It does not use testcontainers' pull, which retries for minutes on a
// machine that has no registry.
func ensureImage(ctx context.Context, docker *testcontainers.DockerClient, image string) error {
	if _, err := docker.ImageInspect(ctx, image); err == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, pullTimeout)
	defer cancel()
	resp, err := docker.ImagePull(ctx, image, client.ImagePullOptions{})
	if err != nil {
		return fmt.Errorf("pulling %s: %w", image, err)
	}
	defer resp.Close()
	if err := resp.Wait(ctx); err != nil {
		return fmt.Errorf("pulling %s: %w", image, err)
	}
	return nil
}

// buildLocalImage runs kafkaimage/build.sh, showing its progress.
func buildLocalImage(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, buildTimeout)
	defer cancel()
	// go test runs in the package directory, so the path is relative to it.
	cmd := exec.CommandContext(ctx, "bash", "kafkaimage/build.sh", "--kafka-version", kafkaVersion, "--image", localImage)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("building %s with kafkaimage/build.sh: %w", localImage, err)
	}
	return nil
}

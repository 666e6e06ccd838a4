// Command probe is the killfeed image's health check. The image has no shell
// and no curl, so Docker's HEALTHCHECK and compose run this instead: it GETs
// a URL and exits 0 on a 2xx answer, 1 otherwise.
//
//	probe [URL]
//
// The URL defaults to $KILLFEED_PROBE_URL, else http://127.0.0.1:8080/readyz
// (ready: Kafka answers and the service has caught up with the topic).
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	url := "http://127.0.0.1:8080/readyz"
	if v := os.Getenv("KILLFEED_PROBE_URL"); v != "" {
		url = v
	}
	if len(os.Args) > 1 {
		url = os.Args[1]
	}
	if err := probe(url); err != nil {
		fmt.Fprintf(os.Stderr, "probe %s: %v\n", url, err)
		os.Exit(1)
	}
}

func probe(url string) error {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s", resp.Status, body)
	}
	return nil
}

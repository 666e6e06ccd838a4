package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	killfeedv1 "github.com/killfeed/killfeed/proto/killfeed/v1"
	"github.com/killfeed/killfeed/proto/killfeed/v1/killfeedv1connect"
)

// selfSigned writes a certificate for 127.0.0.1 and its key, PEM encoded.
func selfSigned(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "killfeed test"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// With --tls-cert and --tls-key, serve speaks HTTPS: REST over HTTP/1.1 and
// gRPC over HTTP/2 negotiated by ALPN, on the one port; plain HTTP is refused.
func TestServeTLS(t *testing.T) {
	certFile, keyFile := selfSigned(t)
	var buf lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- runCLIWith(ctx, &buf, "serve", "--source", "none", "--data-dir", t.TempDir(),
			"--kafka-listen", "127.0.0.1:0", "--listen", "127.0.0.1:0", "--tls-cert", certFile, "--tls-key", keyFile)
	}()
	addr := waitForLog(t, &buf, regexp.MustCompile(`msg="killfeed serving" addr=(\S+)`), done)
	if !strings.HasPrefix(addr, "https://") {
		t.Fatalf("serving at %s, want https", addr)
	}
	tlsConf := &tls.Config{InsecureSkipVerify: true} // the test's own self-signed certificate

	h1 := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf}}
	resp, err := h1.Get(addr + "/api/killfeed?client_id=tls&systems=30000142")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 1 || !strings.Contains(string(body), `"events":[]`) {
		t.Fatalf("REST over TLS: %s %s %s", resp.Proto, resp.Status, body)
	}

	tr := &http.Transport{TLSClientConfig: tlsConf, ForceAttemptHTTP2: true}
	grpc := killfeedv1connect.NewKillfeedServiceClient(&http.Client{Transport: tr}, addr, connect.WithGRPC())
	if _, err := grpc.Poll(ctx, connect.NewRequest(&killfeedv1.PollRequest{ClientId: "tls", SystemIds: []int64{30000142}})); err != nil {
		t.Fatalf("gRPC over TLS: %v", err)
	}

	plain := strings.Replace(addr, "https://", "http://", 1)
	if resp, err := http.Get(plain + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plain HTTP was served on the TLS port")
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop within 20s")
	}
}

// serve exports its built-in source's progress with the service's metrics.
func TestServeExportsSourceMetrics(t *testing.T) {
	var buf lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- runCLIWith(ctx, &buf, "serve", "--source", "synthetic", "--count", "20", "--rate", "0",
			"--progress", "50ms", "--data-dir", t.TempDir(), "--kafka-listen", "127.0.0.1:0", "--listen", "127.0.0.1:0")
	}()
	addr := waitForLog(t, &buf, regexp.MustCompile(`msg="killfeed serving" addr=(\S+)`), done)
	want := []string{`killfeed_source_produced{source="synthetic"} 20`, `killfeed_events_ingested_total 20`}
	var body string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get(addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body = string(b)
		if strings.Contains(body, want[0]) && strings.Contains(body, want[1]) {
			cancel()
			<-done
			return
		}
	}
	t.Fatalf("metrics never showed %q:\n%s", want, body)
}

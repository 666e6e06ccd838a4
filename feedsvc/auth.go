package feedsvc

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
)

// MinKeyLength is the shortest API key accepted in a keys file.
const MinKeyLength = 16

// Keys holds API keys, each bound to a client_id prefix: a key can only
// read, commit, reset or delete clients whose id starts with its prefix. It
// is loaded from a file and can be reloaded while serving.
//
// The file has one key per line, "<key> <client_id prefix>", where the
// prefix "*" allows every client; blank lines and lines starting with # are
// ignored.
type Keys struct {
	path string

	mu      sync.RWMutex
	byHash  map[[32]byte]string // sha256(key) → prefix
	modTime time.Time
}

// LoadKeys reads a keys file.
func LoadKeys(path string) (*Keys, error) {
	k := &Keys{path: path}
	if err := k.Reload(); err != nil {
		return nil, err
	}
	return k, nil
}

// Len is the number of keys loaded.
func (k *Keys) Len() int {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return len(k.byHash)
}

// Reload reads the file again. On error the keys in use stay as they were.
func (k *Keys) Reload() error {
	st, err := os.Stat(k.path)
	if err != nil {
		return fmt.Errorf("reading API keys: %w", err)
	}
	b, err := os.ReadFile(k.path)
	if err != nil {
		return fmt.Errorf("reading API keys: %w", err)
	}
	byHash := map[[32]byte]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 {
			return fmt.Errorf("API keys file %s line %d: want \"<key> <client_id prefix>\"", k.path, n)
		}
		if len(fields[0]) < MinKeyLength {
			return fmt.Errorf("API keys file %s line %d: key is shorter than %d characters", k.path, n, MinKeyLength)
		}
		prefix := fields[1]
		if prefix == "*" {
			prefix = ""
		}
		byHash[sha256.Sum256([]byte(fields[0]))] = prefix
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading API keys: %w", err)
	}
	k.mu.Lock()
	k.byHash, k.modTime = byHash, st.ModTime()
	k.mu.Unlock()
	return nil
}

// Watch reloads the file whenever its modification time changes, checking
// every interval, until ctx ends.
func (k *Keys) Watch(ctx context.Context, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st, err := os.Stat(k.path)
		k.mu.RLock()
		changed := err == nil && !st.ModTime().Equal(k.modTime)
		k.mu.RUnlock()
		if !changed {
			continue
		}
		if err := k.Reload(); err != nil {
			log.Error("API keys not reloaded; keeping the previous ones", "err", err)
			continue
		}
		log.Info("API keys reloaded", "keys", k.Len())
	}
}

// prefixFor returns the prefix a key may use. The key is compared by its
// hash, so lookups take the same time whatever the key.
func (k *Keys) prefixFor(key string) (string, bool) {
	h := sha256.Sum256([]byte(key))
	k.mu.RLock()
	defer k.mu.RUnlock()
	p, ok := k.byHash[h]
	return p, ok
}

// callError is a refusal that is not about a field: authentication,
// permission or a limit. Handlers map its code to Connect and HTTP.
type callError struct {
	code connect.Code
	msg  string
}

func (e *callError) Error() string { return e.msg }

// httpStatus is the REST status for a refusal.
func (e *callError) httpStatus() int {
	switch e.code {
	case connect.CodeUnauthenticated:
		return http.StatusUnauthorized
	case connect.CodePermissionDenied:
		return http.StatusForbidden
	case connect.CodeResourceExhausted:
		return http.StatusTooManyRequests
	}
	return http.StatusBadRequest
}

// caller is who is calling: the API key (empty without auth) and the peer
// address, for limits.
type caller struct {
	key    string
	prefix string
	ip     string
}

// limitKey is what rate and stream limits count by: the key when auth is
// on, else the peer's IP.
func (c caller) limitKey() string {
	if c.key != "" {
		return "key:" + c.key
	}
	return "ip:" + c.ip
}

// authenticate identifies the caller from the Authorization header (a
// bearer API key) when auth is on, and applies the request rate limit.
func (s *Service) authenticate(h http.Header, addr string) (caller, error) {
	c := caller{ip: hostOf(addr)}
	if s.opts.Keys != nil {
		key, ok := strings.CutPrefix(h.Get("Authorization"), "Bearer ")
		if !ok || key == "" {
			return c, &callError{connect.CodeUnauthenticated, "an API key is required: send Authorization: Bearer <key>"}
		}
		prefix, ok := s.opts.Keys.prefixFor(key)
		if !ok {
			return c, &callError{connect.CodeUnauthenticated, "unknown API key"}
		}
		c.key, c.prefix = key, prefix
	}
	if err := s.limits.allow(c); err != nil {
		s.metrics.rejectedLimit.WithLabelValues("requests_per_second").Inc()
		return c, err
	}
	return c, nil
}

// authorize checks that the caller's key may act for client.
func (c caller) authorize(client string) error {
	if c.key != "" && !strings.HasPrefix(client, c.prefix) {
		return &callError{connect.CodePermissionDenied, fmt.Sprintf("client_id: this API key may only use client ids starting with %q", c.prefix)}
	}
	return nil
}

// hostOf returns the host of a host:port address.
func hostOf(addr string) string {
	if i := strings.LastIndexByte(addr, ':'); i >= 0 {
		return strings.Trim(addr[:i], "[]")
	}
	return addr
}

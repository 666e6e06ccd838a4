package r2z2test

import (
	"bytes"
	"crypto/sha1"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// sample is a real-shaped R2Z2 file: the ESI killmail under "esi", zKillboard's
// zkb block, and the package fields (hash, uploaded_at, sequence_id).
//
//go:embed testdata/r2z2-95367853.json
var sample []byte

// Sample returns the recorded-shape R2Z2 file the server's killmails are
// made from.
func Sample() []byte { return bytes.Clone(sample) }

// FirstSequence is the sequence of the first file a Server publishes: a
// value in the range R2Z2 uses, so logs look familiar.
const FirstSequence = 95367853

// Response is a scripted answer.
type Response struct {
	// Status is the HTTP status. 0 with Drop set closes the connection
	// without an answer.
	Status int
	// RetryAfter, if set, is sent as the Retry-After header.
	RetryAfter string
	// Body is sent as the body.
	Body []byte
	// Delay is waited before answering.
	Delay time.Duration
	// Drop closes the connection without answering, as a network failure
	// would.
	Drop bool
}

// Request is a request the server received.
type Request struct {
	Path      string
	UserAgent string
	At        time.Time
}

// Server is a fake R2Z2. Its methods are safe for concurrent use.
type Server struct {
	// URL is the base URL to give the ingester, without a trailing slash.
	URL string

	srv *httptest.Server

	mu       sync.Mutex
	next     int64            // the sequence the next Publish gets
	files    map[int64][]byte // published files; holes are absent
	expired  int64            // files below this are gone
	lag      int64            // sequence.json points this far below the newest file
	scripts  map[string][]Response
	latency  time.Duration // added to every n-th answer
	every    int
	requests []Request
	onReq    func(path string)
}

// New starts a server with no files; the first published gets
// FirstSequence. It is closed when the test ends.
func New(tb testing.TB) *Server {
	tb.Helper()
	s := &Server{next: FirstSequence, files: map[int64][]byte{}, scripts: map[string][]Response{}}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	tb.Cleanup(s.srv.Close)
	s.URL = s.srv.URL
	return s
}

// Close stops the server; later requests fail as if R2Z2 were unreachable.
func (s *Server) Close() { s.srv.CloseClientConnections(); s.srv.Close() }

// Publish publishes body as the next sequence and returns the sequence.
func (s *Server) Publish(body []byte) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	seq := s.next
	s.next++
	s.files[seq] = bytes.Clone(body)
	return seq
}

// PublishKillmail publishes a killmail made from the sample file, with the
// given killmail id and solar system, and returns its sequence.
func (s *Server) PublishKillmail(id, system int64) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	seq := s.next
	s.next++
	s.files[seq] = File(id, system, seq, 0)
	return seq
}

// Republish publishes the killmail of an earlier sequence again, as R2Z2
// does when zKillboard updates a killmail: at a new sequence, with
// sequence_updated set. It returns the new sequence.
func (s *Server) Republish(seq int64) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.files[seq]
	if !ok {
		panic(fmt.Sprintf("r2z2test: Republish(%d): no such file", seq))
	}
	var f map[string]any
	dec := json.NewDecoder(bytes.NewReader(old))
	dec.UseNumber()
	if err := dec.Decode(&f); err != nil {
		panic(fmt.Sprintf("r2z2test: Republish(%d): %v", seq, err))
	}
	n := s.next
	s.next++
	f["sequence_id"] = n
	f["sequence_updated"] = time.Now().Unix()
	s.files[n] = mustMarshal(f)
	return n
}

// Hole skips a sequence: it is never published, and the next Publish gets
// the one after. It returns the skipped sequence.
func (s *Server) Hole() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	seq := s.next
	s.next++
	return seq
}

// Expire removes every file below seq, as R2Z2's retention does.
func (s *Server) Expire(seq int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expired = seq
}

// SetLag makes sequence.json point lag sequences below the newest file,
// as the real one lags.
func (s *Server) SetLag(lag int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lag = lag
}

// Head returns the newest published sequence (FirstSequence-1 before the
// first).
func (s *Server) Head() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.next - 1
}

// File returns the published body of seq, or nil.
func (s *Server) File(seq int64) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.files[seq])
}

// Script queues answers for path ("/ephemeral/sequence.json",
// "/ephemeral/N.json", or "" for any path): the next requests for it get
// them, in order, before the server answers normally again.
func (s *Server) Script(path string, rs ...Response) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.scripts[path] = append(s.scripts[path], rs...)
}

// SetLatency delays every n-th answer by d, as a slow server would; n <= 0
// turns it off.
func (s *Server) SetLatency(d time.Duration, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency, s.every = d, n
}

// OnRequest calls fn with the path of every request, before it is answered.
func (s *Server) OnRequest(fn func(path string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onReq = fn
}

// Requests returns the requests received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests = append(s.requests, Request{Path: r.URL.Path, UserAgent: r.UserAgent(), At: time.Now()})
	n := len(s.requests)
	onReq := s.onReq
	var script *Response
	for _, key := range []string{r.URL.Path, ""} {
		if q := s.scripts[key]; len(q) > 0 {
			script, s.scripts[key] = &q[0], q[1:]
			break
		}
	}
	var delay time.Duration
	if s.every > 0 && n%s.every == 0 {
		delay = s.latency
	}
	s.mu.Unlock()

	if onReq != nil {
		onReq(r.URL.Path)
	}
	if script != nil {
		delay += script.Delay
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	if r.Method != http.MethodGet {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if script != nil {
		if script.Drop {
			if hj, ok := w.(http.Hijacker); ok {
				if c, _, err := hj.Hijack(); err == nil {
					c.Close()
					return
				}
			}
			panic(http.ErrAbortHandler)
		}
		if script.RetryAfter != "" {
			w.Header().Set("Retry-After", script.RetryAfter)
		}
		w.WriteHeader(script.Status)
		_, _ = w.Write(script.Body)
		return
	}

	name, ok := strings.CutPrefix(r.URL.Path, "/ephemeral/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	s.mu.Lock()
	var body []byte
	if name == "sequence.json" {
		body = fmt.Appendf(nil, `{"sequence":%d}`, max(s.next-1-s.lag, s.expired, FirstSequence))
	} else if seq, err := strconv.ParseInt(strings.TrimSuffix(name, ".json"), 10, 64); err == nil && strings.HasSuffix(name, ".json") && seq >= s.expired {
		body = s.files[seq]
	}
	s.mu.Unlock()
	if body == nil {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

// File returns an R2Z2 file made from the sample: killmail id, solar system
// and sequence replaced, the hashes derived from the id, and, when updated
// is not zero, sequence_updated set to it.
func File(id, system, seq, updated int64) []byte {
	var f map[string]any
	dec := json.NewDecoder(bytes.NewReader(sample))
	dec.UseNumber()
	if err := dec.Decode(&f); err != nil {
		panic(fmt.Sprintf("r2z2test: the sample is not JSON: %v", err))
	}
	sum := sha1.Sum(strconv.AppendInt(nil, id, 10))
	hash := hex.EncodeToString(sum[:])
	esi := f["esi"].(map[string]any)
	zkb := f["zkb"].(map[string]any)
	f["killmail_id"], esi["killmail_id"] = id, id
	esi["solar_system_id"] = system
	f["hash"], zkb["hash"] = hash, hash
	zkb["href"] = fmt.Sprintf("https://esi.evetech.net/v1/killmails/%d/%s/", id, hash)
	f["sequence_id"] = seq
	if updated != 0 {
		f["sequence_updated"] = updated
	}
	return mustMarshal(f)
}

func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("r2z2test: %v", err))
	}
	return b
}

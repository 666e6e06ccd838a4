package feedsvc

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// get performs a REST request and returns status and body.
func (e *testEnv) get(path string) (int, []byte, http.Header) {
	e.t.Helper()
	resp, err := http.Get(e.url + path)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, b, resp.Header
}

// restEvent is the seeds' JSON shape, with the killmail kept raw.
type restEvent struct {
	EventID  int64           `json:"event_id"`
	SystemID int64           `json:"system_id"`
	Killmail json.RawMessage `json:"killmail"`
}

func TestRESTPollReturnsSeedShapeWithKillmailAsIngested(t *testing.T) {
	e := newTestEnv(t, Options{})
	km1 := e.produce(jita)
	km2 := e.produce(amarr)

	status, body, hdr := e.get("/api/killfeed?client_id=foo&systems[]=30000142&systems[]=30002187")
	if status != http.StatusOK {
		t.Fatalf("status %d: %s", status, body)
	}
	if ct := hdr.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var got struct {
		Events []restEvent `json:"events"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("decoding %s: %v", body, err)
	}
	if len(got.Events) != 2 {
		t.Fatalf("got %d events, want 2: %s", len(got.Events), body)
	}
	for i, want := range [][]byte{km1, km2} {
		// Byte for byte: same names, numbers as numbers, nothing re-encoded.
		if !bytes.Equal(got.Events[i].Killmail, want) {
			t.Errorf("event %d killmail\n got %s\nwant %s", i, got.Events[i].Killmail, want)
		}
	}
	if got.Events[0].SystemID != jita || got.Events[1].SystemID != amarr {
		t.Errorf("system ids %d, %d", got.Events[0].SystemID, got.Events[1].SystemID)
	}
	// event_id and system_id are JSON numbers, not strings.
	if !bytes.Contains(body, []byte(`"system_id":30000142`)) {
		t.Errorf("system_id is not a JSON number: %s", body)
	}

	status, body, _ = e.get("/api/killfeed?client_id=foo&systems[]=30000142&systems[]=30002187")
	if status != http.StatusOK || !bytes.Contains(body, []byte(`"events":[]`)) {
		t.Fatalf("second poll: status %d body %s, want 200 with no events", status, body)
	}
}

func TestRESTAcceptsEverySystemsSpelling(t *testing.T) {
	for _, q := range []string{
		"systems[]=30000142&systems[]=30002187",
		"systems=30000142,30002187",
		"systems=30000142&systems=30002187",
		"systems=30000142&systems[]=30002187",
	} {
		t.Run(q, func(t *testing.T) {
			e := newTestEnv(t, Options{})
			e.produce(jita)
			e.produce(amarr)
			status, body, _ := e.get("/api/killfeed?client_id=c&" + q)
			var got struct{ Events []restEvent }
			if err := json.Unmarshal(body, &got); status != 200 || err != nil || len(got.Events) != 2 {
				t.Fatalf("status %d, %d events (%v): %s", status, len(got.Events), err, body)
			}
		})
	}
}

func TestRESTNextReturnsOneEventThen204(t *testing.T) {
	e := newTestEnv(t, Options{})
	km1 := e.produce(jita)
	km2 := e.produce(jita)
	for _, want := range [][]byte{km1, km2} {
		status, body, _ := e.get("/api/killfeed/next?client_id=foo&systems[]=30000142")
		if status != http.StatusOK {
			t.Fatalf("status %d: %s", status, body)
		}
		var ev restEvent
		if err := json.Unmarshal(body, &ev); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(ev.Killmail, want) || ev.SystemID != jita || ev.EventID == 0 {
			t.Fatalf("got %s, want killmail %s", body, want)
		}
	}
	status, body, _ := e.get("/api/killfeed/next?client_id=foo&systems[]=30000142")
	if status != http.StatusNoContent || len(body) != 0 {
		t.Fatalf("status %d body %q, want 204 and no body", status, body)
	}
}

// Every bad request is refused naming the field, and changes nothing: the
// client's positions stay as they were, over REST and Connect alike.
func TestBadRequestsAreRefusedNamingTheFieldAndChangeNothing(t *testing.T) {
	e := newTestEnv(t, Options{MaxSystemsPerRequest: 5})
	e.produce(jita)
	manySystems := "systems=1,2,3,4,5,6"
	long := strings.Repeat("x", 300)
	cases := []struct {
		name, query, field string
	}{
		{"no client_id", "systems=30000142", "client_id"},
		{"empty client_id", "client_id=&systems=30000142", "client_id"},
		{"300-char client_id", "client_id=" + long + "&systems=30000142", "client_id"},
		{"control char in client_id", "client_id=a%00b&systems=30000142", "client_id"},
		{"no systems", "client_id=c", "systems"},
		{"non-numeric system", "client_id=c&systems[]=jita", "systems"},
		{"negative system", "client_id=c&systems=-30000142", "systems"},
		{"zero system", "client_id=c&systems=0", "systems"},
		{"duplicate system", "client_id=c&systems=30000142,30000142", "systems"},
		{"too many systems", "client_id=c&" + manySystems, "systems"},
		{"limit too large", "client_id=c&systems=30000142&limit=10001", "limit"},
		{"negative limit", "client_id=c&systems=30000142&limit=-1", "limit"},
		{"non-numeric limit", "client_id=c&systems=30000142&limit=ten", "limit"},
		{"bad commit mode", "client_id=c&systems=30000142&commit_mode=sometimes", "commit_mode"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, route := range []string{"/api/killfeed?", "/api/killfeed/next?"} {
				if route == "/api/killfeed/next?" && tc.field == "limit" {
					continue // Next takes no limit
				}
				status, body, _ := e.get(route + tc.query)
				var er struct{ Code, Message string }
				if err := json.Unmarshal(body, &er); err != nil || status != http.StatusBadRequest || er.Code != "invalid_argument" {
					t.Fatalf("%s: status %d body %s, want 400 invalid_argument", route, status, body)
				}
				if !strings.HasPrefix(er.Message, tc.field+":") {
					t.Errorf("%s: message %q does not name field %q", route, er.Message, tc.field)
				}
			}
		})
	}
	if ps := e.store.Positions("c"); len(ps) != 0 {
		t.Fatalf("bad requests changed state: positions %v", ps)
	}
	// The one good event is still there for the client.
	if status, body, _ := e.get("/api/killfeed?client_id=c&systems=30000142"); status != 200 || !bytes.Contains(body, []byte(`"event_id"`)) {
		t.Fatalf("after bad requests: %d %s", status, body)
	}
}

// Connect's JSON (what curl and browsers get) carries the killmail byte for
// byte as stored, like REST, with 64-bit integers as numbers.
func TestConnectJSONKillmailIsExactlyAsIngested(t *testing.T) {
	e := newTestEnv(t, Options{})
	km := e.produce(jita)
	resp, err := http.Post(e.url+"/killfeed.v1.KillfeedService/Poll", "application/json",
		strings.NewReader(`{"client_id":"cj","system_ids":[30000142]}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var got struct {
		Events []restEvent `json:"events"`
	}
	if err := json.Unmarshal(body, &got); err != nil || resp.StatusCode != 200 || len(got.Events) != 1 {
		t.Fatalf("status %d, %v: %s", resp.StatusCode, err, body)
	}
	if !bytes.Equal(got.Events[0].Killmail, km) {
		t.Errorf("killmail\n got %s\nwant %s", got.Events[0].Killmail, km)
	}
	if !bytes.Contains(body, []byte(`"system_id":30000142`)) || !bytes.Contains(body, []byte(`"event_id":`)) {
		t.Errorf("ids are not JSON numbers with snake_case names: %s", body)
	}
}

// HEAD must not consume events: its response has no body to carry them.
func TestRESTHeadConsumesNothing(t *testing.T) {
	e := newTestEnv(t, Options{})
	e.produce(jita)
	req, _ := http.NewRequest(http.MethodHead, e.url+"/api/killfeed/next?client_id=h&systems=30000142", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("HEAD: %d, want 405", resp.StatusCode)
	}
	if status, _, _ := e.get("/api/killfeed/next?client_id=h&systems=30000142"); status != http.StatusOK {
		t.Fatalf("GET after HEAD: %d, want 200 with the event HEAD did not take", status)
	}
}

package bench

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"sync"
)

// SeedStore is a Go port of the seeds' WandererKills.KillmailStore, the
// reference killfeed is measured against. It keeps the seeds' algorithm:
//
//   - events live in an ordered set of {event_id, system_id, killmail},
//     event ids from one global counter (ETS :killmail_events, ordered_set);
//   - fetch_for_client visits every row (:ets.foldl/3), keeps those whose
//     system is in the request's list and whose id is above the client's
//     offset for that system, sorts them by id, and merges the highest id
//     per system into the client's offsets map (ETS :client_offsets);
//   - one GenServer serialises every call (here a mutex).
//
// The port is generous to the seeds: a Go slice scan is far cheaper than
// :ets.foldl, which copies every row, killmail included, into the calling
// process's heap on every fetch. Ratios against it understate killfeed's
// advantage.
type SeedStore struct {
	mu      sync.Mutex
	seq     int64
	events  []SeedEvent // ascending by EventID: the ordered_set
	offsets map[string]map[int64]int64
}

// SeedEvent is one row of :killmail_events. Killmail is the decoded map the
// seeds' parser hands to insert_event.
type SeedEvent struct {
	EventID  int64          `json:"event_id"`
	SystemID int64          `json:"system_id"`
	Killmail map[string]any `json:"killmail"`
}

// NewSeedStore returns an empty store, as init/1 creates it.
func NewSeedStore() *SeedStore {
	return &SeedStore{offsets: map[string]map[int64]int64{}}
}

// Insert is insert_event/2: the next id from the counter, one row.
func (s *SeedStore) Insert(systemID int64, killmail map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	// ids only grow, so appending keeps the ordered_set's order.
	s.events = append(s.events, SeedEvent{EventID: s.seq, SystemID: systemID, Killmail: killmail})
}

// FetchForClient is fetch_for_client/2.
func (s *SeedStore) FetchForClient(clientID string, systemIDs []int64) []SeedEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	offsets := s.offsets[clientID] // nil reads as %{}
	var acc []SeedEvent
	for _, e := range s.events { // :ets.foldl over every row
		if slices.Contains(systemIDs, e.SystemID) && e.EventID > offsets[e.SystemID] {
			acc = append(acc, e)
		}
	}
	slices.SortFunc(acc, func(a, b SeedEvent) int { return cmp.Compare(a.EventID, b.EventID) })
	updated := maps.Clone(offsets)
	if updated == nil {
		updated = map[int64]int64{}
	}
	for _, e := range acc {
		updated[e.SystemID] = max(updated[e.SystemID], e.EventID)
	}
	s.offsets[clientID] = updated
	return acc
}

// ForgetClient drops a client's offsets, so its next fetch starts over.
func (s *SeedStore) ForgetClient(clientID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.offsets, clientID)
}

// Handler serves the seeds' poll route, GET
// /api/killfeed?client_id=ID&systems[]=N&systems[]=M, answering
// {"events":[{"event_id":..,"system_id":..,"killmail":{..}},..]} with the
// killmails encoded per request, as the seeds' Plug controller does.
func (s *SeedStore) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/killfeed", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		client := q.Get("client_id")
		var systems []int64
		for _, v := range q["systems[]"] {
			id, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				http.Error(w, fmt.Sprintf("bad system id %q", v), http.StatusBadRequest)
				return
			}
			systems = append(systems, id)
		}
		if client == "" || len(systems) == 0 {
			http.Error(w, "client_id and systems[] are required", http.StatusBadRequest)
			return
		}
		events := s.FetchForClient(client, systems)
		if events == nil {
			events = []SeedEvent{}
		}
		body, err := json.Marshal(map[string]any{"events": events})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
	return mux
}

package killmail_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/killfeed/killfeed/internal/killmail"
)

// FuzzNormalize checks the properties the producer and every consumer rely
// on, whatever a source sends: Normalize never panics, and what it accepts is
// valid JSON with positive ids that normalises to itself.
func FuzzNormalize(f *testing.F) {
	for _, s := range []string{
		`{"killmail_id":1,"solar_system_id":30000142}`,
		`{"killID":1,"system_id":31000001,"zkb":{"hash":"x","totalValue":1.5e9}}`,
		`{"killID":7,"killmail":{"killmail_id":7,"killmail_time":"2025-06-01T12:34:56Z","solar_system_id":30002187,"victim":{"items":[]}},"zkb":{"npc":true}}`,
		`{"killmail_id":9,"hash":"h","esi":{"killmail_id":9,"solar_system_id":30002659,"attackers":[{"final_blow":true}]},"zkb":{"labels":["pvp"]},"sequence_id":3,"uploaded_at":1}`,
		`{"killmail_id":5,"solar_system_id":6,"esi":{"killmail_id":9}}`,
		`{"killmail\u005fid":7,"solar_system_id":3,"k\"e\\y":"v\u2028"}`,
		" \n{ \"killmail_id\" : 1 , \"solar_system_id\" : 2 , \"victim\" : { \"x\" : [ 1 , 2 ] } }\n",
		`{"killmail_id":1,"solar_system_id":2,"solar_system_id":3}`,
		`{"killmail_id":1e3,"solar_system_id":2}`,
		`{"killmail_id":1,"solar_system_id":2,"zkb":null}`,
		`[]`, `null`, `"x"`, ``, `{`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		km, err := killmail.Normalize(in)
		if err != nil {
			var rej *killmail.RejectError
			if !errors.As(err, &rej) || rej.Reason == "" || rej.Msg == "" {
				t.Fatalf("error %v (%T) is not a *RejectError with a reason and message", err, err)
			}
			return
		}
		if km.ID <= 0 || km.SystemID <= 0 {
			t.Fatalf("accepted ids ID=%d SystemID=%d", km.ID, km.SystemID)
		}
		if !json.Valid(km.JSON) {
			t.Fatalf("output is not valid JSON: %s", km.JSON)
		}
		var ids struct {
			ID  json.Number `json:"killmail_id"`
			Sys json.Number `json:"solar_system_id"`
		}
		if err := json.Unmarshal(km.JSON, &ids); err != nil {
			t.Fatalf("output %s: %v", km.JSON, err)
		}
		if id, _ := ids.ID.Int64(); id != km.ID {
			t.Fatalf("output killmail_id %s, Killmail.ID %d", ids.ID, km.ID)
		}
		if sys, _ := ids.Sys.Int64(); sys != km.SystemID {
			t.Fatalf("output solar_system_id %s, Killmail.SystemID %d", ids.Sys, km.SystemID)
		}
		again, err := killmail.Normalize(km.JSON)
		if err != nil {
			t.Fatalf("normalising the output %s: %v", km.JSON, err)
		}
		if !bytes.Equal(again.JSON, km.JSON) || again.ID != km.ID || again.SystemID != km.SystemID || !again.Time.Equal(km.Time) {
			t.Fatalf("not idempotent:\n once %s\ntwice %s", km.JSON, again.JSON)
		}
	})
}

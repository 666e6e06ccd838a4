package killmail_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/killfeed/killfeed/internal/killmail"
)

// esiBody is an ESI killmail without its ids, so tests can wrap it in every
// shape sources use. The numbers are chosen to break float64 decoding: an id
// above 2^53 and an ISK value with more digits than a float64 keeps.
const esiBody = `"attackers":[{"character_id":2112625428,"corporation_id":98356193,"damage_done":2850,"final_blow":true,"security_status":-0.9,"ship_type_id":17738,"weapon_type_id":2929}],` +
	`"killmail_time":"2025-06-01T12:34:56Z",` +
	`"victim":{"character_id":9007199254740993,"corporation_id":1000125,"damage_taken":2850,"items":[{"flag":5,"item_type_id":34,"quantity_dropped":1000,"singleton":0}],"position":{"x":-107303869414.01,"y":-18744975147.18,"z":436489051287.3},"ship_type_id":587}`

const zkb = `{"locationID":40009081,"hash":"aa8b1b3ffd1b43ed7b0d24d8f3e1de5bc5f1a2b3","fittedValue":10000.01,"droppedValue":1234.123456789012345678,"destroyedValue":8765.88,"totalValue":10000.003456789012345678,"points":1,"npc":false,"solo":true,"awox":false,"labels":["pvp","loc:highsec"],"href":"https://esi.evetech.net/v1/killmails/128000001/aa8b1b3ffd1b43ed7b0d24d8f3e1de5bc5f1a2b3/"}`

// want is the normalised form of every accepted shape below.
const want = `{"attackers":[{"character_id":2112625428,"corporation_id":98356193,"damage_done":2850,"final_blow":true,"security_status":-0.9,"ship_type_id":17738,"weapon_type_id":2929}],` +
	`"killmail_id":128000001,"killmail_time":"2025-06-01T12:34:56Z","solar_system_id":30000142,` +
	`"victim":{"character_id":9007199254740993,"corporation_id":1000125,"damage_taken":2850,"items":[{"flag":5,"item_type_id":34,"quantity_dropped":1000,"singleton":0}],"position":{"x":-107303869414.01,"y":-18744975147.18,"z":436489051287.3},"ship_type_id":587},` +
	`"zkb":` + zkb + `}`

func esi(idField, sysField string) string {
	// ESI sorts its fields; keep that order so the expected output is one
	// string for every shape.
	parts := strings.SplitN(esiBody, `"killmail_time"`, 2)
	s := "{" + parts[0]
	if idField != "" {
		s += idField + ","
	}
	s += `"killmail_time"` + strings.Replace(parts[1], `,"victim"`, ","+sysField+`,"victim"`, 1)
	return s + "}"
}

func TestNormalizeShapes(t *testing.T) {
	flat := esi(`"killmail_id":128000001`, `"solar_system_id":30000142`)
	withZkb := strings.TrimSuffix(flat, "}") + `,"zkb":` + zkb + `}`
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"ESI with zkb", withZkb, want},
		{"ESI with zkb, pretty printed", indent(t, withZkb), want},
		{"older package: system_id", strings.Replace(withZkb, `"solar_system_id"`, `"system_id"`, 1), want},
		{"older package: killID", strings.Replace(withZkb, `"killmail_id"`, `"killID"`, 1), want},
		{"older package: killID and system_id",
			strings.Replace(strings.Replace(withZkb, `"solar_system_id"`, `"system_id"`, 1), `"killmail_id"`, `"killID"`, 1), want},
		{"both spellings, agreeing", strings.Replace(withZkb, `"killmail_id":128000001`, `"killmail_id":128000001,"killID":128000001`, 1), want},
		{"zKillboard package", `{"killID":128000001,"killmail":` + flat + `,"zkb":` + zkb + `}`, want},
		{"zKillboard package, inner killmail without id",
			`{"killID":128000001,"killmail":` + esi("", `"solar_system_id":30000142`) + `,"zkb":` + zkb + `}`,
			`{"killmail_id":128000001,` + strings.Replace(want, `"killmail_id":128000001,`, "", 1)[1:]},
		{"R2Z2 file", `{"killmail_id":128000001,"hash":"aa8b1b3ffd1b43ed7b0d24d8f3e1de5bc5f1a2b3","esi":` + flat +
			`,"zkb":` + zkb + `,"uploaded_at":1748781296,"sequence_id":96117744}`, want},
		{"R2Z2 file, zkb first", `{"zkb":` + zkb + `,"sequence_id":96117744,"esi":` + flat + `,"killmail_id":128000001}`, want},
		{"ESI without zkb", flat, strings.Replace(want, `,"zkb":`+zkb, "", 1)},
		{"zkb null is dropped", strings.TrimSuffix(flat, "}") + `,"zkb":null}`, strings.Replace(want, `,"zkb":`+zkb, "", 1)},
		{"moon_id and war_id kept", `{"killmail_id":1,"moon_id":40009082,"solar_system_id":2,"war_id":999999999999}`,
			`{"killmail_id":1,"moon_id":40009082,"solar_system_id":2,"war_id":999999999999}`},
		{"only ids", `{"killID":7,"system_id":31000005}`, `{"killmail_id":7,"solar_system_id":31000005}`},
		{"escaped key names count as the field", `{"killmail\u005fid":7,"solar_system_id":31000005,"n\u00e4me":"x"}`,
			`{"killmail_id":7,"solar_system_id":31000005,"n\u00e4me":"x"}`},
		{"an object with its own system id is not a package",
			`{"killmail_id":5,"solar_system_id":6,"esi":{"killmail_id":9}}`, `{"killmail_id":5,"solar_system_id":6,"esi":{"killmail_id":9}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			km, err := killmail.Normalize([]byte(tt.in))
			if err != nil {
				t.Fatalf("Normalize: %v", err)
			}
			if string(km.JSON) != tt.want {
				t.Errorf("JSON\n got %s\nwant %s", km.JSON, tt.want)
			}
			var wantKM struct {
				ID  int64 `json:"killmail_id"`
				Sys int64 `json:"solar_system_id"`
			}
			if err := json.Unmarshal([]byte(tt.want), &wantKM); err != nil {
				t.Fatal(err)
			}
			if km.ID != wantKM.ID || km.SystemID != wantKM.Sys {
				t.Errorf("ID, SystemID = %d, %d; want %d, %d", km.ID, km.SystemID, wantKM.ID, wantKM.Sys)
			}
			if strings.Contains(tt.want, "killmail_time") {
				if wantTime := time.Date(2025, 6, 1, 12, 34, 56, 0, time.UTC); !km.Time.Equal(wantTime) {
					t.Errorf("Time = %v, want %v", km.Time, wantTime)
				}
			} else if !km.Time.IsZero() {
				t.Errorf("Time = %v, want zero for a killmail without killmail_time", km.Time)
			}
			again, err := killmail.Normalize(km.JSON)
			if err != nil || !bytes.Equal(again.JSON, km.JSON) {
				t.Errorf("normalising the output again: %v\n got %s\nwant %s", err, again.JSON, km.JSON)
			}
		})
	}
}

func indent(t *testing.T, s string) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Indent(&b, []byte(s), "", "  "); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestNormalizeRejects(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		reason  killmail.Reason
		message string // a substring of the error
	}{
		{"empty", ``, killmail.ReasonInvalidJSON, "invalid JSON"},
		{"truncated", `{"killmail_id":1,"solar_system_id":`, killmail.ReasonInvalidJSON, "invalid JSON"},
		{"two values", `{"killmail_id":1,"solar_system_id":2}{}`, killmail.ReasonInvalidJSON, "invalid JSON"},
		{"not UTF-8", "{\"killmail_id\":1,\"solar_system_id\":2,\"x\":\"\xff\"}", killmail.ReasonInvalidJSON, "UTF-8"},
		{"array", `[{"killmail_id":1,"solar_system_id":2}]`, killmail.ReasonNotObject, "not a JSON object"},
		{"number", `42`, killmail.ReasonNotObject, "not a JSON object"},
		{"null", `null`, killmail.ReasonNotObject, "not a JSON object"},
		{"no system id", `{"killmail_id":1,"victim":{}}`, killmail.ReasonNoSystemID, "killmail has no solar_system_id or system_id"},
		{"no killmail id", `{"solar_system_id":30000142}`, killmail.ReasonNoKillmailID, "killmail has no killmail_id or killID"},
		{"system id null", `{"killmail_id":1,"solar_system_id":null}`, killmail.ReasonBadSystemID, "solar_system_id is not a positive integer"},
		{"system id zero", `{"killmail_id":1,"solar_system_id":0}`, killmail.ReasonBadSystemID, "solar_system_id is not a positive integer"},
		{"system id negative", `{"killmail_id":1,"system_id":-30000142}`, killmail.ReasonBadSystemID, "system_id is not a positive integer"},
		{"system id string", `{"killmail_id":1,"solar_system_id":"30000142"}`, killmail.ReasonBadSystemID, "not a positive integer"},
		{"system id float", `{"killmail_id":1,"solar_system_id":30000142.0}`, killmail.ReasonBadSystemID, "not a positive integer"},
		{"killmail id exponent", `{"killmail_id":1e8,"solar_system_id":30000142}`, killmail.ReasonBadKillmailID, "killmail_id is not a positive integer"},
		{"killmail id too big", `{"killmail_id":9223372036854775808,"solar_system_id":30000142}`, killmail.ReasonBadKillmailID, "killmail_id is not a positive integer"},
		{"killID zero", `{"killID":0,"solar_system_id":30000142}`, killmail.ReasonBadKillmailID, "killID is not a positive integer"},
		{"killID and killmail_id disagree", `{"killID":5,"killmail_id":6,"solar_system_id":30000142}`, killmail.ReasonIDMismatch, "killmail_id 6 does not match killID 5"},
		{"system ids disagree", `{"killmail_id":5,"solar_system_id":30000142,"system_id":30000144}`, killmail.ReasonIDMismatch, "does not match"},
		{"package id disagrees", `{"killID":5,"killmail":{"killmail_id":6,"solar_system_id":30000142}}`, killmail.ReasonIDMismatch, "killmail.killmail_id 6 does not match killID 5"},
		{"R2Z2 id disagrees", `{"killmail_id":5,"esi":{"killmail_id":6,"solar_system_id":30000142}}`, killmail.ReasonIDMismatch, "esi.killmail_id 6 does not match killmail_id 5"},
		{"R2Z2 without esi killmail", `{"killmail_id":5,"esi":null,"zkb":{}}`, killmail.ReasonNotObject, "esi is not a JSON object"},
		{"package killmail is a string", `{"killID":5,"killmail":"{}"}`, killmail.ReasonNotObject, "killmail is not a JSON object"},
		{"R2Z2 without system id", `{"killmail_id":5,"esi":{"killmail_id":5}}`, killmail.ReasonNoSystemID, "no solar_system_id or system_id"},
		{"package inner bad system id", `{"killID":5,"killmail":{"solar_system_id":-1}}`, killmail.ReasonBadSystemID, "killmail.solar_system_id is not a positive integer"},
		{"duplicate key", `{"killmail_id":1,"solar_system_id":2,"solar_system_id":3}`, killmail.ReasonDuplicateKey, `field "solar_system_id" twice`},
		{"duplicate key via escape", `{"killmail_id":1,"solar_system_id":2,"solar_system_\u0069d":3}`, killmail.ReasonDuplicateKey, "twice"},
		{"duplicate key in another case", `{"killmail_id":1,"solar_system_id":2,"Victim":{},"victim":{}}`, killmail.ReasonDuplicateKey, "twice"},
		{"id field in another case", `{"killmail_id":1,"system_id":1,"solAr_SYstem_id":0}`, killmail.ReasonDuplicateKey, `"solAr_SYstem_id", which case-insensitive decoders read as "solar_system_id"`},
		{"id field with a Kelvin sign", `{"\u212Aillmail_id":1,"killmail_id":1,"solar_system_id":2}`, killmail.ReasonDuplicateKey, "case-insensitive decoders"},
		{"zkb is a string", `{"killmail_id":1,"solar_system_id":2,"zkb":"x"}`, killmail.ReasonBadZkb, "zkb is not a JSON object"},
		{"killmail_time not a time", `{"killmail_id":1,"solar_system_id":2,"killmail_time":"yesterday"}`, killmail.ReasonBadTime, "killmail_time is not an RFC 3339 time"},
		{"killmail_time a number", `{"killmail_id":1,"solar_system_id":2,"killmail_time":1748781296}`, killmail.ReasonBadTime, "killmail_time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			km, err := killmail.Normalize([]byte(tt.in))
			if err == nil {
				t.Fatalf("Normalize accepted %s as %s", tt.in, km.JSON)
			}
			var rej *killmail.RejectError
			if !errors.As(err, &rej) {
				t.Fatalf("error %v (%T) is not a *RejectError", err, err)
			}
			if rej.Reason != tt.reason || killmail.ReasonOf(err) != tt.reason {
				t.Errorf("reason = %q, want %q (error %q)", rej.Reason, tt.reason, err)
			}
			if !strings.Contains(err.Error(), tt.message) {
				t.Errorf("error %q does not mention %q", err, tt.message)
			}
		})
	}
}

// A source could send a huge object with distinct field names; checking them
// for confusable duplicates must stay linear, or one line stalls the
// producer.
func TestNormalizeManyFields(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"killmail_id":1,"solar_system_id":2`)
	for i := range 200_000 {
		fmt.Fprintf(&b, `,"f%d":%d`, i, i)
	}
	b.WriteString("}")
	start := time.Now()
	km, err := killmail.Normalize([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if len(km.JSON) != b.Len() {
		t.Errorf("output is %d bytes, want %d", len(km.JSON), b.Len())
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("normalising 200,000 fields took %v", d)
	}
}

func TestReasonOfOtherErrors(t *testing.T) {
	if r := killmail.ReasonOf(errors.New("boom")); r != "" {
		t.Errorf("ReasonOf(plain error) = %q, want empty", r)
	}
	if r := killmail.ReasonOf(nil); r != "" {
		t.Errorf("ReasonOf(nil) = %q, want empty", r)
	}
}

func BenchmarkNormalize(b *testing.B) {
	in := []byte(`{"killmail_id":128000001,"hash":"x","esi":` + esi(`"killmail_id":128000001`, `"solar_system_id":30000142`) + `,"zkb":` + zkb + `}`)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := killmail.Normalize(in); err != nil {
			b.Fatal(err)
		}
	}
}

// Every id field spelled in another case is refused, however it is folded.
func TestNormalizeRefusesEveryCaseVariantOfIDFields(t *testing.T) {
	for _, name := range []string{"Killmail_ID", "KILLID", "Solar_System_Id", "SYSTEM_ID", "Killmail_Time", "ZKB", "\u212Aillid", "\u017Fystem_id"} {
		in := `{"killmail_id":1,"solar_system_id":2,"` + name + `":3}`
		if _, err := killmail.Normalize([]byte(in)); killmail.ReasonOf(err) != killmail.ReasonDuplicateKey {
			t.Errorf("%s: error %v, want %s", in, err, killmail.ReasonDuplicateKey)
		}
	}
}

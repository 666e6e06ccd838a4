package bench

import (
	"bytes"
	"fmt"
	"strconv"
	"time"
)

// StampField is the killmail member holding the produce time, in
// microseconds since the Unix epoch. It is the first member, so a client
// finds it without reading the rest, and microseconds stay exact as a
// google.protobuf.Struct number (a double).
const StampField = "bench_us"

// epoch is the killmail_time of every generated killmail: a fixed time keeps
// sizes identical from run to run.
var epoch = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// Killmail returns a realistic killmail of about 1 KB as the producer writes
// it (the ESI killmail with one victim, one attacker and one item, and
// zKillboard's zkb block), with the produce time stampUS first. Real
// killmails are 1 to 20 KB; this is the small end, which stresses per-event
// costs rather than bytes.
func Killmail(id, system, stampUS int64) []byte {
	b := make([]byte, 0, 1100)
	b = append(b, `{"`+StampField+`":`...)
	b = strconv.AppendInt(b, stampUS, 10)
	fitted := float64(1_000_000 + (id%997)*10_007)
	dropped := float64((id % 89) * 51_013)
	return fmt.Appendf(b, `,"attackers":[{"alliance_id":99005338,"character_id":2116199184,"corporation_id":98523546,"damage_done":2846,"final_blow":true,"security_status":-0.3,"ship_type_id":17738,"weapon_type_id":2929}],`+
		`"killmail_id":%d,"killmail_time":%q,"solar_system_id":%d,`+
		`"victim":{"alliance_id":1354830081,"character_id":2112625428,"corporation_id":98356193,"damage_taken":2846,"items":[{"flag":27,"item_type_id":2873,"quantity_destroyed":1,"singleton":0},{"flag":5,"item_type_id":27435,"quantity_dropped":120,"singleton":0}],"position":{"x":-107303362560.0,"y":-18744975360.0,"z":436489052160.0},"ship_type_id":587},`+
		`"zkb":{"locationID":%d,"hash":"%040x","fittedValue":%.2f,"droppedValue":%.2f,"destroyedValue":%.2f,"totalValue":%.2f,"points":1,"npc":false,"solo":true,"awox":false,"labels":["pvp","solo","loc:highsec"]}}`,
		id, epoch.Add(time.Duration(id%86400)*time.Second).Format(time.RFC3339), system, 50_000_000+system%1_000_000,
		uint64(id)*0x9e3779b97f4a7c15, fitted, dropped, fitted+349_999.99, fitted+dropped+349_999.99)
}

// SmallKillmail returns a killmail of about 200 bytes: ids, time, system,
// victim ship and a short zkb block. The Poll measurement holds a million of
// them in three stores at once, so they are kept small.
func SmallKillmail(id, system int64) []byte {
	return fmt.Appendf(nil, `{"killmail_id":%d,"killmail_time":%q,"solar_system_id":%d,"victim":{"character_id":%d,"ship_type_id":587},"zkb":{"totalValue":%.2f,"npc":false,"solo":true}}`,
		id, epoch.Add(time.Duration(id%86400)*time.Second).Format(time.RFC3339), system, 2112000000+id%1000000, float64(1_000_000+(id%997)*10_007))
}

// Stamp reads the StampField of a killmail JSON written by Killmail, or
// returns false.
func Stamp(km []byte) (int64, bool) {
	const prefix = `{"` + StampField + `":`
	if !bytes.HasPrefix(km, []byte(prefix)) {
		return 0, false
	}
	var v int64
	n := 0
	for _, c := range km[len(prefix):] {
		if c < '0' || c > '9' {
			break
		}
		v = v*10 + int64(c-'0')
		n++
	}
	return v, n > 0
}

package killmail_test

import (
	"fmt"

	"github.com/killfeed/killfeed/internal/killmail"
)

func ExampleNormalize() {
	// An R2Z2 file: the ESI killmail sits under "esi", zKillboard's block
	// under "zkb", with the feed's own bookkeeping around them.
	r2z2 := []byte(`{
		"killmail_id": 128000001,
		"hash": "aa8b1b3f",
		"esi": {"killmail_id": 128000001, "killmail_time": "2025-06-01T12:34:56Z",
		        "solar_system_id": 30000142, "victim": {"ship_type_id": 587}, "attackers": []},
		"zkb": {"hash": "aa8b1b3f", "totalValue": 1234567.89, "npc": false},
		"sequence_id": 96117744,
		"uploaded_at": 1748781296
	}`)
	km, err := killmail.Normalize(r2z2)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(km.ID, km.SystemID, km.Time)
	fmt.Printf("key %s\n", killmail.Key(km.SystemID))
	fmt.Printf("%s\n", km.JSON)

	_, err = killmail.Normalize([]byte(`{"killID": 5, "victim": {}}`))
	fmt.Printf("%s: %v\n", killmail.ReasonOf(err), err)
	// Output:
	// 128000001 30000142 2025-06-01 12:34:56 +0000 UTC
	// key 30000142
	// {"killmail_id":128000001,"killmail_time":"2025-06-01T12:34:56Z","solar_system_id":30000142,"victim":{"ship_type_id":587},"attackers":[],"zkb":{"hash":"aa8b1b3f","totalValue":1234567.89,"npc":false}}
	// no_system_id: killmail has no solar_system_id or system_id
}

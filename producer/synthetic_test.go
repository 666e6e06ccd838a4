package producer_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/killfeed/killfeed/internal/killmail"
	"github.com/killfeed/killfeed/producer"
)

const (
	jita      = 30000142
	amarr     = 30002187
	dodixie   = 30002659
	rens      = 30002510
	hek       = 30002053
	perimeter = 30000144
	tama      = 30002813
	uedama    = 30002768
)

func TestSyntheticLooksLikeEVE(t *testing.T) {
	const n = 10000
	now := time.Date(2026, 3, 1, 18, 0, 0, 0, time.UTC)
	src := producer.NewSynthetic(producer.SyntheticOptions{Count: n, Seed: 42, FirstID: 1000, Now: func() time.Time { return now }})
	perSystem := map[int64]int{}
	var sizes []int
	lastID := int64(0)
	wormholes, known := map[int64]bool{}, map[int64]bool{}
	attackers := map[int]int{}
	for {
		raw, err := src.Next(context.Background())
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		km, err := killmail.Normalize(raw)
		if err != nil {
			t.Fatalf("%s does not normalise: %v\n%s", src.Location(), err, raw)
		}
		if !bytes.Equal(km.JSON, raw) {
			t.Fatalf("%s changes when normalised; the generator should emit normalised JSON", src.Location())
		}
		if km.ID != lastID+1 && lastID != 0 || km.ID <= lastID {
			t.Fatalf("killmail id %d after %d; want increasing by one", km.ID, lastID)
		}
		lastID = km.ID
		if age := now.Sub(km.Time); age < 0 || age > 2*time.Minute {
			t.Errorf("killmail_time %v is %v before now", km.Time, age)
		}
		perSystem[km.SystemID]++
		sizes = append(sizes, len(raw))
		switch {
		case km.SystemID >= 31000001 && km.SystemID <= 31002600:
			wormholes[km.SystemID] = true
		case km.SystemID >= 30000001 && km.SystemID <= 30005000:
			known[km.SystemID] = true
		default:
			t.Errorf("system %d is outside known space and wormhole space", km.SystemID)
		}
		attackers[bytes.Count(raw, []byte(`"final_blow"`))]++
		for _, field := range []string{`"victim":{`, `"character_id"`, `"corporation_id"`, `"ship_type_id"`, `"damage_taken"`, `"items":[`, `"position":{"x":`,
			`"zkb":{"locationID"`, `"hash"`, `"fittedValue"`, `"droppedValue"`, `"destroyedValue"`, `"totalValue"`, `"points"`, `"npc"`, `"solo"`, `"awox"`, `"labels":[`, `"href":"https://esi.evetech.net/`} {
			if !bytes.Contains(raw, []byte(field)) {
				t.Fatalf("killmail lacks %s: %s", field, raw)
			}
		}
	}
	if lastID != 1000+n-1 {
		t.Errorf("last id %d, want %d: Count not honoured", lastID, 1000+n-1)
	}

	// Jita is the busiest system, and the hubs are all busier than a
	// typical system.
	var busiest int64
	for sys, c := range perSystem {
		if c > perSystem[busiest] {
			busiest = sys
		}
	}
	if busiest != jita {
		t.Errorf("busiest system is %d with %d kills; want Jita (%d kills)", busiest, perSystem[busiest], perSystem[jita])
	}
	if share := float64(perSystem[jita]) / n; share < 0.04 || share > 0.12 {
		t.Errorf("Jita has %.1f%% of kills, want about 7%%", share*100)
	}
	for _, hub := range []int64{amarr, dodixie, rens, hek, perimeter, tama, uedama} {
		if perSystem[hub] < 50 {
			t.Errorf("system %d has %d kills of %d; want it among the busy ones", hub, perSystem[hub], n)
		}
	}
	if len(wormholes) < 600 {
		t.Errorf("%d distinct wormhole systems, want many quiet ones (over 600)", len(wormholes))
	}
	if len(known) < 1500 {
		t.Errorf("%d distinct known-space systems, want a long tail (over 1500)", len(known))
	}

	t.Logf("Jita %d, Perimeter %d, Amarr %d, Dodixie %d of %d; %d wormhole and %d known-space systems",
		perSystem[jita], perSystem[perimeter], perSystem[amarr], perSystem[dodixie], n, len(wormholes), len(known))
	sort.Ints(sizes)
	median, p5, p95 := sizes[n/2], sizes[n/20], sizes[n*19/20]
	t.Logf("sizes: min %d, p5 %d, median %d, p95 %d, max %d bytes", sizes[0], p5, median, p95, sizes[n-1])
	inRange := 0
	for _, s := range sizes {
		if s >= 1000 && s <= 20000 {
			inRange++
		}
	}
	if float64(inRange)/n < 0.8 {
		t.Errorf("%d%% of killmails are 1-20 KB, want most", inRange*100/n)
	}
	if sizes[n-1] > 100_000 {
		t.Errorf("largest killmail is %d bytes, want under 100 KB", sizes[n-1])
	}
	if attackers[1] < n/5 || attackers[50] == 0 && attackers[49] == 0 && attackers[48] == 0 {
		t.Errorf("attacker counts %v: want many solo kills and some 50-pilot fights", attackers)
	}
	for count := range attackers {
		if count < 1 || count > 50 {
			t.Errorf("a killmail has %d attackers, want 1 to 50", count)
		}
	}
}

func TestSyntheticIsReproducible(t *testing.T) {
	gen := func(seed uint64) [][]byte {
		clock := func() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }
		src := producer.NewSynthetic(producer.SyntheticOptions{Count: 50, Seed: seed, FirstID: 7, Now: clock})
		var out [][]byte
		for {
			b, err := src.Next(context.Background())
			if err == io.EOF {
				return out
			}
			out = append(out, slices.Clone(b))
		}
	}
	a, b, c := gen(1), gen(1), gen(2)
	if !slices.EqualFunc(a, b, bytes.Equal) {
		t.Errorf("the same seed gave different killmails")
	}
	if slices.EqualFunc(a, c, bytes.Equal) {
		t.Errorf("different seeds gave the same killmails")
	}
}

// Two runs started one after the other must not reuse ids, or the second
// would be dropped as duplicates of the first.
func TestSyntheticDefaultIDsDoNotRepeat(t *testing.T) {
	first := producer.NewSynthetic(producer.SyntheticOptions{})
	var last int64
	for range 1000 {
		b, _ := first.Next(context.Background())
		km, _ := killmail.Normalize(b)
		last = km.ID
	}
	b, _ := producer.NewSynthetic(producer.SyntheticOptions{}).Next(context.Background())
	km, _ := killmail.Normalize(b)
	if km.ID <= last {
		t.Errorf("second run starts at id %d, first ended at %d", km.ID, last)
	}
	if km.ID >= 1<<53 {
		t.Errorf("id %d is not exact in JavaScript", km.ID)
	}
}

func TestSyntheticRate(t *testing.T) {
	src := producer.NewSynthetic(producer.SyntheticOptions{Count: 21, Rate: 100})
	start := time.Now()
	for {
		if _, err := src.Next(context.Background()); err == io.EOF {
			break
		}
	}
	// 21 killmails at 100/s: the last is due 200ms after the first.
	if d := time.Since(start); d < 190*time.Millisecond || d > 2*time.Second {
		t.Errorf("21 killmails at 100/s took %v, want about 200ms", d)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	slow := producer.NewSynthetic(producer.SyntheticOptions{Rate: 0.1})
	slow.Next(ctx) // the first one is immediate
	if _, err := slow.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("waiting for the next killmail ignored the context: %v", err)
	}
}

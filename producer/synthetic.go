package producer

import (
	"context"
	"io"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"
)

// SyntheticOptions configures a synthetic killmail generator.
type SyntheticOptions struct {
	// Count is how many killmails to generate before io.EOF. 0 means no
	// end: the generator runs until its context is done.
	Count int64
	// Rate is killmails per second. 0 means as fast as the consumer takes
	// them.
	Rate float64
	// Seed makes runs reproducible: the same Seed and FirstID give the same
	// systems, ships, attackers and sizes, in the same order. Only
	// killmail_time follows the clock.
	Seed uint64
	// FirstID is the killmail id of the first killmail; each one after it
	// is one higher. Default: the current time in microseconds since the
	// Unix epoch. That is far above real killmail ids (around 10^8), so
	// synthetic killmails never collide with real ones in a shared topic,
	// and above every id an earlier run generated at under a million per
	// second, so a second run is not dropped as duplicates of the first. It
	// is still below 2^53, so JavaScript clients read it exactly.
	FirstID int64
	// Now is the clock killmail_time is taken from. Default time.Now.
	Now func() time.Time
}

// Synthetic generates realistic killmails for demos and load tests: real
// solar system ids with a realistic spread (Jita busiest, then the other
// trade hubs and the gank systems, a long tail of known space, many quiet
// wormholes), the ESI shape with victim, items and 1 to 50 attackers, and a
// zKillboard zkb block. Most killmails are 1 to 20 KB, like real ones.
type Synthetic struct {
	opts    SyntheticOptions
	rng     *rand.Rand
	systems systemTable
	cat     catalog
	n       int64 // killmails generated
	start   time.Time
	buf     []byte
}

// NewSynthetic returns a generator with the given options.
func NewSynthetic(opts SyntheticOptions) *Synthetic {
	if opts.FirstID <= 0 {
		opts.FirstID = time.Now().UnixMicro()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Synthetic{
		opts:    opts,
		rng:     rand.New(rand.NewPCG(opts.Seed, 0x6b696c6c66656564)), // "killfeed"
		systems: newSystemTable(),
		cat:     newCatalog(),
	}
}

// Location names the killmail last returned by Next.
func (s *Synthetic) Location() string {
	return "synthetic killmail " + strconv.FormatInt(s.n, 10)
}

// Next returns the next killmail, waiting first when Rate requires it.
func (s *Synthetic) Next(ctx context.Context) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.opts.Count > 0 && s.n >= s.opts.Count {
		return nil, io.EOF
	}
	if s.opts.Rate > 0 {
		if s.n == 0 {
			s.start = time.Now()
		}
		// Pace against the start rather than the previous killmail, so
		// time spent by the caller does not slow the overall rate.
		due := s.start.Add(time.Duration(float64(s.n) / s.opts.Rate * float64(time.Second)))
		if wait := time.Until(due); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-t.C:
			}
		}
	}
	s.buf = s.generate(s.buf[:0], s.opts.FirstID+s.n)
	s.n++
	return s.buf, nil
}

// Well-known systems, by id.
const (
	jita      = 30000142
	perimeter = 30000144
	amarr     = 30002187
	dodixie   = 30002659
	rens      = 30002510
	hek       = 30002053
	tama      = 30002813
	uedama    = 30002768
)

// systemTable picks solar systems with realistic relative activity.
type systemTable struct {
	ids []int64
	cum []float64 // cumulative weights, same order as ids
}

func newSystemTable() systemTable {
	var t systemTable
	add := func(id int64, w float64) {
		total := w
		if n := len(t.cum); n > 0 {
			total += t.cum[n-1]
		}
		t.ids = append(t.ids, id)
		t.cum = append(t.cum, total)
	}
	// Trade hubs and gank pipes: roughly a fifth of all kills, Jita alone
	// about 7%.
	hubs := map[int64]float64{jita: 1200, perimeter: 400, amarr: 350, uedama: 300, tama: 300, rens: 200, hek: 200, dodixie: 180}
	for _, id := range slices.Sorted(maps.Keys(hubs)) {
		add(id, hubs[id])
	}
	// The rest of known space: a long tail where a few systems (staging
	// and war systems) are much busier than most. The ranking is fixed,
	// not seeded, so the same systems are busy in every run, as in EVE.
	var tail []int64
	for id := int64(30000001); id <= 30005000; id++ {
		if _, hub := hubs[id]; !hub {
			tail = append(tail, id)
		}
	}
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(tail), func(i, j int) { tail[i], tail[j] = tail[j], tail[i] })
	for rank, id := range tail {
		add(id, 2000/float64(rank+20))
	}
	// Wormhole space: many systems, each quiet.
	for id := int64(31000001); id <= 31002600; id++ {
		add(id, 0.8)
	}
	return t
}

func (t systemTable) pick(rng *rand.Rand) int64 {
	x := rng.Float64() * t.cum[len(t.cum)-1]
	i, _ := slices.BinarySearch(t.cum, x)
	return t.ids[min(i, len(t.ids)-1)]
}

func securityLabel(system int64) string {
	switch {
	case system >= 31000000:
		return "loc:w-space"
	case system == jita || system == perimeter || system == amarr || system == uedama ||
		system == tama || system == rens || system == hek || system == dodixie:
		return "loc:highsec"
	}
	switch (uint64(system) * 2654435761 >> 8) % 10 {
	case 0, 1, 2, 3, 4:
		return "loc:highsec"
	case 5, 6:
		return "loc:lowsec"
	default:
		return "loc:nullsec"
	}
}

// shipClass groups ships that die with similar fits, values and crowds.
type shipClass struct {
	weight     float64
	types      []int64
	value      float64 // typical fitted value, ISK
	items      [2]int  // item count range
	attackers  [2]int  // typical attacker count range; fleets add more
	points     [2]int
	npcChance  float64
	cargoHeavy bool
}

// catalog lists the ships and items killmails are made of. It is built per
// generator so that no package state is shared.
type catalog struct {
	classes []shipClass
	weight  float64 // sum of the classes' weights

	modules, charges, drones, rigs, cargo, implants, weapons, npcShips []int64
}

func newCatalog() catalog {
	c := catalog{
		classes: []shipClass{
			{weight: 20, types: []int64{670}, value: 2e4, items: [2]int{0, 6}, attackers: [2]int{1, 4}, points: [2]int{1, 1}},                                                                // capsule
			{weight: 20, types: []int64{587, 603, 594, 593, 608, 602, 605, 33468, 32880}, value: 8e6, items: [2]int{6, 22}, attackers: [2]int{1, 6}, points: [2]int{1, 10}, npcChance: 0.15}, // frigates
			{weight: 10, types: []int64{16240, 16242, 16236, 16238, 22456}, value: 2e7, items: [2]int{8, 28}, attackers: [2]int{1, 8}, points: [2]int{2, 15}, npcChance: 0.1},                // destroyers
			{weight: 15, types: []int64{626, 621, 629, 2006, 33470, 12005, 17715}, value: 9e7, items: [2]int{10, 38}, attackers: [2]int{1, 12}, points: [2]int{5, 25}, npcChance: 0.1},       // cruisers
			{weight: 7, types: []int64{24698, 24702, 16229, 16227}, value: 1.5e8, items: [2]int{15, 42}, attackers: [2]int{2, 15}, points: [2]int{8, 30}, npcChance: 0.05},                   // battlecruisers
			{weight: 6, types: []int64{638, 644, 645, 641, 642}, value: 3e8, items: [2]int{15, 55}, attackers: [2]int{3, 25}, points: [2]int{10, 40}, npcChance: 0.05},                       // battleships
			{weight: 4, types: []int64{29984, 29990, 29986, 29988}, value: 8e8, items: [2]int{20, 60}, attackers: [2]int{2, 20}, points: [2]int{20, 60}},                                     // strategic cruisers
			{weight: 6, types: []int64{17480, 17478, 22544, 17476}, value: 6e7, items: [2]int{5, 20}, attackers: [2]int{1, 6}, points: [2]int{1, 10}, npcChance: 0.2},                        // mining barges
			{weight: 6, types: []int64{657, 648, 12753, 28606}, value: 1e8, items: [2]int{5, 70}, attackers: [2]int{1, 10}, points: [2]int{1, 10}, cargoHeavy: true},                         // haulers
			{weight: 1, types: []int64{19722, 23911, 23757}, value: 3e9, items: [2]int{40, 150}, attackers: [2]int{15, 50}, points: [2]int{50, 200}},                                         // capitals
			{weight: 0.3, types: []int64{35832, 35833}, value: 1.5e9, items: [2]int{50, 200}, attackers: [2]int{10, 50}, points: [2]int{30, 100}, cargoHeavy: true},                          // citadels
		},
		// Type ids of common modules, charges, drones and cargo.
		modules:  []int64{2048, 3841, 3831, 519, 10190, 2364, 527, 3244, 448, 2605, 1541, 2281, 1999, 5973, 4025, 12058, 2032, 3530, 1405, 2410, 2404, 2873, 2889, 3082, 3057},
		charges:  []int64{12608, 21894, 2629, 24513, 27361, 12614, 12779, 28668},
		drones:   []int64{2488, 2456, 2185, 2203, 2446},
		rigs:     []int64{31724, 31790, 31117, 31177, 31362},
		cargo:    []int64{34, 35, 36, 37, 44992, 40520, 16274, 4247, 11399},
		implants: []int64{9899, 10216, 13283, 13284, 33329, 10228},
		weapons:  []int64{2873, 2889, 3082, 3057, 2410, 2404, 2488, 2456, 3146, 2929},
		npcShips: []int64{23336, 11942, 23332, 17720, 34495},
	}
	for _, sc := range c.classes {
		c.weight += sc.weight
	}
	return c
}

func (s *Synthetic) intn(lo, hi int) int { return lo + s.rng.IntN(hi-lo+1) }

func (s *Synthetic) pickInt(xs []int64) int64 { return xs[s.rng.IntN(len(xs))] }

func (s *Synthetic) pickClass() *shipClass {
	x := s.rng.Float64() * s.cat.weight
	for i := range s.cat.classes {
		if x -= s.cat.classes[i].weight; x < 0 {
			return &s.cat.classes[i]
		}
	}
	return &s.cat.classes[len(s.cat.classes)-1]
}

func (s *Synthetic) characterID() int64 {
	if s.rng.IntN(3) == 0 {
		return 90000000 + s.rng.Int64N(8000000) // characters made before 2016
	}
	return 2112000000 + s.rng.Int64N(12000000)
}

func (s *Synthetic) corporationID() int64 { return 98000000 + s.rng.Int64N(800000) }

func (s *Synthetic) allianceID() int64 { return 99000000 + s.rng.Int64N(13000) }

// attackerCount mixes small gangs with the occasional fleet fight.
func (s *Synthetic) attackerCount(c *shipClass) int {
	n := s.intn(c.attackers[0], c.attackers[1])
	if s.rng.IntN(10) == 0 {
		n += s.intn(5, 30)
	}
	if s.rng.IntN(3) == 0 {
		n = 1 // solo kills and single NPCs are the most common single count
	}
	return max(1, min(n, 50))
}

// generate appends one killmail to b, in the ESI field order with the zkb
// block last, as RedisQ and R2Z2 deliver it.
func (s *Synthetic) generate(b []byte, id int64) []byte {
	system := s.systems.pick(s.rng)
	class := s.pickClass()
	victimShip := s.pickInt(class.types)
	npc := s.rng.Float64() < class.npcChance
	nAttackers := s.attackerCount(class)
	if npc {
		nAttackers = s.intn(1, 4)
	}
	finalBlow := s.rng.IntN(nAttackers)
	killTime := s.opts.Now().UTC().Add(-time.Duration(s.rng.Int64N(int64(90 * time.Second)))).Truncate(time.Second)

	b = append(b, `{"attackers":[`...)
	var totalDamage int64
	for i := range nAttackers {
		if i > 0 {
			b = append(b, ',')
		}
		dmg := s.rng.Int64N(4000) + 1
		totalDamage += dmg
		b = append(b, '{')
		if npc {
			b = append(b, `"corporation_id":1000125,"damage_done":`...)
			b = strconv.AppendInt(b, dmg, 10)
			b = append(b, `,"faction_id":500006,"final_blow":`...)
			b = strconv.AppendBool(b, i == finalBlow)
			b = append(b, `,"security_status":0,"ship_type_id":`...)
			b = strconv.AppendInt(b, s.pickInt(s.cat.npcShips), 10)
			b = append(b, '}')
			continue
		}
		if s.rng.IntN(10) < 7 {
			b = append(b, `"alliance_id":`...)
			b = strconv.AppendInt(b, s.allianceID(), 10)
			b = append(b, ',')
		}
		b = append(b, `"character_id":`...)
		b = strconv.AppendInt(b, s.characterID(), 10)
		b = append(b, `,"corporation_id":`...)
		b = strconv.AppendInt(b, s.corporationID(), 10)
		b = append(b, `,"damage_done":`...)
		b = strconv.AppendInt(b, dmg, 10)
		b = append(b, `,"final_blow":`...)
		b = strconv.AppendBool(b, i == finalBlow)
		b = append(b, `,"security_status":`...)
		b = strconv.AppendFloat(b, float64(s.rng.IntN(150)-100)/10, 'f', -1, 64)
		b = append(b, `,"ship_type_id":`...)
		// Attackers fly anything from a frigate to a strategic cruiser
		// (classes 1 to 6).
		b = strconv.AppendInt(b, s.pickInt(s.cat.classes[1+s.rng.IntN(6)].types), 10)
		b = append(b, `,"weapon_type_id":`...)
		b = strconv.AppendInt(b, s.pickInt(s.cat.weapons), 10)
		b = append(b, '}')
	}
	b = append(b, `],"killmail_id":`...)
	b = strconv.AppendInt(b, id, 10)
	b = append(b, `,"killmail_time":"`...)
	b = killTime.AppendFormat(b, time.RFC3339)
	b = append(b, `","solar_system_id":`...)
	b = strconv.AppendInt(b, system, 10)

	b = append(b, `,"victim":{`...)
	if s.rng.IntN(10) < 7 {
		b = append(b, `"alliance_id":`...)
		b = strconv.AppendInt(b, s.allianceID(), 10)
		b = append(b, ',')
	}
	b = append(b, `"character_id":`...)
	b = strconv.AppendInt(b, s.characterID(), 10)
	b = append(b, `,"corporation_id":`...)
	b = strconv.AppendInt(b, s.corporationID(), 10)
	b = append(b, `,"damage_taken":`...)
	b = strconv.AppendInt(b, totalDamage, 10)
	b = append(b, `,"items":[`...)
	var dropped, destroyed float64
	for i := range s.intn(class.items[0], class.items[1]) {
		if i > 0 {
			b = append(b, ',')
		}
		flag, typ, qty, singleton := s.item(class, victimShip)
		value := class.value / float64(class.items[1]+1) * (0.2 + s.rng.Float64()*1.6)
		b = append(b, `{"flag":`...)
		b = strconv.AppendInt(b, flag, 10)
		b = append(b, `,"item_type_id":`...)
		b = strconv.AppendInt(b, typ, 10)
		if s.rng.IntN(2) == 0 {
			b = append(b, `,"quantity_destroyed":`...)
			destroyed += value
		} else {
			b = append(b, `,"quantity_dropped":`...)
			dropped += value
		}
		b = strconv.AppendInt(b, qty, 10)
		b = append(b, `,"singleton":`...)
		b = strconv.AppendInt(b, singleton, 10)
		b = append(b, '}')
	}
	b = append(b, `],"position":{"x":`...)
	for i, axis := range []string{"", `,"y":`, `,"z":`} {
		if i > 0 {
			b = append(b, axis...)
		}
		b = strconv.AppendFloat(b, float64(s.rng.Int64N(2e14)-1e14)/100, 'f', 2, 64)
	}
	b = append(b, `},"ship_type_id":`...)
	b = strconv.AppendInt(b, victimShip, 10)
	b = append(b, '}')

	hull := class.value * (0.3 + s.rng.Float64()*0.4)
	destroyed += hull
	fitted := hull + (dropped+destroyed-hull)*0.7
	hash := s.hash()
	solo := !npc && nAttackers == 1
	awox := !npc && s.rng.IntN(50) == 0
	b = append(b, `,"zkb":{"locationID":`...)
	b = strconv.AppendInt(b, 40000000+s.rng.Int64N(500000), 10)
	b = append(b, `,"hash":"`...)
	b = append(b, hash[:]...)
	b = append(b, `","fittedValue":`...)
	b = strconv.AppendFloat(b, fitted, 'f', 2, 64)
	b = append(b, `,"droppedValue":`...)
	b = strconv.AppendFloat(b, dropped, 'f', 2, 64)
	b = append(b, `,"destroyedValue":`...)
	b = strconv.AppendFloat(b, destroyed, 'f', 2, 64)
	b = append(b, `,"totalValue":`...)
	b = strconv.AppendFloat(b, dropped+destroyed, 'f', 2, 64)
	b = append(b, `,"points":`...)
	b = strconv.AppendInt(b, int64(s.intn(class.points[0], class.points[1])), 10)
	b = append(b, `,"npc":`...)
	b = strconv.AppendBool(b, npc)
	b = append(b, `,"solo":`...)
	b = strconv.AppendBool(b, solo)
	b = append(b, `,"awox":`...)
	b = strconv.AppendBool(b, awox)
	b = append(b, `,"labels":["cat:6","`...)
	b = append(b, crowdLabel(nAttackers)...)
	if npc {
		b = append(b, `","npc`...)
	} else {
		b = append(b, `","pvp`...)
	}
	if solo {
		b = append(b, `","solo`...)
	}
	if awox {
		b = append(b, `","awox`...)
	}
	b = append(b, `","`...)
	b = append(b, securityLabel(system)...)
	if dropped+destroyed >= 1e9 {
		b = append(b, `","isk:1b+`...)
	}
	b = append(b, `"],"href":"https://esi.evetech.net/v1/killmails/`...)
	b = strconv.AppendInt(b, id, 10)
	b = append(b, '/')
	b = append(b, hash[:]...)
	b = append(b, `/"}}`...)
	return b
}

func crowdLabel(n int) string {
	switch {
	case n >= 50:
		return "#:50+"
	case n >= 25:
		return "#:25+"
	case n >= 10:
		return "#:10+"
	case n >= 5:
		return "#:5+"
	case n >= 2:
		return "#:2+"
	}
	return "#:1"
}

// item draws one victim item: slot flag, type, quantity and singleton.
func (s *Synthetic) item(c *shipClass, ship int64) (flag, typ, qty, singleton int64) {
	if ship == 670 { // a capsule holds implants
		return int64(s.intn(130, 139)), s.pickInt(s.cat.implants), 1, 0
	}
	r := s.rng.IntN(100)
	if c.cargoHeavy {
		r = 75 + r/4
	}
	switch {
	case r < 45: // fitted module, low, mid or high slot
		return int64(s.intn(11, 34)), s.pickInt(s.cat.modules), 1, 0
	case r < 55:
		return int64(s.intn(92, 94)), s.pickInt(s.cat.rigs), 1, 0
	case r < 70: // charges loaded in a module, or in the cargo
		return int64(s.intn(27, 34)), s.pickInt(s.cat.charges), int64(s.intn(20, 5000)), 0
	case r < 78:
		return 87, s.pickInt(s.cat.drones), int64(s.intn(1, 5)), 0
	default:
		typ = s.pickInt(s.cat.cargo)
		qty = int64(s.intn(1, 2000))
		if typ == 44992 || typ == 40520 { // PLEX and injectors come in ones
			qty = int64(s.intn(1, 20))
		}
		return 5, typ, qty, 0
	}
}

func (s *Synthetic) hash() [40]byte {
	const hexdigits = "0123456789abcdef"
	var h [40]byte
	for i := 0; i < len(h); i += 16 {
		x := s.rng.Uint64()
		for j := i; j < min(i+16, len(h)); j++ {
			h[j] = hexdigits[x&15]
			x >>= 4
		}
	}
	return h
}

package offsets_test

import (
	"cmp"
	"context"
	"slices"
	"testing"

	"github.com/killfeed/killfeed/offsets"
)

// TestPositionsIn checks that PositionsIn (and AppendPositionsIn) return
// exactly what Positions holds for the systems asked, and nothing for
// deleted clients or systems not asked.
func TestPositionsIn(t *testing.T) {
	c := newCluster(t)
	s := openStore(t, c.ListenAddrs(), offsets.Options{Topic: topicName(t)})
	commit(t, s, "c1", positions(pos{1, 0, 5}, pos{1, 3, 9}, pos{2, 0, 6}, pos{3, 1, 7})...)
	commit(t, s, "c2", positions(pos{1, 0, 50})...)

	byKey := func(a, b offsets.Position) int {
		return cmp.Or(cmp.Compare(a.SystemID, b.SystemID), cmp.Compare(a.Partition, b.Partition))
	}
	for _, tc := range []struct {
		name    string
		client  string
		systems []int64
		want    []pos
	}{
		{"some systems", "c1", []int64{1, 3}, []pos{{1, 0, 5}, {1, 3, 9}, {3, 1, 7}}},
		{"a system without positions", "c1", []int64{2, 4}, []pos{{2, 0, 6}}},
		{"another client", "c2", []int64{1, 2, 3}, []pos{{1, 0, 50}}},
		{"unknown client", "c3", []int64{1}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := s.PositionsIn(tc.client, tc.systems)
			slices.SortFunc(got, byKey)
			if !slices.Equal(strip(got), tc.want) {
				t.Errorf("PositionsIn(%q, %v) = %v, want %v", tc.client, tc.systems, strip(got), tc.want)
			}
			// Same as Positions, filtered.
			var want []offsets.Position
			for _, p := range s.Positions(tc.client) {
				if slices.Contains(tc.systems, p.SystemID) {
					want = append(want, p)
				}
			}
			if !samePositions(got, want) {
				t.Errorf("PositionsIn(%q, %v) = %v, Positions has %v", tc.client, tc.systems, got, want)
			}
			// AppendPositionsIn keeps what dst held and adds the same.
			held := offsets.Position{SystemID: 99, Partition: 9, Offset: 99}
			appended := s.AppendPositionsIn([]offsets.Position{held}, tc.client, tc.systems)
			slices.SortFunc(appended[1:], byKey)
			if len(appended) == 0 || appended[0] != held || !samePositions(appended[1:], want) {
				t.Errorf("AppendPositionsIn([%v], %q, %v) = %v, want it followed by %v", held, tc.client, tc.systems, appended, want)
			}
		})
	}

	if err := s.DeleteClient(context.Background(), "c1"); err != nil {
		t.Fatalf("DeleteClient: %v", err)
	}
	if got := s.PositionsIn("c1", []int64{1, 2, 3}); len(got) != 0 {
		t.Errorf("PositionsIn of a deleted client = %v, want none", got)
	}
}

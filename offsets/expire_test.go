package offsets_test

import (
	"testing"
	"time"

	"github.com/killfeed/killfeed/offsets"
)

// retention is long enough that the store's own expiry loop (every tenth of
// it, in real time) never runs during a test: only ExpireIdle calls expire.
const retention = time.Hour

func TestExpireIdle(t *testing.T) {
	type event struct {
		at     time.Duration // after the clock's start
		commit []pos         // or, if nil, a Touch
	}
	tests := []struct {
		name   string
		events []event
		// kept is whether ExpireIdle at start+retention+10m keeps the client.
		kept bool
		want []pos // positions if kept
	}{
		{
			name:   "idle past the retention",
			events: []event{{0, []pos{{1, 0, 1}, {2, 0, 2}}}},
			kept:   false,
		},
		{
			name:   "committed within the retention",
			events: []event{{20 * time.Minute, []pos{{1, 0, 5}}}},
			kept:   true,
			want:   []pos{{1, 0, 5}},
		},
		{
			name:   "one recent system keeps all the client's systems",
			events: []event{{0, []pos{{1, 0, 5}}}, {20 * time.Minute, []pos{{2, 0, 6}}}},
			kept:   true,
			want:   []pos{{1, 0, 5}, {2, 0, 6}},
		},
		{
			name:   "touched within the retention",
			events: []event{{0, []pos{{1, 0, 5}}}, {20 * time.Minute, nil}},
			kept:   true,
			want:   []pos{{1, 0, 5}},
		},
		{
			name:   "touched only before the retention",
			events: []event{{-20 * time.Minute, []pos{{1, 0, 3}}}, {5 * time.Minute, nil}},
			kept:   false,
		},
	}
	c := newCluster(t)
	clk := newClock()
	start := clk.Now()
	opts := offsets.Options{Topic: topicName(t), Retention: retention, Now: clk.Now}
	s := openStore(t, c.ListenAddrs(), opts)
	replica := openStore(t, c.ListenAddrs(), opts)
	ctx := testCtx(t)

	// Replay every case's events in time order, each case its own client.
	for _, at := range []time.Duration{-20 * time.Minute, 0, 5 * time.Minute, 20 * time.Minute} {
		clk.Set(start.Add(at))
		for _, tc := range tests {
			for _, e := range tc.events {
				if e.at != at {
					continue
				}
				if e.commit != nil {
					commit(t, s, tc.name, positions(e.commit...)...)
				} else if err := s.Touch(ctx, tc.name); err != nil {
					t.Fatalf("Touch: %v", err)
				}
			}
		}
	}

	clk.Set(start.Add(retention + 10*time.Minute))
	wantExpired := 0
	for _, tc := range tests {
		if !tc.kept {
			wantExpired++
		}
	}
	n, err := s.ExpireIdle(ctx)
	if err != nil {
		t.Fatalf("ExpireIdle: %v", err)
	}
	if n != wantExpired {
		t.Errorf("ExpireIdle expired %d clients, want %d", n, wantExpired)
	}
	if n, err := s.ExpireIdle(ctx); err != nil || n != 0 {
		t.Errorf("second ExpireIdle = %d, %v; want 0, nil", n, err)
	}

	syncStore(t, replica)
	reopened := openStore(t, c.ListenAddrs(), opts)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantPositions(t, s, tc.name, tc.want...)
			if !tc.kept {
				// The expiry is durable and seen by every replica.
				wantPositions(t, replica, tc.name)
				wantPositions(t, reopened, tc.name)
			}
		})
	}
	if got := s.MinOffsets(); len(got) != 1 || got[0] != 5 {
		t.Errorf("MinOffsets = %v, want {0:5} from the kept clients only", got)
	}
}

func TestTouch(t *testing.T) {
	tests := []struct {
		name        string
		touchAt     time.Duration // after the commit
		wantRewrite bool
	}{
		{"recent commit is not rewritten", retention/2 - time.Minute, false},
		{"commit older than half the retention is rewritten", retention/2 + time.Minute, true},
		{"commit older than the retention is rewritten", retention + time.Minute, true},
	}
	c := newCluster(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock()
			committed := clk.Now()
			opts := offsets.Options{Topic: topicName(t), Retention: retention, Now: clk.Now}
			s := openStore(t, c.ListenAddrs(), opts)
			commit(t, s, "reader", pos{1, 0, 5}.position(), pos{1, 3, 9}.position(), pos{2, 0, 6}.position())
			before := countRecords(t, c.ListenAddrs(), opts.Topic)

			touched := committed.Add(tc.touchAt)
			clk.Set(touched)
			if err := s.Touch(testCtx(t), "reader"); err != nil {
				t.Fatalf("Touch: %v", err)
			}
			wantUpdated, wantWritten := committed, 0
			if tc.wantRewrite {
				wantUpdated, wantWritten = touched, 2 // one record per system
			}
			wantPositions(t, s, "reader", pos{1, 0, 5}, pos{1, 3, 9}, pos{2, 0, 6})
			for _, p := range s.Positions("reader") {
				if !p.UpdatedAt.Equal(wantUpdated) {
					t.Errorf("after Touch %+v has UpdatedAt %v, want %v", p, p.UpdatedAt, wantUpdated)
				}
			}
			if n := countRecords(t, c.ListenAddrs(), opts.Topic) - before; n != wantWritten {
				t.Errorf("Touch wrote %d records, want %d", n, wantWritten)
			}
			if !tc.wantRewrite {
				return
			}
			// A rewritten client survives an expiry pass past the original
			// commit's retention, even by a store that never saw the Touch.
			clk.Set(committed.Add(retention + retention/4 + time.Minute))
			s2 := openStore(t, c.ListenAddrs(), opts)
			if n, err := s2.ExpireIdle(testCtx(t)); err != nil || n != 0 {
				t.Errorf("ExpireIdle after a rewriting Touch = %d, %v; want 0, nil", n, err)
			}
			wantPositions(t, s2, "reader", pos{1, 0, 5}, pos{1, 3, 9}, pos{2, 0, 6})
		})
	}
}

func TestTouchDoesNotCreateClients(t *testing.T) {
	c := newCluster(t)
	clk := newClock()
	opts := offsets.Options{Topic: topicName(t), Retention: retention, Now: clk.Now}
	s := openStore(t, c.ListenAddrs(), opts)
	ctx := testCtx(t)

	if err := s.Touch(ctx, "stranger"); err != nil {
		t.Errorf("Touch of an unknown client: %v", err)
	}
	wantPositions(t, s, "stranger")

	commit(t, s, "deleted", pos{1, 0, 5}.position())
	if err := s.DeleteClient(ctx, "deleted"); err != nil {
		t.Fatal(err)
	}
	clk.Set(clk.Now().Add(retention)) // old enough to rewrite, were it live
	if err := s.Touch(ctx, "deleted"); err != nil {
		t.Errorf("Touch of a deleted client: %v", err)
	}
	wantPositions(t, s, "deleted")
	wantPositions(t, openStore(t, c.ListenAddrs(), opts), "deleted")
}

package offsets_test

import (
	"context"
	"errors"
	"maps"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/killfeed/killfeed/offsets"
)

func TestCommitThenPositions(t *testing.T) {
	type commitOp struct {
		client string
		ps     []pos
	}
	tests := []struct {
		name    string
		commits []commitOp
		want    map[string][]pos // nil slice: the client has no positions
	}{
		{
			name:    "single position",
			commits: []commitOp{{"c1", []pos{{30000142, 3, 1234}}}},
			want:    map[string][]pos{"c1": {{30000142, 3, 1234}}},
		},
		{
			name: "ordered by system then partition",
			commits: []commitOp{{"c1", []pos{
				{30002187, 2, 7}, {30000142, 5, 9}, {30002187, 0, 1}, {30000142, 1, 3},
			}}},
			want: map[string][]pos{"c1": {{30000142, 1, 3}, {30000142, 5, 9}, {30002187, 0, 1}, {30002187, 2, 7}}},
		},
		{
			name: "later commit of one system leaves the others",
			commits: []commitOp{
				{"c1", []pos{{1, 0, 5}, {2, 0, 6}, {3, 1, 7}}},
				{"c1", []pos{{2, 0, 60}}},
			},
			want: map[string][]pos{"c1": {{1, 0, 5}, {2, 0, 60}, {3, 1, 7}}},
		},
		{
			name: "later commit of one partition keeps the system's other partitions",
			commits: []commitOp{
				{"c1", []pos{{1, 0, 5}, {1, 1, 6}}},
				{"c1", []pos{{1, 1, 60}}},
			},
			want: map[string][]pos{"c1": {{1, 0, 5}, {1, 1, 60}}},
		},
		{
			name: "a position may move back (reset to earliest)",
			commits: []commitOp{
				{"c1", []pos{{1, 0, 500}}},
				{"c1", []pos{{1, 0, 10}}},
			},
			want: map[string][]pos{"c1": {{1, 0, 10}}},
		},
		{
			name:    "last of duplicate positions in one commit wins",
			commits: []commitOp{{"c1", []pos{{1, 0, 5}, {1, 0, 7}}}},
			want:    map[string][]pos{"c1": {{1, 0, 7}}},
		},
		{
			name: "clients are independent",
			commits: []commitOp{
				{"c1", []pos{{1, 0, 5}}},
				{"c2", []pos{{1, 0, 99}, {2, 0, 3}}},
				{"c1", []pos{{1, 0, 6}}},
			},
			want: map[string][]pos{"c1": {{1, 0, 6}}, "c2": {{1, 0, 99}, {2, 0, 3}}, "c3": nil},
		},
		{
			name: "client ids may contain slashes and digits",
			commits: []commitOp{
				{"team/eu/1", []pos{{30000142, 0, 5}}},
				{"team/eu", []pos{{1, 2, 3}}},
			},
			want: map[string][]pos{"team/eu/1": {{30000142, 0, 5}}, "team/eu": {{1, 2, 3}}, "team": nil},
		},
		{
			name:    "committing nothing stores nothing",
			commits: []commitOp{{"c1", nil}},
			want:    map[string][]pos{"c1": nil},
		},
	}
	c := newCluster(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := offsets.Options{Topic: topicName(t)}
			s := openStore(t, c.ListenAddrs(), opts)
			for _, op := range tc.commits {
				commit(t, s, op.client, positions(op.ps...)...)
			}
			for client, want := range tc.want {
				wantPositions(t, s, client, want...)
			}
			// What Commit acknowledged is what any later store reads back.
			again := openStore(t, c.ListenAddrs(), opts)
			for client, want := range tc.want {
				wantPositions(t, again, client, want...)
			}
		})
	}
}

func TestCommitSetsUpdatedAt(t *testing.T) {
	c := newCluster(t)
	clk := newClock()
	s := openStore(t, c.ListenAddrs(), offsets.Options{Topic: topicName(t), Now: clk.Now})
	commit(t, s, "c1", pos{1, 0, 5}.position(), pos{2, 0, 6}.position())
	t1 := clk.Now().Add(90 * time.Second)
	clk.Set(t1)
	commit(t, s, "c1", pos{2, 0, 7}.position())

	got := s.Positions("c1")
	if len(got) != 2 {
		t.Fatalf("Positions = %v, want 2 positions", got)
	}
	if want := newClock().Now(); !got[0].UpdatedAt.Equal(want) {
		t.Errorf("system 1 UpdatedAt = %v, want %v (its commit time)", got[0].UpdatedAt, want)
	}
	if !got[1].UpdatedAt.Equal(t1) {
		t.Errorf("system 2 UpdatedAt = %v, want %v (its latest commit time)", got[1].UpdatedAt, t1)
	}
}

// Commit refuses what the store could not read back: a commit that returns
// nil must be visible to Positions, now and after a restart.
func TestCommitRejectsInvalid(t *testing.T) {
	tests := []struct {
		name   string
		client string
		p      offsets.Position
	}{
		{"empty client id", "", offsets.Position{SystemID: 1, Partition: 0, Offset: 5}},
		{"zero system", "c1", offsets.Position{SystemID: 0, Partition: 0, Offset: 5}},
		{"negative system", "c1", offsets.Position{SystemID: -30000142, Partition: 0, Offset: 5}},
		{"negative partition", "c1", offsets.Position{SystemID: 1, Partition: -1, Offset: 5}},
		{"negative offset", "c1", offsets.Position{SystemID: 1, Partition: 0, Offset: -1}},
	}
	c := newCluster(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := offsets.Options{Topic: topicName(t)}
			s := openStore(t, c.ListenAddrs(), opts)
			commit(t, s, "c1", pos{7, 0, 70}.position())

			valid := pos{8, 0, 80}.position()
			if err := s.Commit(testCtx(t), tc.client, []offsets.Position{valid, tc.p}); err == nil {
				t.Fatalf("Commit(%q, %+v) = nil, want an error", tc.client, tc.p)
			}
			// Nothing of the refused commit is stored, not even its valid part.
			wantPositions(t, s, "c1", pos{7, 0, 70})
			if tc.client != "c1" {
				wantPositions(t, s, tc.client)
			}
			if n := countRecords(t, c.ListenAddrs(), opts.Topic); n != 1 {
				t.Errorf("topic holds %d records, want 1 (the refused commit wrote nothing)", n)
			}
		})
	}
}

func TestRestartKeepsPositions(t *testing.T) {
	type restart func(t *testing.T, c *kfake.Cluster, dir string) *kfake.Cluster
	tests := []struct {
		name    string
		restart restart
	}{
		{
			name:    "store reopened on the same cluster",
			restart: func(t *testing.T, c *kfake.Cluster, _ string) *kfake.Cluster { return c },
		},
		{
			name: "cluster restarted from its data dir",
			restart: func(t *testing.T, c *kfake.Cluster, dir string) *kfake.Cluster {
				_, port, err := net.SplitHostPort(c.ListenAddrs()[0])
				if err != nil {
					t.Fatal(err)
				}
				p, err := strconv.Atoi(port)
				if err != nil {
					t.Fatal(err)
				}
				c.Close()
				return newCluster(t, kfake.DataDir(dir), kfake.Ports(p))
			},
		},
	}
	clients := map[string][]pos{
		"alpha":     {{30000142, 0, 5}, {30000142, 7, 12}, {30002187, 3, 1 << 40}},
		"beta":      {{30000142, 0, 6}},
		"team/eu/2": {{31000005, 15, 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			c := newCluster(t, kfake.DataDir(dir))
			opts := offsets.Options{Topic: topicName(t)}
			s := openStore(t, c.ListenAddrs(), opts)
			for client, ps := range clients {
				commit(t, s, client, positions(ps...)...)
			}
			// A later commit of one system, and a deleted client.
			commit(t, s, "alpha", pos{30000142, 7, 13}.position())
			commit(t, s, "gone", pos{1, 0, 1}.position())
			if err := s.DeleteClient(testCtx(t), "gone"); err != nil {
				t.Fatal(err)
			}
			before := map[string][]offsets.Position{}
			for client := range clients {
				before[client] = s.Positions(client)
			}
			if got := strip(before["alpha"]); len(got) != 3 || got[1] != (pos{30000142, 7, 13}) {
				t.Fatalf("alpha before restart = %v", got)
			}
			s.Close()

			c = tc.restart(t, c, dir)
			s2 := openStore(t, c.ListenAddrs(), opts)
			for client, want := range before {
				if got := s2.Positions(client); !samePositions(got, want) {
					t.Errorf("after restart Positions(%q) = %v, want %v", client, got, want)
				}
			}
			wantPositions(t, s2, "gone")
			// The restarted store keeps working.
			commit(t, s2, "beta", pos{30000142, 0, 7}.position())
			wantPositions(t, s2, "beta", pos{30000142, 0, 7})
		})
	}
}

func TestTopicCreatedCompacted(t *testing.T) {
	c := newCluster(t)
	s := openStore(t, c.ListenAddrs(), offsets.Options{})
	if s.Topic() != "killfeed-offsets" {
		t.Errorf("default topic = %q, want killfeed-offsets", s.Topic())
	}
	cfg := describeTopicConfig(t, c.ListenAddrs(), s.Topic())
	if cfg["cleanup.policy"] != "compact" {
		t.Errorf("cleanup.policy = %q, want compact", cfg["cleanup.policy"])
	}
	if cfg["retention.ms"] != "-1" {
		t.Errorf("retention.ms = %q, want -1 (positions must not expire by time)", cfg["retention.ms"])
	}
}

func TestExistingTopicPolicy(t *testing.T) {
	tests := []struct {
		name    string
		configs map[string]*string
		wantErr bool
	}{
		{"cleanup.policy=delete is refused", map[string]*string{"cleanup.policy": kadm.StringPtr("delete")}, true},
		{"broker default policy is refused", nil, true},
		{"cleanup.policy=compact is accepted", map[string]*string{"cleanup.policy": kadm.StringPtr("compact")}, false},
		{"cleanup.policy=compact,delete is accepted", map[string]*string{"cleanup.policy": kadm.StringPtr("compact,delete")}, false},
	}
	c := newCluster(t)
	adm := kadm.NewClient(rawClient(t, c.ListenAddrs()))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			topic := topicName(t)
			if _, err := adm.CreateTopic(testCtx(t), 1, 1, tc.configs, topic); err != nil {
				t.Fatalf("creating %s: %v", topic, err)
			}
			s, err := offsets.Open(testCtx(t), c.ListenAddrs(), offsets.Options{Topic: topic})
			if !tc.wantErr {
				if err != nil {
					t.Fatalf("Open on a compacted topic: %v", err)
				}
				defer s.Close()
				commit(t, s, "c1", pos{1, 0, 5}.position())
				wantPositions(t, s, "c1", pos{1, 0, 5})
				return
			}
			if err == nil {
				s.Close()
				t.Fatal("Open accepted a topic that is not compacted")
			}
			if msg := err.Error(); !strings.Contains(msg, "compact") || !strings.Contains(msg, topic) {
				t.Errorf("Open error %q should name the topic and say it must be compacted", msg)
			}
		})
	}
}

func TestOpenGivesUpWithContext(t *testing.T) {
	// A port nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	begin := time.Now()
	s, err := offsets.Open(ctx, []string{addr}, offsets.Options{})
	if err == nil {
		s.Close()
		t.Fatal("Open succeeded without a broker")
	}
	if took := time.Since(begin); took > 10*time.Second {
		t.Errorf("Open took %v to give up, want about the context's 2s", took)
	}
}

// An operator may purge the offsets topic (DeleteRecords): Open must not wait
// for records that no longer exist.
func TestOpenAfterRecordsDeleted(t *testing.T) {
	tests := []struct {
		name      string
		deleteTo  int64 // records below this offset are deleted
		wantAlpha []pos
		wantBeta  []pos
	}{
		{"older records deleted", 2, nil, []pos{{1, 0, 20}}},
		{"every record deleted", 3, nil, nil},
	}
	c := newCluster(t)
	adm := kadm.NewClient(rawClient(t, c.ListenAddrs()))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := offsets.Options{Topic: topicName(t)}
			s := openStore(t, c.ListenAddrs(), opts)
			commit(t, s, "alpha", pos{1, 0, 10}.position()) // offset 0
			commit(t, s, "alpha", pos{1, 0, 11}.position()) // offset 1
			commit(t, s, "beta", pos{1, 0, 20}.position())  // offset 2
			s.Close()

			var to kadm.Offsets
			to.AddOffset(opts.Topic, 0, tc.deleteTo, -1)
			resps, err := adm.DeleteRecords(testCtx(t), to)
			if err == nil {
				err = resps.Error()
			}
			if err != nil {
				t.Fatalf("deleting records: %v", err)
			}

			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			s2, err := offsets.Open(ctx, c.ListenAddrs(), opts)
			if err != nil {
				t.Fatalf("Open after records were deleted: %v", err)
			}
			defer s2.Close()
			wantPositions(t, s2, "alpha", tc.wantAlpha...)
			wantPositions(t, s2, "beta", tc.wantBeta...)
			commit(t, s2, "alpha", pos{1, 0, 12}.position())
			syncStore(t, s2)
			wantPositions(t, s2, "alpha", pos{1, 0, 12})
		})
	}
}

func TestCompactionKeepsLatest(t *testing.T) {
	c := newCluster(t)
	opts := offsets.Options{Topic: topicName(t)}
	s := openStore(t, c.ListenAddrs(), opts)

	commit(t, s, "steady", pos{1, 0, 42}.position())
	commit(t, s, "deleted", pos{1, 0, 7}.position(), pos{2, 0, 8}.position())
	if err := s.DeleteClient(testCtx(t), "deleted"); err != nil {
		t.Fatal(err)
	}
	const n = 200
	for i := range n {
		commit(t, s, "busy", pos{30000142, 0, int64(i)}.position(), pos{30000142, 1, int64(2 * i)}.position())
	}
	commit(t, s, "busy", pos{30002187, 0, 1}.position())
	before := countRecords(t, c.ListenAddrs(), opts.Topic)

	c.Compact()
	after := countRecords(t, c.ListenAddrs(), opts.Topic)
	if after >= before/10 {
		t.Fatalf("compaction left %d of %d records; the test needs it to drop the superseded ones", after, before)
	}

	s2 := openStore(t, c.ListenAddrs(), opts)
	for _, st := range []*offsets.Store{s, s2} {
		wantPositions(t, st, "busy", pos{30000142, 0, n - 1}, pos{30000142, 1, 2 * (n - 1)}, pos{30002187, 0, 1})
		wantPositions(t, st, "steady", pos{1, 0, 42})
		wantPositions(t, st, "deleted")
	}
	// The store tails a compacted log: new commits still arrive.
	commit(t, s2, "busy", pos{30000142, 0, 1000}.position())
	syncStore(t, s)
	wantPositions(t, s, "busy", pos{30000142, 0, 1000}, pos{30000142, 1, 2 * (n - 1)}, pos{30002187, 0, 1})
}

func TestDeleteClient(t *testing.T) {
	c := newCluster(t)
	opts := offsets.Options{Topic: topicName(t)}
	s := openStore(t, c.ListenAddrs(), opts)
	ctx := testCtx(t)

	commit(t, s, "doomed", pos{1, 0, 10}.position(), pos{2, 3, 20}.position())
	commit(t, s, "doomed", pos{1, 0, 11}.position())
	commit(t, s, "bystander", pos{1, 0, 5}.position())
	if err := s.DeleteClient(ctx, "doomed"); err != nil {
		t.Fatalf("DeleteClient: %v", err)
	}
	wantPositions(t, s, "doomed")
	wantPositions(t, s, "bystander", pos{1, 0, 5})
	if err := s.DeleteClient(ctx, "never-seen"); err != nil {
		t.Errorf("DeleteClient of an unknown client: %v", err)
	}
	if got := s.MinOffsets(); !maps.Equal(got, map[int32]int64{0: 5}) {
		t.Errorf("MinOffsets after delete = %v, want only the bystander's", got)
	}

	s2 := openStore(t, c.ListenAddrs(), opts)
	wantPositions(t, s2, "doomed")
	wantPositions(t, s2, "bystander", pos{1, 0, 5})

	// The id can be used again, and starts from scratch: the deleted
	// systems do not come back.
	commit(t, s2, "doomed", pos{3, 0, 1}.position())
	wantPositions(t, s2, "doomed", pos{3, 0, 1})
	syncStore(t, s)
	wantPositions(t, s, "doomed", pos{3, 0, 1})
	s3 := openStore(t, c.ListenAddrs(), opts)
	wantPositions(t, s3, "doomed", pos{3, 0, 1})
}

// The store applies its own writes as soon as Kafka acknowledges them and
// reads them again later from the topic; the late read of an older record
// must not undo a newer write.
func TestLateOlderRecordDoesNotUndo(t *testing.T) {
	tests := []struct {
		name   string
		second func(ctx context.Context, s *offsets.Store) error
		want   []pos
	}{
		{
			name:   "delete is not undone",
			second: func(ctx context.Context, s *offsets.Store) error { return s.DeleteClient(ctx, "c1") },
			want:   nil,
		},
		{
			name: "newer commit is not rolled back",
			second: func(ctx context.Context, s *offsets.Store) error {
				return s.Commit(ctx, "c1", positions(pos{1, 0, 20}))
			},
			want: []pos{{1, 0, 20}},
		},
	}
	c := newCluster(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			g := newFetchGate(0, 1)
			opts := offsets.Options{Topic: topicName(t), KafkaOpts: []kgo.Opt{kgo.WithHooks(g)}}
			s := openStore(t, c.ListenAddrs(), opts)
			t.Cleanup(g.releaseAll) // before the store closes: cleanups run last first

			commit(t, s, "c1", pos{1, 0, 10}.position()) // offset 0
			g.waitReached(t, 0)                          // the tail holds a fetch with only offset 0
			if err := tc.second(ctx, s); err != nil {    // offset 1, applied at once
				t.Fatal(err)
			}
			wantPositions(t, s, "c1", tc.want...)

			g.release(0)
			g.waitReached(t, 1) // offset 1 is held back from the tail
			waitConsumed(t, s, 1)
			wantPositions(t, s, "c1", tc.want...)

			g.release(1)
			syncStore(t, s)
			wantPositions(t, s, "c1", tc.want...)
			wantPositions(t, openStore(t, c.ListenAddrs(), offsets.Options{Topic: opts.Topic}), "c1", tc.want...)
		})
	}
}

func TestReplicasSeeEachOther(t *testing.T) {
	c := newCluster(t)
	opts := offsets.Options{Topic: topicName(t)}
	a := openStore(t, c.ListenAddrs(), opts)
	b := openStore(t, c.ListenAddrs(), opts)

	commit(t, a, "c1", pos{1, 0, 10}.position(), pos{2, 0, 20}.position())
	syncStore(t, b)
	wantPositions(t, b, "c1", pos{1, 0, 10}, pos{2, 0, 20})

	// B continues the client where A left it, then A reads B's commit.
	commit(t, b, "c1", pos{2, 0, 21}.position())
	syncStore(t, a)
	wantPositions(t, a, "c1", pos{1, 0, 10}, pos{2, 0, 21})

	commit(t, a, "c2", pos{1, 0, 3}.position())
	syncStore(t, b)
	if got := b.MinOffsets(); !maps.Equal(got, map[int32]int64{0: 3}) {
		t.Errorf("B.MinOffsets = %v, want {0:3} from A's commit", got)
	}

	if err := b.DeleteClient(testCtx(t), "c1"); err != nil {
		t.Fatal(err)
	}
	syncStore(t, a)
	wantPositions(t, a, "c1")
	wantPositions(t, a, "c2", pos{1, 0, 3})
}

func TestMinOffsets(t *testing.T) {
	tests := []struct {
		name    string
		clients map[string][]pos
		deleted []string
		want    map[int32]int64
	}{
		{
			name: "no clients",
			want: map[int32]int64{},
		},
		{
			name:    "lowest across one client's systems",
			clients: map[string][]pos{"c1": {{1, 0, 50}, {2, 0, 30}, {3, 0, 70}}},
			want:    map[int32]int64{0: 30},
		},
		{
			name: "per partition across clients",
			clients: map[string][]pos{
				"c1": {{1, 0, 50}, {1, 1, 7}},
				"c2": {{5, 0, 40}, {5, 2, 9}},
				"c3": {{6, 1, 8}},
			},
			want: map[int32]int64{0: 40, 1: 7, 2: 9},
		},
		{
			name: "a deleted client no longer holds the minimum down",
			clients: map[string][]pos{
				"slow": {{1, 0, 5}},
				"fast": {{1, 0, 100}},
			},
			deleted: []string{"slow"},
			want:    map[int32]int64{0: 100},
		},
		{
			name:    "offset zero counts",
			clients: map[string][]pos{"c1": {{1, 4, 0}}, "c2": {{2, 4, 9}}},
			want:    map[int32]int64{4: 0},
		},
	}
	c := newCluster(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := offsets.Options{Topic: topicName(t)}
			s := openStore(t, c.ListenAddrs(), opts)
			for client, ps := range tc.clients {
				commit(t, s, client, positions(ps...)...)
			}
			for _, client := range tc.deleted {
				if err := s.DeleteClient(testCtx(t), client); err != nil {
					t.Fatal(err)
				}
			}
			if got := s.MinOffsets(); !maps.Equal(got, tc.want) {
				t.Errorf("MinOffsets = %v, want %v", got, tc.want)
			}
			if got := openStore(t, c.ListenAddrs(), opts).MinOffsets(); !maps.Equal(got, tc.want) {
				t.Errorf("after reopen MinOffsets = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestMalformedRecordsSkipped(t *testing.T) {
	tests := []struct {
		name  string
		key   []byte
		value []byte
	}{
		{"key without separator", []byte("nosep"), []byte(`{"offsets":{"0":1}}`)},
		{"system not a number", []byte("bad/abc"), []byte(`{"offsets":{"0":1}}`)},
		{"system zero", []byte("bad/0"), []byte(`{"offsets":{"0":1}}`)},
		{"negative system", []byte("bad/-5"), []byte(`{"offsets":{"0":1}}`)},
		{"empty client id", []byte("/5"), []byte(`{"offsets":{"0":1}}`)},
		{"no key", nil, []byte(`{"offsets":{"0":1}}`)},
		{"value not json", []byte("bad/5"), []byte(`{"offsets":`)},
		{"empty value", []byte("bad/5"), []byte{}},
		{"offsets of the wrong type", []byte("bad/5"), []byte(`{"offsets":"1"}`)},
		{"partition not a number", []byte("bad/5"), []byte(`{"offsets":{"x":1}}`)},
		{"negative offset", []byte("bad/5"), []byte(`{"offsets":{"0":-1}}`)},
		{"negative partition", []byte("bad/5"), []byte(`{"offsets":{"-1":1}}`)},
		{"garbage over a good record", []byte("good/1"), []byte("\x00\xff")},
		{"negative offset over a good record", []byte("good/1"), []byte(`{"offsets":{"0":-7}}`)},
	}
	c := newCluster(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := offsets.Options{Topic: topicName(t)}
			live := openStore(t, c.ListenAddrs(), opts) // creates the topic, then tails it
			commit(t, live, "good", pos{1, 0, 50}.position())

			raw := rawClient(t, c.ListenAddrs())
			if err := raw.ProduceSync(testCtx(t), &kgo.Record{Topic: opts.Topic, Key: tc.key, Value: tc.value}).FirstErr(); err != nil {
				t.Fatalf("producing the malformed record: %v", err)
			}
			commit(t, live, "good", pos{2, 0, 60}.position())
			commit(t, live, "later", pos{1, 0, 70}.position())

			rebuilt := openStore(t, c.ListenAddrs(), opts)
			syncStore(t, live)
			for name, s := range map[string]*offsets.Store{"tailing store": live, "rebuilt store": rebuilt} {
				wantPositions(t, s, "good", pos{1, 0, 50}, pos{2, 0, 60})
				wantPositions(t, s, "later", pos{1, 0, 70})
				wantPositions(t, s, "bad")
				wantPositions(t, s, "")
				if got, want := s.MinOffsets(), map[int32]int64{0: 50}; !maps.Equal(got, want) {
					t.Errorf("%s: MinOffsets = %v, want %v: a malformed record counted", name, got, want)
				}
			}
		})
	}
}

func TestCommitFailsWhenBrokerRejects(t *testing.T) {
	tests := []struct {
		name    string
		err     *kerr.Error
		timeout time.Duration // the caller's deadline
		wantIs  error
	}{
		{"non-retriable error fails at once", kerr.InvalidRecord, testTimeout, kerr.InvalidRecord},
		{"retriable error fails at the caller's deadline", kerr.NotEnoughReplicas, 1500 * time.Millisecond, context.DeadlineExceeded},
	}
	c := newCluster(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := offsets.Options{Topic: topicName(t)}
			s := openStore(t, c.ListenAddrs(), opts)
			commit(t, s, "c1", pos{1, 0, 10}.position(), pos{2, 0, 20}.position())
			before := s.Positions("c1")

			var rejected atomic.Int64
			reject := atomic.Bool{}
			reject.Store(true)
			c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
				c.KeepControl()
				if !reject.Load() {
					return nil, nil, false
				}
				rejected.Add(1)
				return produceError(req.(*kmsg.ProduceRequest), tc.err), nil, true
			})
			t.Cleanup(func() { reject.Store(false) })

			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			begin := time.Now()
			err := s.Commit(ctx, "c1", positions(pos{1, 0, 11}, pos{2, 0, 21}, pos{3, 0, 31}))
			took := time.Since(begin)
			if err == nil {
				t.Fatal("Commit succeeded while the broker rejected every produce")
			}
			if !errors.Is(err, tc.wantIs) {
				t.Errorf("Commit error = %v, want it to wrap %v", err, tc.wantIs)
			}
			// franz-go fails a cancelled record only when it next considers
			// resending it, after a metadata refresh (at most every 5s by
			// default): a late error, but an error.
			if limit := tc.timeout + 8*time.Second; took > limit {
				t.Errorf("Commit took %v to fail, want under %v", took, limit)
			}
			if rejected.Load() == 0 {
				t.Fatal("the broker never saw the produce")
			}
			if got := s.Positions("c1"); !samePositions(got, before) {
				t.Errorf("after a failed commit Positions = %v, want them unchanged %v", got, before)
			}

			// The broker recovers: committing again works, and nothing of the
			// failed commit shows up later.
			reject.Store(false)
			commit(t, s, "c1", pos{2, 0, 22}.position())
			syncStore(t, s)
			wantPositions(t, s, "c1", pos{1, 0, 10}, pos{2, 0, 22})
			wantPositions(t, openStore(t, c.ListenAddrs(), opts), "c1", pos{1, 0, 10}, pos{2, 0, 22})
		})
	}
}

// produceError answers a produce request with code on every partition.
func produceError(req *kmsg.ProduceRequest, code *kerr.Error) *kmsg.ProduceResponse {
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	for _, rt := range req.Topics {
		st := kmsg.NewProduceResponseTopic()
		st.Topic, st.TopicID = rt.Topic, rt.TopicID
		for _, rp := range rt.Partitions {
			sp := kmsg.NewProduceResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.ErrorCode = code.Code
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}

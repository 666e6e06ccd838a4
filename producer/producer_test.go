package producer_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/killfeed/killfeed/internal/killmail"
	"github.com/killfeed/killfeed/producer"
)

func TestMurmur2MatchesKafka(t *testing.T) {
	// org.apache.kafka.common.utils.UtilsTest#testMurmur2
	for in, want := range map[string]int32{
		"21":                         -973932308,
		"foobar":                     -790332482,
		"a-little-bit-long-string":   -985981536,
		"a-little-bit-longer-string": -1486304829,
		"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
		"abc": 479470107,
	} {
		if got := int32(murmur2([]byte(in))); got != want {
			t.Errorf("murmur2(%q) = %d, want %d", in, got, want)
		}
	}
}

func newProducer(t testing.TB, cl *kgo.Client, opts producer.Options) *producer.Producer {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	p, err := producer.New(cl, opts)
	if err != nil {
		t.Fatalf("producer.New: %v", err)
	}
	return p
}

func run(t testing.TB, p *producer.Producer, src producer.Source) producer.Stats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stats, err := p.Run(ctx, src)
	if err != nil {
		t.Fatalf("Run: %v (stats %+v)", err, stats)
	}
	checkBalance(t, stats)
	return stats
}

// checkBalance asserts that every record read is accounted for.
func checkBalance(t testing.TB, s producer.Stats) {
	t.Helper()
	if got := s.Produced + s.Rejected + s.Duplicates + s.Failed + s.Unconfirmed; got != s.Read {
		t.Errorf("read %d records but produced+rejected+duplicates+failed+unconfirmed = %d: %+v", s.Read, got, s)
	}
	var byReason int64
	for _, n := range s.RejectedBy {
		byReason += n
	}
	if byReason != s.Rejected {
		t.Errorf("RejectedBy sums to %d, Rejected is %d", byReason, s.Rejected)
	}
}

func TestRunWritesKeyedRecords(t *testing.T) {
	const partitions = 16
	c := newCluster(t, partitions, "killmails")
	cl := newClient(t, c)
	systems := []int64{30000142, 30002187, 30002659, 30002510, 30002053, 30000144, 30002813, 30002768, 31000005, 31002600, 30004999}
	var inputs, want []string
	id := int64(128000000)
	for round := range 3 {
		for _, sys := range systems {
			id++
			in := km(id, sys)
			// Feed every shape a source may deliver.
			switch round {
			case 1:
				in = fmt.Sprintf(`{"killID":%d,"killmail":%s,"zkb":{"hash":"p"}}`, id, strings.Replace(in, `"solar_system_id"`, `"system_id"`, 1))
			case 2:
				in = fmt.Sprintf(`{"killmail_id":%d,"hash":"h","esi":%s,"zkb":{"hash":"r"},"sequence_id":%d,"uploaded_at":1748781296}`, id, in, id)
			}
			n, err := killmail.Normalize([]byte(in))
			if err != nil {
				t.Fatal(err)
			}
			inputs = append(inputs, in)
			want = append(want, string(n.JSON))
		}
	}

	stats := run(t, newProducer(t, cl, producer.Options{}), &sliceSource{items: inputs})
	if stats.Produced != int64(len(inputs)) || stats.Rejected != 0 || stats.Duplicates != 0 {
		t.Fatalf("stats = %+v, want %d produced and nothing else", stats, len(inputs))
	}
	if stats.Bytes == 0 {
		t.Errorf("Bytes = 0")
	}

	recs := readTopic(t, c, "killmails")
	if len(recs) != len(inputs) {
		t.Fatalf("topic has %d records, want %d", len(recs), len(inputs))
	}
	franz := kgo.StickyKeyPartitioner(nil).ForTopic("killmails")
	lastIDBySystem := map[int64]int64{}
	var got []string
	for _, r := range recs {
		sys, err := killmail.ParseKey(r.Key)
		if err != nil {
			t.Fatalf("record key %q: %v", r.Key, err)
		}
		if wantP := kafkaPartition(r.Key, partitions); r.Partition != wantP {
			t.Errorf("system %d landed on partition %d; Kafka's murmur2 partitioner puts it on %d", sys, r.Partition, wantP)
		}
		if fp := franz.Partition(r, partitions); int32(fp) != r.Partition {
			t.Errorf("system %d on partition %d, franz-go's key partitioner says %d", sys, r.Partition, fp)
		}
		n, err := killmail.Normalize(r.Value)
		if err != nil {
			t.Fatalf("record value is not a killmail: %v", err)
		}
		if n.SystemID != sys {
			t.Errorf("record keyed %d holds a killmail in system %d", sys, n.SystemID)
		}
		if len(r.Headers) != 1 || r.Headers[0].Key != producer.HeaderKillmailID || string(r.Headers[0].Value) != strconv.FormatInt(n.ID, 10) {
			t.Errorf("killmail %d has headers %v, want %s=%d", n.ID, r.Headers, producer.HeaderKillmailID, n.ID)
		}
		if n.ID < lastIDBySystem[sys] {
			t.Errorf("system %d: killmail %d stored after %d; want the source's order", sys, n.ID, lastIDBySystem[sys])
		}
		lastIDBySystem[sys] = n.ID
		got = append(got, string(r.Value))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("record values differ from the normalised inputs")
	}
}

func TestRunDropsDuplicates(t *testing.T) {
	c := newCluster(t, 4, "killmails")
	cl := newClient(t, c)
	same := km(5, 30000142)
	inputs := []string{
		same,
		km(6, 30000142),
		same,
		`{"killmail_id":5,"hash":"h","esi":` + same + `,"zkb":{}}`,            // the same killmail via R2Z2
		strings.Replace(same, `"killmail_id"`, `"killID"`, 1),                 // and via an older package
		strings.Replace(km(5, 30000142), `"totalValue":10000.01`, `"x":1`, 1), // re-published with other zkb values
		km(7, 31000001),
	}
	stats := run(t, newProducer(t, cl, producer.Options{}), &sliceSource{items: inputs})
	if stats.Produced != 3 || stats.Duplicates != 4 {
		t.Errorf("produced %d, duplicates %d; want 3 and 4", stats.Produced, stats.Duplicates)
	}
	var ids []int64
	for _, r := range readTopic(t, c, "killmails") {
		n, _ := killmail.Normalize(r.Value)
		ids = append(ids, n.ID)
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []int64{5, 6, 7}) {
		t.Errorf("topic holds killmails %v, want each of 5, 6, 7 once", ids)
	}
}

func synthetic(first, count int64) producer.Source {
	return producer.NewSynthetic(producer.SyntheticOptions{FirstID: first, Count: count, Seed: uint64(first)})
}

// A producer restarted after a crash must not store again what its previous
// run stored, even though the source re-delivers it.
func TestDuplicatesDroppedAcrossRestart(t *testing.T) {
	c := newCluster(t, 16, "killmails")

	first := newClient(t, c)
	s1 := run(t, newProducer(t, first, producer.Options{}), synthetic(1, 100))
	if s1.Produced != 100 {
		t.Fatalf("first run produced %d, want 100", s1.Produced)
	}
	first.Close()

	// The restarted producer's source overlaps the first run by 50.
	second := newClient(t, c)
	s2 := run(t, newProducer(t, second, producer.Options{}), synthetic(51, 100))
	if s2.Reread != 100 {
		t.Errorf("read back %d ids, want all 100 in the topic", s2.Reread)
	}
	if s2.Produced != 50 || s2.Duplicates != 50 {
		t.Errorf("after restart: produced %d, duplicates %d; want 50 and 50", s2.Produced, s2.Duplicates)
	}
	seen := map[int64]bool{}
	for _, r := range readTopic(t, c, "killmails") {
		n, _ := killmail.Normalize(r.Value)
		if seen[n.ID] {
			t.Errorf("killmail %d is in the topic twice", n.ID)
		}
		seen[n.ID] = true
	}
	if len(seen) != 150 {
		t.Errorf("topic holds %d distinct killmails, want 150", len(seen))
	}

	// Without reading back, the restart would store duplicates: the
	// behaviour above is the read-back's doing.
	third := newClient(t, c)
	s3 := run(t, newProducer(t, third, producer.Options{Reread: -1}), synthetic(51, 10))
	if s3.Produced != 10 {
		t.Errorf("with Reread disabled, produced %d of 10 known killmails; want all 10", s3.Produced)
	}
}

// Reading back is bounded: only the last Reread records are remembered.
func TestRereadIsBounded(t *testing.T) {
	c := newCluster(t, 1, "killmails")
	run(t, newProducer(t, newClient(t, c), producer.Options{}), synthetic(1, 20))

	s := run(t, newProducer(t, newClient(t, c), producer.Options{Reread: 5}), synthetic(1, 20))
	if s.Reread != 5 {
		t.Errorf("read back %d ids, want 5", s.Reread)
	}
	if s.Duplicates != 5 || s.Produced != 15 {
		t.Errorf("produced %d, duplicates %d; want 15 (ids 1-15, beyond the window) and 5 (ids 16-20)", s.Produced, s.Duplicates)
	}
}

// Records other tools wrote (no killmail_id header) are recognised too.
func TestRereadRecognisesForeignRecords(t *testing.T) {
	c := newCluster(t, 3, "killmails")
	cl := newClient(t, c)
	for _, id := range []int64{1, 2, 3} {
		n, _ := killmail.Normalize([]byte(km(id, 30000142)))
		rec := &kgo.Record{Topic: "killmails", Key: killmail.Key(n.SystemID), Value: n.JSON}
		if err := cl.ProduceSync(context.Background(), rec).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	// And one that is not a killmail at all: skipped, not fatal.
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: "killmails", Key: []byte("x"), Value: []byte("garbage")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	s := run(t, newProducer(t, newClient(t, c), producer.Options{}), &sliceSource{items: []string{km(2, 30000142), km(4, 30000142)}})
	if s.Reread != 3 || s.Produced != 1 || s.Duplicates != 1 {
		t.Errorf("reread %d, produced %d, duplicates %d; want 3, 1, 1", s.Reread, s.Produced, s.Duplicates)
	}
}

func TestRunRereadMissingTopic(t *testing.T) {
	c := newCluster(t, 1, "other")
	p := newProducer(t, newClient(t, c), producer.Options{})
	_, err := p.Run(context.Background(), &sliceSource{items: []string{km(1, 2)}})
	if err == nil || !strings.Contains(err.Error(), `topic "killmails" does not exist`) {
		t.Errorf("Run on a missing topic: %v; want an error saying the topic does not exist", err)
	}
}

func TestRunCountsRejections(t *testing.T) {
	c := newCluster(t, 4, "killmails")
	inputs := []string{
		km(1, 30000142),
		`{"killmail_id":2,"victim":{}}`,
		`not json`,
		`{"killmail_id":3,"solar_system_id":0}`,
		`{"killID":4,"killmail":{"killmail_id":5,"solar_system_id":30000142}}`,
		`[1,2]`,
		`{"solar_system_id":30000142}`,
		`{"killmail_id":6,"system_id":-1}`,
		km(8, 30002187),
		`{"killmail_id":9}`,
	}
	stats := run(t, newProducer(t, newClient(t, c), producer.Options{LogRejections: 3}), &sliceSource{items: inputs})
	want := map[string]int64{
		string(killmail.ReasonNoSystemID):   2,
		string(killmail.ReasonInvalidJSON):  1,
		string(killmail.ReasonBadSystemID):  2,
		string(killmail.ReasonIDMismatch):   1,
		string(killmail.ReasonNotObject):    1,
		string(killmail.ReasonNoKillmailID): 1,
	}
	if stats.Produced != 2 || stats.Rejected != 8 {
		t.Errorf("produced %d, rejected %d; want 2 and 8", stats.Produced, stats.Rejected)
	}
	for reason, n := range want {
		if stats.RejectedBy[reason] != n {
			t.Errorf("RejectedBy[%s] = %d, want %d (all: %v)", reason, stats.RejectedBy[reason], n, stats.RejectedBy)
		}
	}
	if len(stats.Rejections) != 3 {
		t.Fatalf("kept %d rejection samples, want LogRejections = 3", len(stats.Rejections))
	}
	first := stats.Rejections[0]
	if first.Where != "item 2" || first.Reason != string(killmail.ReasonNoSystemID) ||
		!strings.Contains(first.Err.Error(), "no solar_system_id or system_id") {
		t.Errorf("first rejection = %+v, want item 2, no_system_id", first)
	}
	if n := len(readTopic(t, c, "killmails")); n != 2 {
		t.Errorf("topic holds %d records, want the 2 valid killmails", n)
	}
}

func TestRunRejectsOversizedKillmails(t *testing.T) {
	c := newCluster(t, 1, "killmails")
	big := strings.Replace(km(2, 30000142), `"items":[]`, `"items":[`+strings.Repeat(`{"flag":5,"item_type_id":34,"quantity_dropped":1,"singleton":0},`, 20)+`{}]`, 1)
	stats := run(t, newProducer(t, newClient(t, c), producer.Options{MaxValueBytes: 1000}),
		&sliceSource{items: []string{km(1, 30000142), big}})
	if stats.Produced != 1 || stats.RejectedBy[producer.ReasonTooLarge] != 1 {
		t.Errorf("produced %d, rejected as too large %d; want 1 and 1", stats.Produced, stats.RejectedBy[producer.ReasonTooLarge])
	}
}

func TestRunNDJSONWithBadLines(t *testing.T) {
	c := newCluster(t, 8, "killmails")
	lines := []string{
		km(1, 30000142),                 // 1
		"",                              // 2: blank lines are skipped
		"   ",                           // 3
		"{\"killmail_id\":2,",           // 4: truncated
		km(3, 30002187) + "\r",          // 5: written on Windows
		`{"killmail_id":4,"victim":{}}`, // 6: no system
		`{"killID":5,"killmail":` + km(5, 31000001) + `,"zkb":{}}`, // 7
		"x" + strings.Repeat(" ", 1200),                            // 8: longer than MaxLineBytes below
		km(6, 30002659),                                            // 9: last line, no newline
	}
	path := filepath.Join(t.TempDir(), "kills.ndjson")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	src := producer.NewNDJSON(f, producer.NDJSONOptions{Name: "kills.ndjson", MaxLineBytes: 1000})
	stats := run(t, newProducer(t, newClient(t, c), producer.Options{}), src)
	if stats.Read != 7 || stats.Produced != 4 || stats.Rejected != 3 {
		t.Errorf("read %d, produced %d, rejected %d; want 7 (blank lines are not records), 4, 3", stats.Read, stats.Produced, stats.Rejected)
	}
	var where []string
	for _, r := range stats.Rejections {
		where = append(where, r.Where+" "+r.Reason)
	}
	want := []string{"kills.ndjson:4 invalid_json", "kills.ndjson:6 no_system_id", "kills.ndjson:8 line_too_long"}
	if !slices.Equal(where, want) {
		t.Errorf("rejections at %q, want %q", where, want)
	}
}

// A produce the cluster refuses is an error, never a silent loss.
func TestRunReturnsProduceFailures(t *testing.T) {
	c := newCluster(t, 2, "killmails")
	c.ControlKey(int16(kmsg.Produce), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kreq.(*kmsg.ProduceRequest)
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.InvalidRecord.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	p := newProducer(t, newClient(t, c), producer.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stats, err := p.Run(ctx, synthetic(1, 1000))
	if !errors.Is(err, kerr.InvalidRecord) {
		t.Fatalf("Run = %v, want an error wrapping %v", err, kerr.InvalidRecord)
	}
	if !strings.Contains(err.Error(), "not stored") || stats.Failed == 0 || stats.Produced != 0 {
		t.Errorf("error %q, stats %+v: want failures counted and reported", err, stats)
	}
	if stats.Read >= 1000 {
		t.Errorf("read all %d records after the first failure; want Run to stop reading", stats.Read)
	}
	checkBalance(t, stats)
}

// Stopping a run (Ctrl-C) flushes what was read: nothing read is lost.
func TestRunStopsCleanlyOnCancel(t *testing.T) {
	c := newCluster(t, 16, "killmails")
	p := newProducer(t, newClient(t, c), producer.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	stats, err := p.Run(ctx, producer.NewSynthetic(producer.SyntheticOptions{FirstID: 1}))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run = %v, want the context's error", err)
	}
	checkBalance(t, stats)
	if stats.Produced == 0 || stats.Produced != stats.Read {
		t.Errorf("read %d, produced %d; want everything read produced", stats.Read, stats.Produced)
	}
	if n := int64(len(readTopic(t, c, "killmails"))); n != stats.Produced {
		t.Errorf("topic holds %d records, Stats.Produced is %d", n, stats.Produced)
	}
}

func TestRunReportsProgress(t *testing.T) {
	c := newCluster(t, 4, "killmails")
	var mu sync.Mutex
	var reports []producer.Stats
	var logged bytes.Buffer
	p := newProducer(t, newClient(t, c), producer.Options{
		ProgressInterval: 50 * time.Millisecond,
		Progress: func(s producer.Stats) {
			mu.Lock()
			defer mu.Unlock()
			reports = append(reports, s)
		},
		Logger: slog.New(slog.NewTextHandler(&syncWriter{w: &logged, mu: &mu}, nil)),
	})
	run(t, p, producer.NewSynthetic(producer.SyntheticOptions{FirstID: 1, Count: 100, Rate: 250}))
	mu.Lock()
	defer mu.Unlock()
	if len(reports) < 3 {
		t.Fatalf("got %d progress reports in a 0.4s run at a 50ms interval, want at least 3", len(reports))
	}
	for i := 1; i < len(reports); i++ {
		if reports[i].Read < reports[i-1].Read || reports[i].Elapsed <= reports[i-1].Elapsed {
			t.Errorf("report %d went backwards: %+v after %+v", i, reports[i], reports[i-1])
		}
	}
	if !strings.Contains(logged.String(), "produce progress") || !strings.Contains(logged.String(), "per_second=") {
		t.Errorf("log has no progress line:\n%s", logged.String())
	}
}

type syncWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func TestRunReportsSourceErrors(t *testing.T) {
	c := newCluster(t, 1, "killmails")
	p := newProducer(t, newClient(t, c), producer.Options{})
	boom := errors.New("disk on fire")
	_, err := p.Run(context.Background(), producer.NewNDJSON(&failingReader{data: km(1, 2) + "\n", err: boom}, producer.NDJSONOptions{}))
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("Run = %v, want the read error, naming line 2", err)
	}
}

type failingReader struct {
	data string
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if r.data == "" {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestNewRefusesUnsafeClients(t *testing.T) {
	c := newCluster(t, 1, "killmails")
	for name, opts := range map[string][]kgo.Opt{
		"idempotence disabled": {kgo.DisableIdempotentWrite()},
		"leader acks":          {kgo.DisableIdempotentWrite(), kgo.RequiredAcks(kgo.LeaderAck())},
		"transactional":        {kgo.TransactionalID("tx")},
		"consuming":            {kgo.ConsumeTopics("killmails")},
		"group member":         {kgo.ConsumerGroup("g"), kgo.ConsumeTopics("killmails")},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := producer.New(newClient(t, c, opts...), producer.Options{}); err == nil {
				t.Errorf("New accepted a client with %s", name)
			}
		})
	}
	if _, err := producer.New(nil, producer.Options{}); err == nil {
		t.Errorf("New accepted a nil client")
	}
}

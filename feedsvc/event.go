package feedsvc

import (
	"sync/atomic"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/killfeed/killfeed/internal/topics"
)

// partitionBits is how many low bits of an event id hold the partition.
const partitionBits = 10

// Check at compile time that every allowed partition fits in partitionBits.
var _ = [1]struct{}{}[topics.MaxPartitions>>partitionBits-1]

// eventID packs a Kafka position into an event id.
func eventID(partition int32, offset int64) int64 {
	return offset<<partitionBits | int64(partition)
}

// splitEventID undoes eventID.
func splitEventID(id int64) (partition int32, offset int64) {
	return int32(id & (1<<partitionBits - 1)), id >> partitionBits
}

// event is one killmail held in memory. It is immutable once stored, apart
// from the lazily built protobuf form.
type event struct {
	system    int64
	partition int32
	offset    int64
	// timeMS is the record's Kafka timestamp, the order of Poll across
	// partitions.
	timeMS int64
	// seq is the order in which this process's tail read the event. It
	// breaks ties between events of one millisecond on different
	// partitions, which Kafka's timestamps cannot order.
	seq uint64
	// json is the killmail exactly as stored in Kafka.
	json []byte
	// killmailField caches the killmail as the protobuf Event's killmail
	// field (google.protobuf.Struct), tag and length included, built on
	// first use by a protobuf (gRPC, Connect proto) client. Each later
	// delivery attaches these very bytes: framing the Struct per delivery
	// was an allocation and a copy of every killmail sent.
	killmailField atomic.Pointer[[]byte]
}

func (e *event) id() int64 { return eventID(e.partition, e.offset) }

// orderKey is an event's place in delivery order, as before compares it:
// time, then arrival. Memory keeps each system's keys in an array beside
// its events, so that a merge reads them densely (see mergeTree).
type orderKey struct {
	timeMS int64
	seq    uint64
}

func (e *event) orderKey() orderKey { return orderKey{e.timeMS, e.seq} }

// less reports whether k comes before o.
func (k orderKey) less(o orderKey) bool {
	if k.timeMS != o.timeMS {
		return k.timeMS < o.timeMS
	}
	return k.seq < o.seq
}

// before orders events for delivery: by time, then by arrival, then (for
// events read from Kafka directly, which have no arrival) by id.
func (e *event) before(o *event) bool {
	if ek, ok := e.orderKey(), o.orderKey(); ek != ok {
		return ek.less(ok)
	}
	return e.id() < o.id()
}

// structField returns the killmail as the Event's killmail field, building
// it once. Its capacity is its length, so appending to it copies it.
func (e *event) structField() ([]byte, error) {
	if f := e.killmailField.Load(); f != nil {
		return *f, nil
	}
	w, err := jsonToStructWire(e.json)
	if err != nil {
		return nil, err
	}
	f := protowire.AppendTag(make([]byte, 0, len(w)+protowire.SizeBytes(len(w))+1), killmailFieldNumber, protowire.BytesType)
	f = protowire.AppendBytes(f, w)
	f = f[:len(f):len(f)]
	e.killmailField.Store(&f)
	return f, nil
}

// killmailFieldNumber is Event.killmail's field number.
const killmailFieldNumber protowire.Number = 3

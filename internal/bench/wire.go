package bench

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// The load generator measures the service, not protobuf or JSON decoding:
// it keeps each Subscribe message as bytes (rawCodec) and reads only what it
// needs from them (Frame), as a raw Kafka consumer reads a record without
// parsing its JSON. A real client that decodes every killmail into a
// google.protobuf.Struct spends more CPU on its own side than this one.

// rawFrame is one stream message, undecoded.
type rawFrame struct{ b []byte }

// rawCodec encodes requests normally and keeps responses as bytes. Its name
// ("proto" or "json") selects the codec the server uses.
type rawCodec struct{ name string }

func (c rawCodec) Name() string { return c.name }

func (c rawCodec) Marshal(v any) ([]byte, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("raw codec: cannot marshal %T", v)
	}
	if c.name == "json" {
		return protojson.Marshal(m)
	}
	return proto.Marshal(m)
}

func (c rawCodec) Unmarshal(b []byte, v any) error {
	f, ok := v.(*rawFrame)
	if !ok {
		return fmt.Errorf("raw codec: cannot unmarshal into %T", v)
	}
	// The transport reuses b; keep a copy.
	f.b = append(f.b[:0], b...)
	return nil
}

// FrameKind is what a Subscribe message carries.
type FrameKind int

// The kinds of SubscribeResponse, by oneof field number.
const (
	FrameUnknown FrameKind = iota
	FrameEvents
	FrameBackfillDone
	FrameHeartbeat
	FrameGap
)

// Frame is what the load generator reads of a Subscribe message.
type Frame struct {
	Kind   FrameKind
	Events int
	// Stamps holds each event's StampField, when asked for and present.
	Stamps []int64
}

// ParseProtoFrame reads a SubscribeResponse in protobuf: its kind, how many
// events it carries and, when stamps is true, their produce stamps, walking
// the wire format without building messages.
func ParseProtoFrame(b []byte, stamps bool) (Frame, error) {
	var f Frame
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return f, protowire.ParseError(n)
		}
		b = b[n:]
		if typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return f, protowire.ParseError(n)
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return f, protowire.ParseError(n)
		}
		b = b[n:]
		if num >= 1 && num <= 4 {
			f.Kind = FrameKind(num)
		}
		if num != 1 {
			continue
		}
		// Events: field 1 is each Event.
		err := eachBytesField(v, 1, func(ev []byte) error {
			f.Events++
			if !stamps {
				return nil
			}
			return eachBytesField(ev, 3, func(st []byte) error {
				if us, ok := structStamp(st); ok {
					f.Stamps = append(f.Stamps, us)
				}
				return nil
			})
		})
		if err != nil {
			return f, err
		}
	}
	return f, nil
}

// eachBytesField calls fn with every length-delimited field numbered want.
func eachBytesField(b []byte, want protowire.Number, fn func([]byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if num == want && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			if err := fn(v); err != nil {
				return err
			}
			b = b[n:]
			continue
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
	}
	return nil
}

var errFound = errors.New("found")

// structStamp finds StampField in a google.protobuf.Struct's wire bytes:
// a map entry (field 1) whose key (1) is the name and whose Value (2) holds
// a number_value (field 2, a double).
func structStamp(st []byte) (int64, bool) {
	var us int64
	err := eachBytesField(st, 1, func(entry []byte) error {
		var key, val []byte
		_ = eachBytesField(entry, 1, func(k []byte) error { key = k; return nil })
		if string(key) != StampField {
			return nil
		}
		_ = eachBytesField(entry, 2, func(v []byte) error { val = v; return nil })
		// Value.number_value: tag (2, fixed64) then 8 bytes.
		if len(val) == 9 && val[0] == byte(protowire.EncodeTag(2, protowire.Fixed64Type)) {
			us = int64(math.Float64frombits(binary.LittleEndian.Uint64(val[1:])))
			return errFound
		}
		return nil
	})
	return us, errors.Is(err, errFound)
}

// jsonFrame is a SubscribeResponse as killfeed's JSON codec writes it, with
// killmails left as raw JSON.
type jsonFrame struct {
	Events *struct {
		Events []struct {
			EventID  int64           `json:"event_id"`
			Killmail json.RawMessage `json:"killmail"`
		} `json:"events"`
	} `json:"events"`
	BackfillDone *struct{}       `json:"backfill_done"`
	Heartbeat    json.RawMessage `json:"heartbeat"`
	Gap          json.RawMessage `json:"gap"`
}

// ParseJSONFrame reads a SubscribeResponse in JSON. Unlike the protobuf
// walk it decodes (and so validates) the whole message, as any JSON client
// must to find where each killmail ends.
func ParseJSONFrame(b []byte, stamps bool) (Frame, error) {
	var jf jsonFrame
	if err := json.Unmarshal(b, &jf); err != nil {
		return Frame{}, fmt.Errorf("decoding JSON stream message: %w", err)
	}
	var f Frame
	switch {
	case jf.Events != nil:
		f.Kind = FrameEvents
		f.Events = len(jf.Events.Events)
		if stamps {
			for _, e := range jf.Events.Events {
				if us, ok := Stamp(e.Killmail); ok {
					f.Stamps = append(f.Stamps, us)
				}
			}
		}
	case jf.BackfillDone != nil:
		f.Kind = FrameBackfillDone
	case jf.Heartbeat != nil:
		f.Kind = FrameHeartbeat
	case jf.Gap != nil:
		f.Kind = FrameGap
	}
	return f, nil
}

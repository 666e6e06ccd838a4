package feedsvc

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strconv"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	killfeedv1 "github.com/killfeed/killfeed/proto/killfeed/v1"
)

// rawKillmailField is a private field number, never on the wire to clients,
// under which a response Event carries its killmail's stored JSON for the
// JSON codec. Protobuf clients get field 3 (the Struct) instead.
const rawKillmailField protowire.Number = 1 << 20

// withRawKillmail attaches a killmail's stored JSON to an Event for the JSON
// codec.
func withRawKillmail(ev *killfeedv1.Event, raw []byte) {
	b := protowire.AppendTag(nil, rawKillmailField, protowire.BytesType)
	ev.ProtoReflect().SetUnknown(protowire.AppendBytes(b, raw))
}

// withStructKillmail attaches a killmail as its Event field already
// encoded (event.structField), so no Struct is ever built. Events share
// the bytes: protobuf only reads them, and appending would copy them.
func withStructKillmail(ev *killfeedv1.Event, field []byte) {
	ev.ProtoReflect().SetUnknown(field)
}

// rawKillmail returns the JSON attached by withRawKillmail, if any.
func rawKillmail(m protoreflect.Message) []byte {
	u := m.GetUnknown()
	for len(u) > 0 {
		num, typ, n := protowire.ConsumeTag(u)
		if n < 0 {
			return nil
		}
		u = u[n:]
		if num == rawKillmailField && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(u)
			return v
		}
		if n = protowire.ConsumeFieldValue(num, typ, u); n < 0 {
			return nil
		}
		u = u[n:]
	}
	return nil
}

// jsonCodec is Connect's "json" codec for killfeed. It writes field names as
// in the .proto (snake_case, like the seeds and ESI), 64-bit integers as JSON
// numbers, every repeated field (empty ones as []), and an event's killmail
// exactly as stored. It reads requests with protojson, which accepts both
// snake_case and camelCase names and numbers or strings for integers.
type jsonCodec struct{}

func (jsonCodec) Name() string { return "json" }

func (jsonCodec) Marshal(v any) ([]byte, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("json codec: %T is not a protobuf message", v)
	}
	return appendJSONMessage(nil, m.ProtoReflect())
}

func (jsonCodec) Unmarshal(data []byte, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("json codec: %T is not a protobuf message", v)
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(data, m); err != nil {
		return err
	}
	return checkEnumNames(data, m.ProtoReflect().Descriptor())
}

// checkEnumNames refuses an enum field set to a name its enum does not have.
// DiscardUnknown, which lets a request carry fields this server does not
// know, also drops such names silently and leaves the field at its default:
// a misspelt commit_mode ("EXPLICIT") would quietly mean automatic commits.
// Request messages have enums only at the top level.
func checkEnumNames(data []byte, md protoreflect.MessageDescriptor) error {
	var top map[string]json.RawMessage
	if json.Unmarshal(data, &top) != nil {
		return nil
	}
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if fd.Kind() != protoreflect.EnumKind || fd.IsList() || fd.IsMap() {
			continue
		}
		for _, key := range []string{string(fd.Name()), fd.JSONName()} {
			var name string
			raw, ok := top[key]
			if !ok || string(raw) == "null" || json.Unmarshal(raw, &name) != nil {
				continue // absent, the default, or a number
			}
			if fd.Enum().Values().ByName(protoreflect.Name(name)) == nil {
				return fmt.Errorf("%s: %q is not a %s value", fd.Name(), name, fd.Enum().Name())
			}
		}
	}
	return nil
}

// appendJSONMessage writes m as a JSON object.
func appendJSONMessage(b []byte, m protoreflect.Message) ([]byte, error) {
	if m.Descriptor().FullName().Parent() == "google.protobuf" {
		// Well-known types (Timestamp, Struct, ...) have special JSON forms.
		out, err := protojson.Marshal(m.Interface())
		return append(b, out...), err
	}
	b = append(b, '{')
	first := true
	name := func(n protoreflect.Name) {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = strconv.AppendQuote(b, string(n))
		b = append(b, ':')
	}
	fields := m.Descriptor().Fields()
	var err error
	for i := range fields.Len() {
		fd := fields.Get(i)
		switch {
		case fd.IsList():
			name(fd.Name())
			l := m.Get(fd).List()
			b = append(b, '[')
			for j := range l.Len() {
				if j > 0 {
					b = append(b, ',')
				}
				if b, err = appendJSONValue(b, fd, l.Get(j)); err != nil {
					return nil, err
				}
			}
			b = append(b, ']')
		case fd.IsMap():
			return nil, fmt.Errorf("json codec: map field %s is not supported", fd.FullName())
		case m.Has(fd):
			name(fd.Name())
			if b, err = appendJSONValue(b, fd, m.Get(fd)); err != nil {
				return nil, err
			}
		}
	}
	if raw := rawKillmail(m); raw != nil {
		name("killmail")
		b = append(b, raw...)
	}
	return append(b, '}'), nil
}

func appendJSONValue(b []byte, fd protoreflect.FieldDescriptor, v protoreflect.Value) ([]byte, error) {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return appendJSONMessage(b, v.Message())
	case protoreflect.BoolKind:
		return strconv.AppendBool(b, v.Bool()), nil
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return strconv.AppendInt(b, v.Int(), 10), nil
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return strconv.AppendUint(b, v.Uint(), 10), nil
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		f := v.Float()
		if math.IsInf(f, 0) || math.IsNaN(f) {
			return strconv.AppendQuote(b, strconv.FormatFloat(f, 'g', -1, 64)), nil
		}
		return strconv.AppendFloat(b, f, 'g', -1, 64), nil
	case protoreflect.StringKind:
		s, err := json.Marshal(v.String())
		return append(b, s...), err
	case protoreflect.BytesKind:
		b = append(b, '"')
		b = base64.StdEncoding.AppendEncode(b, v.Bytes())
		return append(b, '"'), nil
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return strconv.AppendQuote(b, string(ev.Name())), nil
		}
		return strconv.AppendInt(b, int64(v.Enum()), 10), nil
	}
	return nil, fmt.Errorf("json codec: field %s has unsupported kind %s", fd.FullName(), fd.Kind())
}

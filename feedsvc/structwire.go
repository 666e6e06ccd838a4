package feedsvc

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// maxStructDepth is the deepest nesting of objects and arrays (the top-level
// object counts as 1) that jsonToStructWire accepts. Protobuf decoders stop
// at 100 nested messages by default (C++, Java, Python; Go at 10000), and a
// JSON object level costs three (Value, Struct, map entry) below the two or
// three of the response around the killmail: 32 levels keep every protobuf
// client able to decode what it is sent. Killmails nest about five deep.
const maxStructDepth = 32

// jsonToStructWire transcodes a JSON object into the protobuf wire form of
// google.protobuf.Struct, in one pass and without building Go values, so a
// killmail stored as JSON can be sent to protobuf clients cheaply. Member
// order is kept; numbers become doubles, as Struct defines them.
//
// What it accepts is what encoding/json accepts, with its meaning: invalid
// JSON is an error; invalid UTF-8 in strings becomes U+FFFD (protobuf
// strings must be UTF-8), as do lone surrogate escapes; of duplicate keys
// the last wins, as every member goes on the wire and protobuf decoders
// keep the last entry of a map key. It also rejects what a protobuf client
// could not be sent: numbers beyond a double's range (1e400) and nesting
// deeper than maxStructDepth.
func jsonToStructWire(data []byte) ([]byte, error) {
	d := structDecoder{data: data}
	d.skipSpace()
	if d.i >= len(d.data) || d.data[d.i] != '{' {
		return nil, errors.New("killmail is not a JSON object")
	}
	out, err := d.object(make([]byte, 0, len(data)+len(data)/2))
	if err != nil {
		return nil, fmt.Errorf("transcoding killmail to protobuf: %w", err)
	}
	if d.skipSpace(); d.i != len(d.data) {
		return nil, fmt.Errorf("transcoding killmail to protobuf: trailing data at byte %d", d.i)
	}
	return out, nil
}

type structDecoder struct {
	data  []byte
	i     int
	depth int // objects and arrays open at i
}

// enter counts one more level of nesting, failing beyond maxStructDepth.
func (d *structDecoder) enter() error {
	if d.depth++; d.depth > maxStructDepth {
		return d.errorf("nested deeper than %d levels", maxStructDepth)
	}
	return nil
}

func (d *structDecoder) skipSpace() {
	for d.i < len(d.data) {
		switch d.data[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

func (d *structDecoder) errorf(format string, args ...any) error {
	return fmt.Errorf("byte %d: "+format, append([]any{d.i}, args...)...)
}

// nested appends field num (length-delimited) holding whatever fill appends.
// The length prefix is written after the content is known, in one byte
// reserved ahead of it: most of a killmail's messages (a member with a
// number or a short string) are shorter than 128 bytes, so only the longer
// ones move their content to make room for a longer prefix. Moving every
// message's content once per level of nesting was a tenth of the work.
func nested(b []byte, num protowire.Number, fill func([]byte) ([]byte, error)) ([]byte, error) {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = append(b, 0)
	start := len(b)
	b, err := fill(b)
	if err != nil {
		return nil, err
	}
	n := len(b) - start
	if n < 0x80 {
		b[start-1] = byte(n)
		return b, nil
	}
	k := protowire.SizeVarint(uint64(n))
	b = append(b, make([]byte, k-1)...)
	copy(b[start-1+k:], b[start:start+n])
	protowire.AppendVarint(b[start-1:start-1], uint64(n))
	return b, nil
}

// object appends the content of a Struct: one map entry (field 1) per member.
func (d *structDecoder) object(b []byte) ([]byte, error) {
	if err := d.enter(); err != nil {
		return nil, err
	}
	d.i++ // '{'
	d.skipSpace()
	if d.i < len(d.data) && d.data[d.i] == '}' {
		d.i++
		d.depth--
		return b, nil
	}
	for {
		d.skipSpace()
		key, err := d.str()
		if err != nil {
			return nil, err
		}
		d.skipSpace()
		if d.i >= len(d.data) || d.data[d.i] != ':' {
			return nil, d.errorf("want ':' after object key")
		}
		d.i++
		b, err = nested(b, 1, func(b []byte) ([]byte, error) {
			b = protowire.AppendTag(b, 1, protowire.BytesType)
			b = protowire.AppendBytes(b, key)
			return nested(b, 2, d.value)
		})
		if err != nil {
			return nil, err
		}
		d.skipSpace()
		if d.i >= len(d.data) {
			return nil, d.errorf("unterminated object")
		}
		switch d.data[d.i] {
		case ',':
			d.i++
		case '}':
			d.i++
			d.depth--
			return b, nil
		default:
			return nil, d.errorf("want ',' or '}' in object")
		}
	}
}

// list appends the content of a ListValue: one Value (field 1) per element.
func (d *structDecoder) list(b []byte) ([]byte, error) {
	if err := d.enter(); err != nil {
		return nil, err
	}
	d.i++ // '['
	d.skipSpace()
	if d.i < len(d.data) && d.data[d.i] == ']' {
		d.i++
		d.depth--
		return b, nil
	}
	for {
		var err error
		if b, err = nested(b, 1, d.value); err != nil {
			return nil, err
		}
		d.skipSpace()
		if d.i >= len(d.data) {
			return nil, d.errorf("unterminated array")
		}
		switch d.data[d.i] {
		case ',':
			d.i++
		case ']':
			d.i++
			d.depth--
			return b, nil
		default:
			return nil, d.errorf("want ',' or ']' in array")
		}
	}
}

// value appends the content of a google.protobuf.Value.
func (d *structDecoder) value(b []byte) ([]byte, error) {
	d.skipSpace()
	if d.i >= len(d.data) {
		return nil, d.errorf("unexpected end of JSON")
	}
	switch c := d.data[d.i]; {
	case c == '{':
		return nested(b, 5, d.object)
	case c == '[':
		return nested(b, 6, d.list)
	case c == '"':
		s, err := d.str()
		if err != nil {
			return nil, err
		}
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		return protowire.AppendBytes(b, s), nil
	case d.literal("true"):
		return append(protowire.AppendTag(b, 4, protowire.VarintType), 1), nil
	case d.literal("false"):
		return append(protowire.AppendTag(b, 4, protowire.VarintType), 0), nil
	case d.literal("null"):
		return append(protowire.AppendTag(b, 1, protowire.VarintType), 0), nil
	case c == '-' || (c >= '0' && c <= '9'):
		start := d.i
		for d.i < len(d.data) && isNumberByte(d.data[d.i]) {
			d.i++
		}
		num := d.data[start:d.i]
		if !jsonNumber(num) {
			return nil, d.errorf("bad number %q", num)
		}
		f, ok := smallInteger(num)
		if !ok {
			var err error
			if f, err = strconv.ParseFloat(string(num), 64); err != nil {
				return nil, d.errorf("number %q is beyond the range of a double", num)
			}
		}
		b = protowire.AppendTag(b, 2, protowire.Fixed64Type)
		return binary.LittleEndian.AppendUint64(b, math.Float64bits(f)), nil
	default:
		return nil, d.errorf("unexpected %q", c)
	}
}

// smallInteger converts a valid JSON number that is an integer of at most
// 15 digits, as most of a killmail's are (ids, counts), to the double
// strconv.ParseFloat would return: every such integer is exactly
// representable, so the conversion is exact. It was a seventh of the work.
func smallInteger(num []byte) (float64, bool) {
	neg := len(num) > 0 && num[0] == '-'
	digits := num
	if neg {
		digits = num[1:]
	}
	if len(digits) == 0 || len(digits) > 15 {
		return 0, false
	}
	var n int64
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	f := float64(n)
	if neg {
		f = -f
	}
	return f, true
}

func isNumberByte(c byte) bool {
	return c >= '0' && c <= '9' || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E'
}

// jsonNumber reports whether b is a number as JSON spells it:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?. strconv.ParseFloat alone
// would also take 01, 1. and -.5.
func jsonNumber(b []byte) bool {
	digits := func(i int) int {
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		return i
	}
	i := 0
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = digits(i)
	default:
		return false
	}
	if i < len(b) && b[i] == '.' {
		j := digits(i + 1)
		if j == i+1 {
			return false
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(i)
		if j == i {
			return false
		}
		i = j
	}
	return i == len(b)
}

func (d *structDecoder) literal(word string) bool {
	if len(d.data)-d.i >= len(word) && string(d.data[d.i:d.i+len(word)]) == word {
		d.i += len(word)
		return true
	}
	return false
}

// str reads a JSON string and returns its value as valid UTF-8 (protobuf
// strings must be). Strings without escapes, nearly all of a killmail's, are
// returned without copying.
func (d *structDecoder) str() ([]byte, error) {
	if d.i >= len(d.data) || d.data[d.i] != '"' {
		return nil, d.errorf("want a string")
	}
	start := d.i
	escaped := false
	for d.i++; d.i < len(d.data); d.i++ {
		switch d.data[d.i] {
		case '\\':
			escaped = true
			d.i++
		case '"':
			d.i++
			raw := d.data[start:d.i]
			if !escaped {
				s := raw[1 : len(raw)-1]
				if !utf8.Valid(s) {
					return []byte(string([]rune(string(s)))), nil
				}
				return s, nil
			}
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return nil, d.errorf("bad string: %v", err)
			}
			return []byte(s), nil
		default:
			if d.data[d.i] < 0x20 {
				return nil, d.errorf("control character %#x in string", d.data[d.i])
			}
		}
	}
	return nil, d.errorf("unterminated string")
}

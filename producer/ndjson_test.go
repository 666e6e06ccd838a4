package producer_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/killfeed/killfeed/producer"
)

type line struct {
	text  string
	where string
	skip  string // reason, when the line is reported as skipped
}

func readAll(t *testing.T, src *producer.NDJSON) []line {
	t.Helper()
	var got []line
	for {
		b, err := src.Next(context.Background())
		if err == io.EOF {
			return got
		}
		var rerr *producer.RecordError
		if errors.As(err, &rerr) {
			got = append(got, line{where: rerr.Where, skip: rerr.Reason})
			continue
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		got = append(got, line{text: string(b), where: src.Location()})
	}
}

func TestNDJSONLines(t *testing.T) {
	in := "\xef\xbb\xbf{\"a\":1}\n\n  \t\n{\"b\":2}\r\n" + strings.Repeat("x", 40) + "\n{\"c\":3}"
	got := readAll(t, producer.NewNDJSON(strings.NewReader(in), producer.NDJSONOptions{MaxLineBytes: 20}))
	want := []line{
		{text: `{"a":1}`, where: "line 1"}, // byte order mark dropped
		{text: `{"b":2}`, where: "line 4"}, // blank lines skipped, "\r\n" handled
		{where: "line 5", skip: producer.ReasonLineTooLong},
		{text: `{"c":3}`, where: "line 6"}, // no final newline
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}

// Real killmails of big structures run to megabytes; they must come through
// whole with the default limit, in a reader that returns small chunks.
func TestNDJSONLongLines(t *testing.T) {
	long := `{"items":"` + strings.Repeat("y", 5<<20) + `"}`
	in := long + "\n" + `{"after":true}` + "\n"
	got := readAll(t, producer.NewNDJSON(io.MultiReader(strings.NewReader(in[:1000]), strings.NewReader(in[1000:])), producer.NDJSONOptions{Name: "big.ndjson"}))
	if len(got) != 2 || got[0].text != long || got[1].text != `{"after":true}` || got[1].where != "big.ndjson:2" {
		t.Errorf("got %d lines (first %d bytes), want the 5 MB line and the next", len(got), len(got[0].text))
	}
}

func TestNDJSONStopsOnContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := producer.NewNDJSON(strings.NewReader("{}\n"), producer.NDJSONOptions{}).Next(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Next on a canceled context = %v, want context.Canceled", err)
	}
}

package producer

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// DefaultMaxLineBytes is the longest NDJSON line read by default: well above
// the largest real killmails (a few hundred KB for a citadel with its
// contents), so only garbage is skipped.
const DefaultMaxLineBytes = 16 << 20

// ReasonLineTooLong is the rejection reason for an NDJSON line longer than
// NDJSONOptions.MaxLineBytes.
const ReasonLineTooLong = "line_too_long"

// NDJSONOptions configures an NDJSON source.
type NDJSONOptions struct {
	// Name prefixes locations in rejections, e.g. the file name. Default
	// "line", giving "line 42"; with Name "kills.ndjson", "kills.ndjson:42".
	Name string
	// MaxLineBytes bounds the memory one line may take. A longer line is
	// skipped and reported as a RecordError with ReasonLineTooLong.
	// Default DefaultMaxLineBytes.
	MaxLineBytes int
}

// NDJSON reads newline-delimited JSON: one killmail per line, as written by
// `jq -c`, zKillboard dumps or an earlier capture of the R2Z2 feed. Blank
// lines are skipped; "\r\n" line ends and a leading UTF-8 byte order mark are
// accepted.
type NDJSON struct {
	r    *bufio.Reader
	opts NDJSONOptions
	line int64 // number of the line last returned
	buf  []byte
}

// NewNDJSON returns a source reading r. It does not close r.
func NewNDJSON(r io.Reader, opts NDJSONOptions) *NDJSON {
	if opts.MaxLineBytes <= 0 {
		opts.MaxLineBytes = DefaultMaxLineBytes
	}
	return &NDJSON{r: bufio.NewReaderSize(r, 256<<10), opts: opts}
}

// Location returns where the last line returned by Next was.
func (s *NDJSON) Location() string { return s.where(s.line) }

func (s *NDJSON) where(line int64) string {
	if s.opts.Name == "" {
		return "line " + strconv.FormatInt(line, 10)
	}
	return s.opts.Name + ":" + strconv.FormatInt(line, 10)
}

// Next returns the next non-blank line, without its line end.
func (s *NDJSON) Next(ctx context.Context) ([]byte, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		line, tooLong, err := s.readLine()
		if err != nil && err != io.EOF {
			return nil, fmt.Errorf("reading %s: %w", s.where(s.line+1), err)
		}
		if err == io.EOF && len(line) == 0 && !tooLong {
			return nil, io.EOF
		}
		s.line++
		if tooLong {
			return nil, &RecordError{
				Where:  s.Location(),
				Reason: ReasonLineTooLong,
				Err:    fmt.Errorf("line is longer than %d bytes; skipped", s.opts.MaxLineBytes),
			}
		}
		if s.line == 1 {
			line = bytes.TrimPrefix(line, []byte("\xef\xbb\xbf"))
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		return line, nil
	}
}

// readLine reads up to the next '\n', dropping it and a '\r' before it. A
// line over the limit is consumed to its end and reported as tooLong, so one
// bad line neither exhausts memory nor loses the lines after it. err is
// io.EOF, possibly with a line, when the input ends.
func (s *NDJSON) readLine() (line []byte, tooLong bool, err error) {
	s.buf = s.buf[:0]
	for {
		chunk, err := s.r.ReadSlice('\n')
		if !tooLong {
			s.buf = append(s.buf, chunk...)
			if len(s.buf) > s.opts.MaxLineBytes+2 { // +2: room for "\r\n"
				tooLong, s.buf = true, s.buf[:0]
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if tooLong {
			return nil, true, err
		}
		line = bytes.TrimSuffix(bytes.TrimSuffix(s.buf, []byte("\n")), []byte("\r"))
		return line, len(line) > s.opts.MaxLineBytes, err
	}
}

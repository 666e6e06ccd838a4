package producer

import (
	"context"
	"fmt"
)

// Source delivers raw killmails, one per call, in any shape
// killmail.Normalize accepts.
type Source interface {
	// Next returns the next raw killmail, or io.EOF when there are no more.
	// It should return promptly with ctx's error once ctx is done.
	//
	// A *RecordError reports one record the source could not deliver but
	// has skipped (an over-long line, say): Run counts it as rejected and
	// calls Next again. Any other error ends Run.
	//
	// The returned slice is only valid until the next call: sources may
	// reuse their buffers.
	Next(ctx context.Context) ([]byte, error)
}

// Locator is implemented by sources that can say where the record last
// returned by Next came from, so a rejection can point at it ("line 42").
type Locator interface {
	Location() string
}

// RecordError is returned by Source.Next for a record that was skipped.
type RecordError struct {
	// Where the record was, e.g. "killmails.ndjson:42".
	Where string
	// Reason classifies the problem for counting, like killmail.Reason.
	Reason string
	// Err says what is wrong.
	Err error
}

// Error says where the record was and what is wrong with it.
func (e *RecordError) Error() string {
	return fmt.Sprintf("%s: %v", e.Where, e.Err)
}

// Unwrap returns Err.
func (e *RecordError) Unwrap() error { return e.Err }

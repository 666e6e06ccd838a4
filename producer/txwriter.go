package producer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// errFenced reports that another producer with the same transactional id
// started: two ingesters of one cursor must not both run, so the older one
// stops rather than fence the newer one in turn.
var errFenced = errors.New("another killfeed started ingesting the same R2Z2 feed into the same cursor topic and took over")

// txWriter writes batches of killmails together with the cursor that covers
// them, each batch in one Kafka transaction, through a transactional client
// of its own. Either the whole batch and its cursor are committed or none of
// it is visible to read_committed readers: the cursor never runs ahead of
// the killmails it covers, nor behind them.
type txWriter struct {
	cl *kgo.Client
}

// newTxWriter creates the transactional client, from base's options plus
// txnID, and fences every earlier client with the same id: Kafka bumps the
// producer epoch, so a previous incarnation that is still running (a zombie)
// can no longer write or commit, and it aborts that incarnation's open
// transaction, or waits until one being committed is complete. Only after
// this may the cursor be read.
func newTxWriter(ctx context.Context, base *kgo.Client, txnID string, txnTimeout time.Duration) (*txWriter, error) {
	opts := append(slices.Clone(base.Opts()),
		kgo.TransactionalID(txnID),
		kgo.TransactionTimeout(txnTimeout),
	)

	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("creating the transactional Kafka client: %w", err)
	}
	if _, _, err := cl.ProducerID(ctx); err != nil {
		cl.Close()
		return nil, fmt.Errorf("initialising transactional id %q: %w", txnID, fencedError(err))
	}
	return &txWriter{cl: cl}, nil
}

// commit writes recs and then cursor in one transaction and commits it. On
// any failure it aborts the transaction, as far as Kafka lets it, and
// returns the error: the caller must then treat nothing of the batch as
// written and start over from the committed cursor with a new txWriter.
//
// ctx bounds the whole commit. It should not be the run's context: stopping
// in the middle of EndTransaction leaves the outcome unknown until the next
// incarnation fences this one.
func (w *txWriter) commit(ctx context.Context, recs []*kgo.Record, cursor *kgo.Record) error {
	if err := w.cl.BeginTransaction(); err != nil {
		return fmt.Errorf("beginning a transaction: %w", fencedError(err))
	}
	var (
		mu    sync.Mutex
		first error
	)
	promise := func(r *kgo.Record, err error) {
		if err == nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if first == nil {
			first = fmt.Errorf("producing to topic %q: %w", r.Topic, err)
		}
	}
	for _, r := range recs {
		w.cl.Produce(ctx, r, promise)
	}
	w.cl.Produce(ctx, cursor, promise)

	err := w.cl.Flush(ctx)
	if err != nil {
		err = fmt.Errorf("flushing the transaction: %w", err)
	} else {
		mu.Lock()
		err = first
		mu.Unlock()
	}
	if err == nil {
		if err = w.cl.EndTransaction(ctx, kgo.TryCommit); err == nil {
			return nil
		}
		err = fmt.Errorf("committing the transaction: %w", err)
	}
	// Best effort: whatever this leaves open, the next txWriter's fencing
	// aborts.
	_ = w.cl.AbortBufferedRecords(ctx)
	_ = w.cl.EndTransaction(ctx, kgo.TryAbort)
	return fencedError(err)
}

// close releases the client. A transaction left open is aborted by Kafka
// when the next txWriter with the same id starts, or when it times out.
func (w *txWriter) close() { w.cl.Close() }

// fencedError marks err with errFenced when Kafka says a newer producer
// with the same transactional id exists.
//
// An INVALID_PRODUCER_EPOCH on a produce usually means the same, but Kafka
// also bumps the epoch when it aborts a transaction that outlived
// TransactionTimeout; stopping for good on it could stop ingestion for a
// slow broker, so it only gets a hint and the ingester starts over.
func fencedError(err error) error {
	switch {
	case errors.Is(err, kerr.ProducerFenced):
		return fmt.Errorf("%w: %w", errFenced, err)
	case errors.Is(err, kerr.InvalidProducerEpoch):
		return fmt.Errorf("%w (is another killfeed ingesting the same R2Z2 feed into the same cursor topic?)", err)
	}
	return err
}

// Package r2z2test provides an in-process HTTP server that speaks
// zKillboard's R2Z2 protocol, for tests of the R2Z2 ingester and of the
// commands that run it: files published in sequence from a recorded-shape
// sample (testdata), 404 for what is not published yet, a sequence.json that
// lags the newest file, re-published killmails, holes, expired files, and
// scripted failures (429, 403, 5xx, slow answers, dropped connections).
//
// It owns the fake server only. It must never contact the real R2Z2, and
// production code must not import it.
package r2z2test

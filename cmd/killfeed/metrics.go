package main

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/killfeed/killfeed/producer"
)

// sourceMetrics export the built-in source's progress when serve runs one.
// They are fed by the producer's progress reports (every --progress), so they
// trail by at most that interval.
type sourceMetrics struct {
	produced, rejected, duplicates, inFlight, cursor atomic.Int64
}

// register adds the gauges to reg.
func (m *sourceMetrics) register(reg prometheus.Registerer, source string) {
	gauge := func(name, help string, v *atomic.Int64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: name, Help: help, ConstLabels: prometheus.Labels{"source": source},
		}, func() float64 { return float64(v.Load()) })
	}
	reg.MustRegister(
		gauge("killfeed_source_produced", "Killmails the built-in source stored since start.", &m.produced),
		gauge("killfeed_source_rejected", "Records the built-in source rejected as unusable since start.", &m.rejected),
		gauge("killfeed_source_duplicates", "Killmails the built-in source dropped as already stored since start.", &m.duplicates),
	)
	if source == "r2z2" {
		// R2Z2 writes in transactions, so nothing is in flight between
		// reports; its progress is the committed sequence.
		reg.MustRegister(gauge("killfeed_r2z2_cursor_sequence", "Last R2Z2 sequence committed with its killmails.", &m.cursor))
	} else {
		reg.MustRegister(gauge("killfeed_source_in_flight", "Killmails sent to Kafka and not yet acknowledged: the producer's lag.", &m.inFlight))
	}
}

func (m *sourceMetrics) producerProgress(s producer.Stats) {
	m.produced.Store(s.Produced)
	m.rejected.Store(s.Rejected)
	m.duplicates.Store(s.Duplicates)
	m.inFlight.Store(s.InFlight)
}

func (m *sourceMetrics) r2z2Progress(s producer.R2Z2Stats) {
	m.produced.Store(s.Produced)
	m.rejected.Store(s.Rejected)
	m.duplicates.Store(s.Duplicates)
	m.cursor.Store(s.Cursor)
}

// producerProgressFunc is the Progress option for producer.Options: nil
// (no reports) without metrics.
func (m *sourceMetrics) producerProgressFunc() func(producer.Stats) {
	if m == nil {
		return nil
	}
	return m.producerProgress
}

// r2z2ProgressFunc is the Progress option for producer.R2Z2Options.
func (m *sourceMetrics) r2z2ProgressFunc() func(producer.R2Z2Stats) {
	if m == nil {
		return nil
	}
	return m.r2z2Progress
}

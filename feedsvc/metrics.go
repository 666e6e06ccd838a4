package feedsvc

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"

	killfeedv1 "github.com/killfeed/killfeed/proto/killfeed/v1"
)

// metrics are the service's Prometheus metrics. They are registered on the
// Registerer the caller passes (Options.Registerer), never globally.
type metrics struct {
	ingested prometheus.Counter
	skipped  prometheus.Counter
	served   *prometheus.CounterVec
	// servedFor and okDuration hold the children every request of a
	// method uses, looked up once here: a vector's lookup hashes the
	// labels and takes a lock, a tenth of a caught-up Poll's own work.
	servedFor     map[string]prometheus.Counter
	okDuration    map[string]prometheus.Observer
	streams       prometheus.GaugeFunc
	rpcDuration   *prometheus.HistogramVec
	commits       prometheus.Counter
	gaps          prometheus.Counter
	trimmed       prometheus.Counter
	tailLag       *prometheus.GaugeVec
	memoryEvents  prometheus.GaugeFunc
	rejectedLimit *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, s *Service) *metrics {
	m := &metrics{
		ingested: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "killfeed_events_ingested_total", Help: "Killmail records read from the killmails topic into memory.",
		}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "killfeed_records_skipped_total", Help: "Killmails records skipped because their key or value is unusable.",
		}),
		served: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "killfeed_events_served_total", Help: "Events delivered to clients, by method.",
		}, []string{"method"}),
		streams: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "killfeed_streams_live", Help: "Subscribe streams open now.",
		}, func() float64 { return float64(s.streams.count()) }),
		rpcDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "killfeed_rpc_duration_seconds",
			Help:    "Duration of API calls (Connect, gRPC, gRPC-Web and REST), by method and code; a stream's is its lifetime.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10, 60, 600, 3600},
		}, []string{"method", "code"}),
		commits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "killfeed_commits_total", Help: "Position commits written to the offsets topic.",
		}),
		gaps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "killfeed_loss_signals_total", Help: "Gaps reported to clients: events retention removed before they were read.",
		}),
		trimmed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "killfeed_retention_trimmed_events_total", Help: "Events dropped from memory because retention or the consumed-records trim deleted them from Kafka.",
		}),
		tailLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "killfeed_tail_lag_records", Help: "Records in the killmails topic not yet read by this service, by partition (refreshed with readiness and maintenance).",
		}, []string{"partition"}),
		memoryEvents: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "killfeed_memory_events", Help: "Events held in memory.",
		}, func() float64 { n, _ := s.mem.stats(); return float64(n) }),
		rejectedLimit: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "killfeed_limited_requests_total", Help: "Requests refused by a limit (resource_exhausted / 429), by limit.",
		}, []string{"limit"}),
	}
	m.servedFor = map[string]prometheus.Counter{}
	for _, method := range servingMethods {
		m.servedFor[method] = m.served.WithLabelValues(method)
	}
	timed := []string{restPollRoute, restNextRoute}
	methods := killfeedv1.File_killfeed_v1_killfeed_proto.Services().ByName("KillfeedService").Methods()
	for i := range methods.Len() {
		// As connect-go names a procedure (Spec.Procedure).
		timed = append(timed, fmt.Sprintf("/%s/%s", methods.Get(i).Parent().FullName(), methods.Get(i).Name()))
	}
	m.okDuration = map[string]prometheus.Observer{}
	for _, method := range timed {
		m.okDuration[method] = m.rpcDuration.WithLabelValues(method, "ok")
	}
	if reg != nil {
		reg.MustRegister(m.ingested, m.skipped, m.served, m.streams, m.rpcDuration, m.commits,
			m.gaps, m.trimmed, m.tailLag, m.memoryEvents, m.rejectedLimit)
	}
	return m
}

// servingMethods are the methods that count the events they serve
// (killfeed_events_served_total).
var servingMethods = []string{"Poll", "Next", "Subscribe", restPollName, restNextName}

// servedBy returns the served-events counter of a method.
func (m *metrics) servedBy(method string) prometheus.Counter {
	if c, ok := m.servedFor[method]; ok {
		return c
	}
	return m.served.WithLabelValues(method)
}

// observe records one call's duration under its code.
func (m *metrics) observe(method string, began time.Time, err error) {
	m.observer(method, err).Observe(time.Since(began).Seconds())
}

// observer returns the duration histogram of a method's calls ending in
// err's code.
func (m *metrics) observer(method string, err error) prometheus.Observer {
	if err == nil {
		if o, ok := m.okDuration[method]; ok {
			return o
		}
		return m.rpcDuration.WithLabelValues(method, "ok")
	}
	return m.rpcDuration.WithLabelValues(method, connect.CodeOf(err).String())
}

// interceptor times every Connect, gRPC and gRPC-Web call.
func (m *metrics) interceptor() connect.Interceptor { return metricsInterceptor{m} }

type metricsInterceptor struct{ m *metrics }

func (i metricsInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		began := time.Now()
		resp, err := next(ctx, req)
		i.m.observe(req.Spec().Procedure, began, err)
		return resp, err
	}
}

func (i metricsInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i metricsInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		began := time.Now()
		err := next(ctx, conn)
		if errors.Is(err, context.Canceled) {
			err = connect.NewError(connect.CodeCanceled, err)
		}
		i.m.observe(conn.Spec().Procedure, began, err)
		return err
	}
}

// setLag records the tail's lag per partition.
func (m *metrics) setLag(partition int32, lag int64) {
	m.tailLag.WithLabelValues(strconv.Itoa(int(partition))).Set(float64(lag))
}

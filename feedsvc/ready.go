package feedsvc

import (
	"context"
	"fmt"
	"time"

	"connectrpc.com/grpchealth"
	"github.com/twmb/franz-go/pkg/kadm"
)

// readyMaxLag is how many records the tail may be behind a partition's end
// and still count as caught up.
const readyMaxLag = 1000

// Ready reports whether the service should get traffic: it is not shutting
// down, Kafka answers, the tail is caught up with the killmails topic, and
// every position committed (by any replica) has been read.
func (s *Service) Ready(ctx context.Context) error {
	if s.draining.Load() {
		return errShuttingDown
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	ends, err := s.tail.adm.ListEndOffsets(ctx, s.opts.Topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("kafka: %w", err)
	}
	var behind error
	s.mem.mu.RLock()
	ends.Each(func(o kadm.ListedOffset) {
		var next int64
		if ps := s.mem.parts[o.Partition]; ps != nil {
			next = ps.next
		}
		lag := max(o.Offset-next, 0)
		s.metrics.setLag(o.Partition, lag)
		if lag > readyMaxLag && behind == nil {
			behind = fmt.Errorf("tail is %d records behind on partition %d", lag, o.Partition)
		}
	})
	s.mem.mu.RUnlock()
	if behind != nil {
		return behind
	}
	if err := s.store.Sync(ctx); err != nil {
		return fmt.Errorf("positions not caught up: %w", err)
	}
	return nil
}

// health adapts Ready to gRPC health checks, for the service and the server
// as a whole ("").
func (s *Service) health() grpchealth.Checker { return healthChecker{s} }

type healthChecker struct{ s *Service }

func (h healthChecker) Check(ctx context.Context, req *grpchealth.CheckRequest) (*grpchealth.CheckResponse, error) {
	switch req.Service {
	case "", "killfeed.v1.KillfeedService":
	default:
		return nil, fmt.Errorf("unknown service %q", req.Service)
	}
	if err := h.s.Ready(ctx); err != nil {
		return &grpchealth.CheckResponse{Status: grpchealth.StatusNotServing}, nil
	}
	return &grpchealth.CheckResponse{Status: grpchealth.StatusServing}, nil
}

// Drain starts shutting down: readiness fails, new streams are refused, and
// open streams end with unavailable (their clients resume elsewhere or
// after the restart). Unary calls in flight complete; stop the HTTP server
// next, then Close.
func (s *Service) Drain() {
	if s.draining.CompareAndSwap(false, true) {
		n := s.streams.count()
		s.streams.closeAll()
		s.log.Info("draining", "streams_ended", n)
	}
}

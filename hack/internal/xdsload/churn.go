package xdsload

import (
	"context"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"gatehouse.dev/gatehouse/operator/xds"
)

// Churn changes perSecond APIKeys a second until ctx ends, and returns how
// many it changed. Each change disables or re-enables the next key the
// client does not use, in turn: one APIKeyEntry sent to every stream, as
// when someone edits an APIKey. Not safe for concurrent use.
func (s *Server) Churn(ctx context.Context, perSecond float64) (int, error) {
	if perSecond <= 0 {
		<-ctx.Done()
		return 0, nil
	}
	t := time.NewTicker(time.Duration(float64(time.Second) / perSecond))
	defer t.Stop()
	changed := 0
	for {
		select {
		case <-ctx.Done():
			return changed, nil
		case <-t.C:
		}
		if err := s.changeOne(); err != nil {
			return changed, err
		}
		changed++
	}
}

// changeOne toggles spec.disabled of the next churnable APIKey.
func (s *Server) changeOne() error {
	ak := s.churnable[s.next%len(s.churnable)]
	s.next++
	ak.Spec.Disabled = !ak.Spec.Disabled
	return s.caches.Update(s.ns, xds.APIKeyEntryType, map[string]types.Resource{ak.Name: xds.APIKeyEntry(ak)}, nil)
}

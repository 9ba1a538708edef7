package xds

import (
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// DefaultMaxStreamsPerPod is how many streams one pod may hold open on one
// replica unless Server.MaxStreamsPerPod says otherwise. A sidecar holds
// one; the second covers a reconnect that overlaps the old stream's end.
// Each stream holds a copy of its namespace's version map (about 100
// bytes per key), so this, times the pods that may reach the port, bounds
// what streams can make a replica hold.
const DefaultMaxStreamsPerPod = 2

// errReplaced ends a pod's oldest stream when the pod opens one more than
// its bound: the newest stream is the one a live sidecar is using.
var errReplaced = status.Error(codes.Aborted, "replaced by a newer stream of the same pod")

// podStreams bounds the streams each pod holds open: admitting one more
// than max ends the pod's oldest (admit the newest, so that a sidecar
// whose old connection is half-dead is never locked out by it).
type podStreams struct {
	max     int
	metrics *streamMetrics
	mu      sync.Mutex
	// byPod lists each pod's streams whose handler still runs, oldest
	// first, replaced ones included until they have unwound.
	byPod map[string][]*podStream
}

// podStream is one admitted stream.
type podStream struct {
	pod      string
	replaced chan struct{} // closed when a newer stream replaces it
	ended    bool          // replaced (under podStreams.mu)
}

func newPodStreams(maxPerPod int, metrics *streamMetrics) *podStreams {
	if maxPerPod <= 0 {
		maxPerPod = DefaultMaxStreamsPerPod
	}
	return &podStreams{max: maxPerPod, metrics: metrics, byPod: map[string][]*podStream{}}
}

// admit registers a new stream of id's pod and, when the pod then has more
// than max live streams, replaces its oldest.
func (p *podStreams) admit(id Identity) *podStream {
	s := &podStream{pod: id.PodUID, replaced: make(chan struct{})}
	p.mu.Lock()
	defer p.mu.Unlock()
	streams := append(p.byPod[id.PodUID], s)
	p.byPod[id.PodUID] = streams
	live := 0
	for _, st := range streams {
		if !st.ended {
			live++
		}
	}
	for _, st := range streams {
		if live <= p.max {
			break
		}
		if !st.ended {
			st.ended = true
			close(st.replaced)
			live--
			p.metrics.replaced(id.Namespace)
		}
	}
	return s
}

// release forgets s once its handler has returned.
func (p *podStreams) release(s *podStream) {
	p.mu.Lock()
	defer p.mu.Unlock()
	streams := p.byPod[s.pod]
	for i, st := range streams {
		if st == s {
			streams = append(streams[:i:i], streams[i+1:]...)
			break
		}
	}
	if len(streams) == 0 {
		delete(p.byPod, s.pod)
	} else {
		p.byPod[s.pod] = streams
	}
}

// held is how many streams of pod uid have a handler still running.
func (p *podStreams) held(uid string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.byPod[uid])
}

// boundStreamsPerPod returns a stream interceptor, chained after the
// authenticator, that holds each pod to p's bound. A stream whose identity
// names no pod is refused (fail closed; KubeTokenReviewer never returns
// one). The handler runs in its own goroutine, counted in handlers, so
// that a replaced stream ends at once: returning from the interceptor
// makes gRPC end the stream, which cancels its context and so unblocks
// the handler even in a Send that the client's flow control holds up.
func boundStreamsPerPod(p *podStreams, handlers *sync.WaitGroup) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		id, ok := identityFrom(ss.Context())
		if !ok || id.PodUID == "" {
			return errUnauthenticated
		}
		s := p.admit(id)
		done := make(chan error, 1)
		handlers.Go(func() {
			defer p.release(s)
			done <- handler(srv, ss)
		})
		select {
		case err := <-done:
			return err
		case <-s.replaced:
			return errReplaced
		}
	}
}

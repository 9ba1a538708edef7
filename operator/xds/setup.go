package xds

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Options configure the xDS server of the operator.
type Options struct {
	// Addr is the address to listen on; Listener, when set, is served
	// instead.
	Addr     string
	Listener net.Listener
	// TLS is the server's TLS configuration; nil serves plain gRPC (tests).
	TLS *tls.Config
	// Audience is the token audience accepted (DefaultAudience when empty).
	Audience string
	// MaxStreamsPerPod bounds the streams one pod holds open on this
	// replica (DefaultMaxStreamsPerPod when 0; see Server).
	MaxStreamsPerPod int
	Log              logr.Logger
}

// The feed reads what it serves from the informer cache; streams are
// authenticated with TokenReview.
// +kubebuilder:rbac:groups=auth.gatehouse.dev,resources=apikeys;signingkeys;authpolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create

// Setup adds the xDS server, fed from mgr's informer cache, to mgr. It
// runs on every replica. Successful TokenReviews are cached (see
// CachingReviewer); reviews and replaced streams are counted on the
// manager's metrics registry.
func Setup(ctx context.Context, mgr manager.Manager, o Options) (*Server, error) {
	caches := NewNamespaces()
	feed := &Feed{Reader: mgr.GetCache(), Caches: caches, Log: o.Log}
	if err := feed.Watch(ctx, mgr.GetCache()); err != nil {
		return nil, fmt.Errorf("watching the xds inputs: %w", err)
	}
	srv := &Server{
		Addr:             o.Addr,
		Listener:         o.Listener,
		TLS:              o.TLS,
		Reviewer:         NewCachingReviewer(&KubeTokenReviewer{Client: mgr.GetClient(), Audience: o.Audience}, 0, 0, nil, NewReviewMetrics(ctrlmetrics.Registry)),
		Feed:             feed,
		Caches:           caches,
		WaitForSync:      mgr.GetCache().WaitForCacheSync,
		MaxStreamsPerPod: o.MaxStreamsPerPod,
		Metrics:          ctrlmetrics.Registry,
		Log:              o.Log,
	}
	if err := mgr.Add(srv); err != nil {
		return nil, fmt.Errorf("adding the xds server: %w", err)
	}
	return srv, nil
}

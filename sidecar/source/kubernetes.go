// Package source feeds the sidecar's state: the APIKeys, the SigningKeys
// (their status JWKS), the JWKS ConfigMaps and the AuthPolicies of one
// namespace, read from the Kubernetes API (informers, read-only,
// namespace-scoped), from the operator over delta xDS, or from a directory
// of YAML files (standalone use and tests). Every source delivers the
// complete inputs each time something changed; building and swapping the
// snapshot is the caller's business.
package source

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/scheme"
	"gatehouse.dev/gatehouse/sidecar/snapshot"
)

// Source delivers the sidecar's inputs.
type Source interface {
	// Run blocks until ctx ends or the source fails for good, telling ev
	// what it observes.
	Run(ctx context.Context, ev Events) error
}

// Events receives what a source observes. A source calls Changed from a
// single goroutine; Failed and Confirmed may come from others.
type Events struct {
	// Changed receives the complete inputs once they have been read
	// entirely, and again after every change. It must not keep or modify
	// the objects beyond the call: they may be shared with the source's
	// cache.
	Changed func(snapshot.Inputs)
	// Delta, for a source that learns what changed (the xDS source),
	// receives the changes instead: first the complete state, then what
	// each update changed. It must not keep or modify what it is given
	// beyond the call. Sources that read whole states leave it unused.
	Delta func(snapshot.Delta)
	// Failed is told of every failure to read (the API server unreachable,
	// an unparsable file). The source retries on its own; the last inputs
	// stay in force.
	Failed func(error)
	// Confirmed says the inputs last delivered are still current: the
	// state is fresh even though nothing changed.
	Confirmed func()
}

// RecordSelector selects the ConfigMaps a sidecar reads: the JWKS
// documents, labelled auth.gatehouse.dev/record=jwks. API keys come from
// APIKeys, never from ConfigMaps.
func RecordSelector() labels.Selector {
	req, err := labels.NewRequirement(gatehousev1.LabelRecord, selection.Equals, []string{gatehousev1.RecordJWKS})
	if err != nil {
		panic(err) // constant input
	}
	return labels.NewSelector().Add(*req)
}

// Kubernetes watches one namespace through the API server. It needs only
// get, list and watch on apikeys, signingkeys, configmaps and authpolicies
// in that namespace.
// While the API server is unreachable the informers keep their last state
// (and so the sidecar keeps serving it); they resync when it returns.
type Kubernetes struct {
	Config    *rest.Config
	Namespace string
	Log       logr.Logger
	// ProbeInterval is how often the API server is asked whether it is
	// reachable (DefaultProbeInterval when 0). Informers retry a broken
	// watch silently; the probe is what tells metrics and logs about an
	// outage, and confirms a quiet state as fresh.
	ProbeInterval time.Duration
}

// DefaultProbeInterval is the default Kubernetes.ProbeInterval.
const DefaultProbeInterval = 10 * time.Second

// Run implements Source.
func (k *Kubernetes) Run(ctx context.Context, ev Events) error {
	if k.Namespace == "" {
		return errors.New("kubernetes source: a namespace is required")
	}
	noCopy := true
	c, err := cache.New(k.Config, cache.Options{
		Scheme:            scheme.New(),
		DefaultNamespaces: map[string]cache.Config{k.Namespace: {}},
		ByObject: map[client.Object]cache.ByObject{
			&corev1.ConfigMap{}: {Label: RecordSelector()},
		},
		// Keep only what the builder reads: with 100,000 APIKeys, managed
		// fields, conditions and annotations (kubectl's last-applied copy)
		// would more than double the memory of the cache.
		DefaultTransform: slimObject,
		// The builder never modifies objects; copying 100,000 APIKeys on
		// every rebuild would only churn memory.
		DefaultUnsafeDisableDeepCopy: &noCopy,
		DefaultWatchErrorHandler: func(ctx context.Context, r *toolscache.Reflector, err error) {
			ev.Failed(err)
			toolscache.DefaultWatchErrorHandler(ctx, r, err)
		},
	})
	if err != nil {
		return fmt.Errorf("creating the informer cache: %w", err)
	}
	dirty := make(chan struct{}, 1)
	mark := func() {
		select {
		case dirty <- struct{}{}:
		default:
		}
	}
	handler := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { mark() },
		UpdateFunc: func(any, any) { mark() },
		DeleteFunc: func(any) { mark() },
	}
	for _, obj := range []client.Object{&gatehousev1.APIKey{}, &gatehousev1.SigningKey{}, &corev1.ConfigMap{}, &gatehousev1.AuthPolicy{}} {
		inf, err := c.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("getting the informer for %T: %w", obj, err)
		}
		if _, err := inf.AddEventHandler(handler); err != nil {
			return fmt.Errorf("watching %T: %w", obj, err)
		}
	}
	startErr := make(chan error, 1)
	go func() { startErr <- c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		if ctx.Err() != nil {
			return nil
		}
		return errors.New("kubernetes source: informers did not sync")
	}
	k.Log.Info("informers synced", "namespace", k.Namespace)
	probe, err := client.New(k.Config, client.Options{Scheme: scheme.New()})
	if err != nil {
		return fmt.Errorf("creating the probe client: %w", err)
	}
	interval := k.ProbeInterval
	if interval <= 0 {
		interval = DefaultProbeInterval
	}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	reachable := true
	mark()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-startErr:
			if err != nil {
				return fmt.Errorf("informer cache stopped: %w", err)
			}
			return nil
		case <-ticker.C:
			err := k.probe(ctx, probe)
			switch {
			case err != nil:
				if reachable {
					k.Log.Error(err, "the API server is unreachable; serving the last state")
				}
				reachable = false
				ev.Failed(err)
			default:
				if !reachable {
					k.Log.Info("the API server is reachable again")
				}
				reachable = true
				ev.Confirmed()
			}
		case <-dirty:
			in, err := k.list(ctx, c)
			if err != nil {
				// The cache is local; a list fails only on a bug. Keep
				// serving the last state and say so.
				k.Log.Error(err, "listing cached objects")
				ev.Failed(err)
				continue
			}
			ev.Changed(in)
		}
	}
}

// probe lists at most one APIKey's metadata straight from the API server:
// the cheapest request the sidecar's Role allows.
func (k *Kubernetes) probe(ctx context.Context, c client.Client) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(gatehousev1.GroupVersion.WithKind("APIKeyList"))
	if err := c.List(ctx, list, client.InNamespace(k.Namespace), client.Limit(1)); err != nil {
		return fmt.Errorf("probing the API server: %w", err)
	}
	return nil
}

func (k *Kubernetes) list(ctx context.Context, c cache.Cache) (snapshot.Inputs, error) {
	var in snapshot.Inputs
	var aks gatehousev1.APIKeyList
	if err := c.List(ctx, &aks, client.InNamespace(k.Namespace), client.UnsafeDisableDeepCopy); err != nil {
		return in, fmt.Errorf("listing apikeys: %w", err)
	}
	var cms corev1.ConfigMapList
	if err := c.List(ctx, &cms, client.InNamespace(k.Namespace), client.UnsafeDisableDeepCopy); err != nil {
		return in, fmt.Errorf("listing configmaps: %w", err)
	}
	var aps gatehousev1.AuthPolicyList
	if err := c.List(ctx, &aps, client.InNamespace(k.Namespace), client.UnsafeDisableDeepCopy); err != nil {
		return in, fmt.Errorf("listing authpolicies: %w", err)
	}
	var sks gatehousev1.SigningKeyList
	if err := c.List(ctx, &sks, client.InNamespace(k.Namespace), client.UnsafeDisableDeepCopy); err != nil {
		return in, fmt.Errorf("listing signingkeys: %w", err)
	}
	in.SigningKeys = make([]*gatehousev1.SigningKey, len(sks.Items))
	for i := range sks.Items {
		in.SigningKeys[i] = &sks.Items[i]
	}
	in.APIKeys = make([]*gatehousev1.APIKey, len(aks.Items))
	for i := range aks.Items {
		in.APIKeys[i] = &aks.Items[i]
	}
	in.ConfigMaps = make([]*corev1.ConfigMap, len(cms.Items))
	for i := range cms.Items {
		in.ConfigMaps[i] = &cms.Items[i]
	}
	in.Policies = make([]*gatehousev1.AuthPolicy, len(aps.Items))
	for i := range aps.Items {
		in.Policies[i] = &aps.Items[i]
	}
	return in, nil
}

// slimObject drops from cached objects every field the snapshot builder
// does not read. With 100,000 APIKeys the informer's store holds 100,000
// of them for the life of the sidecar: each is replaced by SlimAPIKey's copy.
func slimObject(obj any) (any, error) {
	if ak, ok := obj.(*gatehousev1.APIKey); ok {
		return SlimAPIKey(ak), nil
	}
	o, ok := obj.(client.Object)
	if !ok {
		return obj, nil // a tombstone
	}
	o.SetManagedFields(nil)
	o.SetAnnotations(nil)
	o.SetOwnerReferences(nil)
	o.SetFinalizers(nil)
	if cm, ok := o.(*corev1.ConfigMap); ok {
		cm.BinaryData = nil
	}
	return o, nil
}

// SlimAPIKey returns a new APIKey holding only what apikeyformat.RecordOf
// and the snapshot builder read for a sidecar: name, namespace, UID,
// version and deletion timestamp; subject, scopes, expiry, disabled, hash
// and rate limit; state and keys (without their issue times). Labels,
// annotations, managed fields, conditions, token exchange and the other
// status fields are dropped.
func SlimAPIKey(ak *gatehousev1.APIKey) *gatehousev1.APIKey {
	out := &gatehousev1.APIKey{
		ObjectMeta: metav1.ObjectMeta{
			Name: ak.Name, Namespace: ak.Namespace, UID: ak.UID, ResourceVersion: ak.ResourceVersion,
			DeletionTimestamp: ak.DeletionTimestamp,
		},
		Spec: gatehousev1.APIKeySpec{
			Subject:   ak.Spec.Subject,
			Scopes:    ak.Spec.Scopes,
			ExpiresAt: ak.Spec.ExpiresAt,
			Disabled:  ak.Spec.Disabled,
			Hash:      ak.Spec.Hash,
			RateLimit: ak.Spec.RateLimit,
		},
		Status: gatehousev1.APIKeyStatus{State: ak.Status.State},
	}
	if n := len(ak.Status.Keys); n > 0 {
		out.Status.Keys = make([]gatehousev1.APIKeyStatusKey, n)
		for i, k := range ak.Status.Keys {
			out.Status.Keys[i] = gatehousev1.APIKeyStatusKey{KeyID: k.KeyID, SHA256: k.SHA256, NotAfter: k.NotAfter}
		}
	}
	return out
}

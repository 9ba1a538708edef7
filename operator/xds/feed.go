package xds

import (
	"context"
	"fmt"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/go-logr/logr"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	k8stypes "k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	ctrlcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
)

// Feed keeps the caches in step with the operator's informer cache: one
// APIKeyEntry per APIKey, updated alone when its APIKey changes, and the
// IssuerKeySets and AuthPolicies of a namespace, recompiled together when
// one of its SigningKeys, AuthPolicies or JWKS ConfigMaps changes (a
// namespace holds a handful of them; clients are sent only those whose
// content changed).
type Feed struct {
	// Reader reads the manager's informer cache.
	Reader client.Reader
	Caches *Namespaces
	Log    logr.Logger

	queue workqueue.TypedRateLimitingInterface[item]
}

// item is one unit of work: one APIKey (name set) or the trust state of a
// namespace (name empty).
type item struct {
	namespace string
	apiKey    string
}

// Watch registers the Feed's event handlers on the informers. Call it
// before the informers start, then Run.
func (f *Feed) Watch(ctx context.Context, informers ctrlcache.Informers) error {
	f.queue = workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[item](),
		workqueue.TypedRateLimitingQueueConfig[item]{Name: "xds"})
	apiKeys := func(obj any) {
		if o := objectOf(obj); o != nil {
			f.queue.Add(item{namespace: o.GetNamespace(), apiKey: o.GetName()})
		}
	}
	trust := func(obj any) {
		if o := objectOf(obj); o != nil {
			f.queue.Add(item{namespace: o.GetNamespace()})
		}
	}
	jwks := func(obj any) {
		if o := objectOf(obj); o != nil && o.GetLabels()[gatehousev1.LabelRecord] == gatehousev1.RecordJWKS {
			f.queue.Add(item{namespace: o.GetNamespace()})
		}
	}
	handlers := map[client.Object]func(any){
		&gatehousev1.APIKey{}:     apiKeys,
		&gatehousev1.SigningKey{}: trust,
		&gatehousev1.AuthPolicy{}: trust,
		&corev1.ConfigMap{}:       jwks,
	}
	for obj, h := range handlers {
		inf, err := informers.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("getting the informer for %T: %w", obj, err)
		}
		_, err = inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc:    h,
			UpdateFunc: func(old, cur any) { h(old); h(cur) },
			DeleteFunc: h,
		})
		if err != nil {
			return fmt.Errorf("watching %T: %w", obj, err)
		}
	}
	return nil
}

// objectOf is the object of an event, tombstones included.
func objectOf(obj any) client.Object {
	if t, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	o, _ := obj.(client.Object)
	return o
}

// Load fills the caches from the informer cache, which must have synced.
// A server answers no stream before Load returns: a sidecar must never
// take a partial state for a complete one.
func (f *Feed) Load(ctx context.Context) error {
	var aks gatehousev1.APIKeyList
	if err := f.Reader.List(ctx, &aks, client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("listing apikeys: %w", err)
	}
	byNS := map[string]map[string]types.Resource{}
	for i := range aks.Items {
		ak := &aks.Items[i]
		if byNS[ak.Namespace] == nil {
			byNS[ak.Namespace] = map[string]types.Resource{}
		}
		byNS[ak.Namespace][ak.Name] = APIKeyEntry(ak)
	}
	for ns, entries := range byNS {
		if err := f.Caches.Update(ns, APIKeyEntryType, entries, nil); err != nil {
			return err
		}
	}
	namespaces := map[string]bool{}
	var sks gatehousev1.SigningKeyList
	if err := f.Reader.List(ctx, &sks, client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("listing signingkeys: %w", err)
	}
	for i := range sks.Items {
		namespaces[sks.Items[i].Namespace] = true
	}
	var aps gatehousev1.AuthPolicyList
	if err := f.Reader.List(ctx, &aps, client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("listing authpolicies: %w", err)
	}
	for i := range aps.Items {
		namespaces[aps.Items[i].Namespace] = true
	}
	for ns := range namespaces {
		if err := f.syncTrust(ctx, ns); err != nil {
			return err
		}
	}
	f.Log.Info("xds caches loaded", "apiKeys", len(aks.Items), "namespaces", len(byNS)+len(namespaces))
	return nil
}

// Run applies changes until ctx ends. Call it after Load.
func (f *Feed) Run(ctx context.Context) {
	go func() {
		<-ctx.Done()
		f.queue.ShutDown()
	}()
	for {
		it, quit := f.queue.Get()
		if quit {
			return
		}
		if err := f.sync(ctx, it); err != nil {
			f.Log.Error(err, "updating the xds cache; retrying", "namespace", it.namespace, "apiKey", it.apiKey)
			f.queue.AddRateLimited(it)
		} else {
			f.queue.Forget(it)
		}
		f.queue.Done(it)
	}
}

func (f *Feed) sync(ctx context.Context, it item) error {
	if it.apiKey == "" {
		return f.syncTrust(ctx, it.namespace)
	}
	return f.syncAPIKey(ctx, it.namespace, it.apiKey)
}

// syncAPIKey updates or removes the entry of one APIKey.
func (f *Feed) syncAPIKey(ctx context.Context, ns, name string) error {
	var ak gatehousev1.APIKey
	err := f.Reader.Get(ctx, k8stypes.NamespacedName{Namespace: ns, Name: name}, &ak, client.UnsafeDisableDeepCopy)
	switch {
	case apierrors.IsNotFound(err):
		return f.Caches.Update(ns, APIKeyEntryType, nil, []string{name})
	case err != nil:
		return fmt.Errorf("reading apikey %s/%s: %w", ns, name, err)
	}
	return f.Caches.Update(ns, APIKeyEntryType, map[string]types.Resource{name: APIKeyEntry(&ak)}, nil)
}

// syncTrust recompiles the IssuerKeySets and AuthPolicies of ns.
func (f *Feed) syncTrust(ctx context.Context, ns string) error {
	configMap := func(name string) *corev1.ConfigMap {
		cm := &corev1.ConfigMap{}
		if err := f.Reader.Get(ctx, k8stypes.NamespacedName{Namespace: ns, Name: name}, cm, client.UnsafeDisableDeepCopy); err != nil {
			return nil
		}
		return cm
	}
	var sks gatehousev1.SigningKeyList
	if err := f.Reader.List(ctx, &sks, client.InNamespace(ns), client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("listing signingkeys of %s: %w", ns, err)
	}
	sets := map[string]types.Resource{}
	for i := range sks.Items {
		sk := &sks.Items[i]
		if r := IssuerKeySet(sk); r != nil {
			sets[sk.Name] = r
		}
	}
	var aps gatehousev1.AuthPolicyList
	if err := f.Reader.List(ctx, &aps, client.InNamespace(ns), client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("listing authpolicies of %s: %w", ns, err)
	}
	policies := map[string]types.Resource{}
	for i := range aps.Items {
		if p := &aps.Items[i]; p.DeletionTimestamp == nil {
			policies[p.Name] = AuthPolicy(p, configMap)
		}
	}
	if err := f.replace(ns, IssuerKeySetType, sets); err != nil {
		return err
	}
	return f.replace(ns, AuthPolicyType, policies)
}

// replace makes want the resources of typeURL in ns, touching only those
// that changed.
func (f *Feed) replace(ns, typeURL string, want map[string]types.Resource) error {
	have := f.Caches.Cache(ns, typeURL).GetResources()
	var toDelete []string
	for name := range have {
		if _, ok := want[name]; !ok {
			toDelete = append(toDelete, name)
		}
	}
	for name, r := range want {
		if old, ok := have[name]; ok && proto.Equal(old, r) {
			delete(want, name)
		}
	}
	return f.Caches.Update(ns, typeURL, want, toDelete)
}

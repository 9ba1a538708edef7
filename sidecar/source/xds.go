package source

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/go-logr/logr"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	xdsv1alpha1 "gatehouse.dev/gatehouse/api/xds/v1alpha1"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
	"gatehouse.dev/gatehouse/sidecar/snapshot"
)

// Type URLs of the resources the operator serves (api/xds/v1alpha1).
const (
	xdsAPIKeyEntryType  = "type.googleapis.com/gatehouse.xds.v1alpha1.APIKeyEntry"
	xdsIssuerKeySetType = "type.googleapis.com/gatehouse.xds.v1alpha1.IssuerKeySet"
	xdsAuthPolicyType   = "type.googleapis.com/gatehouse.xds.v1alpha1.AuthPolicy"
)

var xdsTypes = []string{xdsAPIKeyEntryType, xdsIssuerKeySetType, xdsAuthPolicyType}

// XDS receives the namespace's state from the operator over delta xDS
// (aggregated, one stream, every type subscribed with a wildcard),
// authenticated by the pod's projected ServiceAccount token over TLS. It
// delivers the state as deltas (Events.Delta, which it requires): the
// complete state once every type has been answered (a new sidecar denies
// everything until then), then what each response changed, so that the
// sidecar applies a change in time proportional to it. It keeps the last
// state while no operator is reachable, and reconnects with the versions
// it holds, so that only what changed is sent again. It holds the
// versions, the key sets and the policies, not the API key records: the
// snapshot does.
type XDS struct {
	// Target is the gRPC target of the operator's xDS Service, for example
	// dns:///gatehouse-xds.gatehouse.svc:15010; the resolver's addresses
	// (the replicas) are tried in turn.
	Target string
	// TLS must trust the operator's CA and name the Service.
	TLS *tls.Config
	// TokenFile holds the projected ServiceAccount token; it is read again
	// for every stream, as the kubelet rotates it.
	TokenFile string
	// Namespace is the sidecar's namespace.
	Namespace string
	Log       logr.Logger
	// ConfirmInterval is how often a live stream confirms the state as
	// fresh (DefaultProbeInterval when 0).
	ConfirmInterval time.Duration
}

// Backoff between two streams.
const (
	xdsMinBackoff = 250 * time.Millisecond
	xdsMaxBackoff = 30 * time.Second
)

// Run implements Source.
func (x *XDS) Run(ctx context.Context, ev Events) error {
	if x.TLS == nil || x.Target == "" || x.TokenFile == "" {
		return errors.New("xds source: a target, TLS and a token file are required")
	}
	if ev.Delta == nil {
		return errors.New("xds source: it delivers deltas, and Events.Delta is nil")
	}
	conn, err := grpc.NewClient(x.Target, x.dialOptions()...)
	if err != nil {
		return fmt.Errorf("xds source: %w", err)
	}
	defer func() { _ = conn.Close() }()
	st := newXDSState(x.Namespace)
	var live atomic.Bool
	go x.confirm(ctx, &live, ev)
	backoff := xdsMinBackoff
	for ctx.Err() == nil {
		answered, err := x.stream(ctx, conn, st, &live, ev)
		live.Store(false)
		if ctx.Err() != nil {
			return nil
		}
		x.Log.Error(err, "xds stream ended; serving the last state", "retryIn", backoff.String())
		ev.Failed(err)
		if answered {
			backoff = xdsMinBackoff
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(backoff*2, xdsMaxBackoff)
	}
	return nil
}

// confirm tells ev the state is fresh while a stream is live.
func (x *XDS) confirm(ctx context.Context, live *atomic.Bool, ev Events) {
	interval := x.ConfirmInterval
	if interval <= 0 {
		interval = DefaultProbeInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if live.Load() {
				ev.Confirmed()
			}
		}
	}
}

// stream runs one ADS stream until it fails; answered says whether the
// operator answered anything on it.
func (x *XDS) stream(ctx context.Context, conn *grpc.ClientConn, st *xdsState, live *atomic.Bool, ev Events) (answered bool, err error) {
	token, err := os.ReadFile(x.TokenFile)
	if err != nil {
		return false, fmt.Errorf("reading the service account token: %w", err)
	}
	sctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+strings.TrimSpace(string(token))))
	defer cancel()
	s, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(sctx)
	if err != nil {
		return false, fmt.Errorf("opening the xds stream: %w", err)
	}
	for _, typ := range xdsTypes {
		req := &discovery.DeltaDiscoveryRequest{TypeUrl: typ, ResourceNamesSubscribe: []string{"*"}, InitialResourceVersions: maps.Clone(st.versions[typ])}
		if err := s.Send(req); err != nil {
			_, err = s.Recv() // the stream's status says why
			return false, fmt.Errorf("subscribing: %w", err)
		}
	}
	answeredTypes := map[string]bool{}
	for {
		r, err := s.Recv()
		if err != nil {
			return answered, fmt.Errorf("receiving: %w", err)
		}
		answered = true
		answeredTypes[r.GetTypeUrl()] = true
		ack := &discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()}
		if bad := st.apply(r); len(bad) > 0 {
			x.Log.Info("refused undecodable xds resources; their state is dropped", "type", r.GetTypeUrl(), "names", bad)
			ack.ErrorDetail = &status.Status{Code: int32(codes.InvalidArgument), Message: "undecodable resources: " + strings.Join(bad, ", ")}
		}
		if err := s.Send(ack); err != nil {
			return answered, fmt.Errorf("acknowledging: %w", err)
		}
		st.complete = st.complete || len(answeredTypes) == len(xdsTypes)
		if st.complete {
			live.Store(true)
			if d, ok := st.delta(); ok {
				ev.Delta(d)
			}
		}
	}
}

// xdsState is what the sidecar holds of the operator's resources: their
// versions, the key sets and policies (few and small), and the API key
// changes not yet delivered.
type xdsState struct {
	ns       string
	versions map[string]map[string]string
	keySets  map[string]*gatehousev1.SigningKey
	policies map[string]*gatehousev1.AuthPolicy
	// records are the API key changes not yet delivered: the record of a
	// name, nil when it was removed.
	records map[string]*apikeyformat.Record
	// policyChanged says a key set or policy changed since the last
	// delivery.
	policyChanged bool
	// complete is set once every type has been answered; delivered once
	// the complete state has been.
	complete, delivered bool
}

func newXDSState(ns string) *xdsState {
	st := &xdsState{
		ns: ns, versions: map[string]map[string]string{},
		records: map[string]*apikeyformat.Record{}, keySets: map[string]*gatehousev1.SigningKey{}, policies: map[string]*gatehousev1.AuthPolicy{},
	}
	for _, t := range xdsTypes {
		st.versions[t] = map[string]string{}
	}
	return st
}

// apply applies one response and returns the names it could not decode,
// whose state is dropped (fail closed) and whose version is forgotten.
func (st *xdsState) apply(r *discovery.DeltaDiscoveryResponse) (bad []string) {
	typ := r.GetTypeUrl()
	vers, ok := st.versions[typ]
	if !ok {
		return nil
	}
	for _, name := range r.GetRemovedResources() {
		st.remove(typ, name)
	}
	for _, res := range r.GetResources() {
		name := res.GetName()
		err := errors.New("resource of another type")
		if res.GetResource().GetTypeUrl() == typ {
			err = st.put(typ, name, res.GetResource().GetValue())
		}
		if err != nil {
			st.remove(typ, name)
			bad = append(bad, name)
			continue
		}
		vers[name] = res.GetVersion()
	}
	return bad
}

func (st *xdsState) remove(typ, name string) {
	delete(st.versions[typ], name)
	switch typ {
	case xdsAPIKeyEntryType:
		st.records[name] = nil
	case xdsIssuerKeySetType:
		delete(st.keySets, name)
		st.policyChanged = true
	case xdsAuthPolicyType:
		delete(st.policies, name)
		st.policyChanged = true
	}
}

func (st *xdsState) put(typ, name string, value []byte) error {
	switch typ {
	case xdsAPIKeyEntryType:
		e := &xdsv1alpha1.APIKeyEntry{}
		if err := unmarshalNamed(value, e, name); err != nil {
			return err
		}
		st.records[name] = recordFromXDS(e, st.ns)
	case xdsIssuerKeySetType:
		ks := &xdsv1alpha1.IssuerKeySet{}
		if err := unmarshalNamed(value, ks, name); err != nil {
			return err
		}
		st.keySets[name] = signingKeyFromXDS(ks, st.ns)
		st.policyChanged = true
	case xdsAuthPolicyType:
		p := &xdsv1alpha1.AuthPolicy{}
		if err := unmarshalNamed(value, p, name); err != nil {
			return err
		}
		st.policies[name] = policyFromXDS(p, st.ns)
		st.policyChanged = true
	}
	return nil
}

// delta takes the changes not yet delivered: the complete state the first
// time. ok is false when there are none.
func (st *xdsState) delta() (d snapshot.Delta, ok bool) {
	for name, r := range st.records {
		if r == nil {
			d.Removed = append(d.Removed, name)
		} else {
			d.Records = append(d.Records, r)
		}
	}
	if st.policyChanged || !st.delivered {
		d.Policy = &snapshot.PolicyInputs{
			SigningKeys: slices.Collect(maps.Values(st.keySets)),
			Policies:    slices.Collect(maps.Values(st.policies)),
		}
	}
	ok = !st.delivered || len(st.records) > 0 || d.Policy != nil
	st.records = map[string]*apikeyformat.Record{} // not clear: the first state's map would keep its size
	st.policyChanged, st.delivered = false, true
	return d, ok
}

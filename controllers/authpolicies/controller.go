// Package authpolicies reconciles AuthPolicy status: it checks that what a
// policy refers to exists and parses (SigningKeys, JWKS ConfigMaps, inline
// JWKS), so that a typo shows up as Ready=False with a reason at apply time
// instead of as denied requests at the sidecar.
//
// The sidecars read AuthPolicies themselves; this controller only reports.
package authpolicies

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/lestrrat-go/jwx/v2/jwk"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/conditions"
)

// Reconciler sets the Ready condition of AuthPolicies.
type Reconciler struct {
	Client client.Client
	// APIReader reads a JWKS ConfigMap that an AuthPolicy names: it is the
	// user's, without the operator's label, so the cache does not hold it.
	// Client when nil.
	APIReader client.Reader
	Clock     clock.PassiveClock
}

// +kubebuilder:rbac:groups=auth.gatehouse.dev,resources=authpolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=auth.gatehouse.dev,resources=authpolicies/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=auth.gatehouse.dev,resources=signingkeys,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch

func (r *Reconciler) apiReader() client.Reader {
	if r.APIReader != nil {
		return r.APIReader
	}
	return r.Client
}

// Reconcile checks one AuthPolicy's references and records the verdict.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	policy := &gatehousev1.AuthPolicy{}
	if err := r.Client.Get(ctx, req.NamespacedName, policy); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	reason, message := r.check(ctx, policy)
	status := metav1.ConditionTrue
	if reason != gatehousev1.ReasonAccepted {
		status = metav1.ConditionFalse
	}
	before := policy.Status.DeepCopy()
	policy.Status.ObservedGeneration = policy.Generation
	conditions.Set(&policy.Status.Conditions, policy.Generation, metav1.NewTime(r.Clock.Now()), gatehousev1.ConditionReady, status, reason, message)
	if equalStatus(before, &policy.Status) {
		return reconcile.Result{}, nil
	}
	if err := r.Client.Status().Update(ctx, policy); err != nil {
		return reconcile.Result{}, fmt.Errorf("updating authpolicy status: %w", err)
	}
	return reconcile.Result{}, nil
}

func equalStatus(a, b *gatehousev1.AuthPolicyStatus) bool {
	return a.ObservedGeneration == b.ObservedGeneration && slices.EqualFunc(a.Conditions, b.Conditions, func(x, y metav1.Condition) bool {
		return x.Type == y.Type && x.Status == y.Status && x.Reason == y.Reason && x.Message == y.Message && x.ObservedGeneration == y.ObservedGeneration
	})
}

// check returns ReasonAccepted, or the reason and message of the first
// problem found. Messages name the issuer entry and the missing object.
func (r *Reconciler) check(ctx context.Context, p *gatehousev1.AuthPolicy) (string, string) {
	var problems []string
	reason := gatehousev1.ReasonAccepted
	for _, iss := range p.Spec.Issuers {
		switch {
		case iss.SigningKeyRef != nil:
			sk := &gatehousev1.SigningKey{}
			err := r.Client.Get(ctx, types.NamespacedName{Namespace: p.Namespace, Name: iss.SigningKeyRef.Name}, sk)
			if apierrors.IsNotFound(err) {
				reason = gatehousev1.ReasonIssuerNotFound
				problems = append(problems, fmt.Sprintf("issuer %q: SigningKey %q does not exist in namespace %s", iss.Name, iss.SigningKeyRef.Name, p.Namespace))
			} else if err != nil {
				return gatehousev1.ReasonIssuerNotFound, fmt.Sprintf("issuer %q: reading SigningKey %q failed: %v", iss.Name, iss.SigningKeyRef.Name, err)
			}
		case iss.JWKS != nil && iss.JWKS.Inline != "":
			if msg := checkJWKS([]byte(iss.JWKS.Inline)); msg != "" {
				reason = gatehousev1.ReasonInvalidIssuer
				problems = append(problems, fmt.Sprintf("issuer %q: inline JWKS %s", iss.Name, msg))
			}
		case iss.JWKS != nil && iss.JWKS.ConfigMapKeyRef != nil:
			ref := iss.JWKS.ConfigMapKeyRef
			cm := &corev1.ConfigMap{}
			err := r.apiReader().Get(ctx, types.NamespacedName{Namespace: p.Namespace, Name: ref.Name}, cm)
			switch {
			case apierrors.IsNotFound(err):
				reason = gatehousev1.ReasonIssuerNotFound
				problems = append(problems, fmt.Sprintf("issuer %q: ConfigMap %q does not exist", iss.Name, ref.Name))
			case err != nil:
				return gatehousev1.ReasonIssuerNotFound, fmt.Sprintf("issuer %q: reading ConfigMap %q failed: %v", iss.Name, ref.Name, err)
			default:
				data, ok := cm.Data[ref.Key]
				if !ok {
					reason = gatehousev1.ReasonIssuerNotFound
					problems = append(problems, fmt.Sprintf("issuer %q: ConfigMap %q has no key %q", iss.Name, ref.Name, ref.Key))
				} else if msg := checkJWKS([]byte(data)); msg != "" {
					reason = gatehousev1.ReasonInvalidIssuer
					problems = append(problems, fmt.Sprintf("issuer %q: JWKS in ConfigMap %q key %q %s", iss.Name, ref.Name, ref.Key, msg))
				}
			}
		}
	}
	if len(problems) > 0 {
		return reason, strings.Join(problems, "; ") + "."
	}
	return gatehousev1.ReasonAccepted, fmt.Sprintf("The policy is valid: %d issuer(s), %d rule(s).", len(p.Spec.Issuers), len(p.Spec.Rules))
}

// checkJWKS returns "" when data is a JWKS of public asymmetric keys.
func checkJWKS(data []byte) string {
	set, err := jwk.Parse(data)
	if err != nil {
		return "is not a valid JWKS"
	}
	if set.Len() == 0 {
		return "has no keys"
	}
	for i := 0; i < set.Len(); i++ {
		k, _ := set.Key(i)
		switch k.KeyType() {
		case "EC", "RSA", "OKP":
		default:
			return "holds a symmetric or unknown key type, which verifiers refuse"
		}
		if _, isPrivate := privateMarker(k); isPrivate {
			return "holds private key material; publish public keys only"
		}
	}
	return ""
}

func privateMarker(k jwk.Key) (string, bool) {
	for _, field := range []string{"d", "p", "q"} {
		if _, ok := k.Get(field); ok {
			return field, true
		}
	}
	return "", false
}

// SetupWithManager registers the controller. SigningKey changes re-check the
// policies of their namespace; a referenced JWKS ConfigMap is re-checked when
// the policy changes (watching every ConfigMap of the cluster would cost the
// operator far more memory than this report is worth).
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&gatehousev1.AuthPolicy{}).
		Watches(&gatehousev1.SigningKey{}, handler.EnqueueRequestsFromMapFunc(r.policiesInNamespace)).
		Named("authpolicy").
		Complete(r)
}

func (r *Reconciler) policiesInNamespace(ctx context.Context, obj client.Object) []reconcile.Request {
	list := &gatehousev1.AuthPolicyList{}
	if err := r.Client.List(ctx, list, client.InNamespace(obj.GetNamespace())); err != nil {
		return nil
	}
	out := make([]reconcile.Request, 0, len(list.Items))
	for _, p := range list.Items {
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: p.Namespace, Name: p.Name}})
	}
	return out
}

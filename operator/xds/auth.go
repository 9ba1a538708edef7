package xds

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// DefaultAudience is the audience sidecars request for their projected
// ServiceAccount token, and the only one the server accepts.
const DefaultAudience = "gatehouse-xds"

// maxTokenBytes bounds the bearer token sent to TokenReview.
const maxTokenBytes = 16 << 10

// Identity is who a stream authenticated as: a ServiceAccount, and the pod
// its token is bound to.
type Identity struct {
	Namespace      string
	ServiceAccount string
	// PodName and PodUID name the pod the token is bound to (the kubelet
	// binds every projected token to its pod). The server bounds the
	// streams of one pod by PodUID (MaxStreamsPerPod).
	PodName string
	PodUID  string
}

// The keys of a TokenReview's status.user.extra that name the pod a token
// is bound to (set by the API server for a token requested with a Pod as
// boundObjectRef, as the kubelet requests every projected token).
const (
	podNameExtra = "authentication.kubernetes.io/pod-name"
	podUIDExtra  = "authentication.kubernetes.io/pod-uid"
)

// TokenReviewer authenticates a bearer token: the ServiceAccount it was
// issued to, or an error.
type TokenReviewer interface {
	Review(ctx context.Context, token string) (Identity, error)
}

// errUnauthenticated is every authentication failure as the client sees
// it: nothing about why, so that the answer tells an attacker nothing.
var errUnauthenticated = status.Error(codes.Unauthenticated, "a valid ServiceAccount token for the gatehouse-xds audience is required")

// KubeTokenReviewer checks tokens with the API server's TokenReview,
// bound to Audience: a token issued for another audience (the default API
// server audience included) is refused.
type KubeTokenReviewer struct {
	Client   client.Client
	Audience string
}

// Review implements TokenReviewer.
func (r *KubeTokenReviewer) Review(ctx context.Context, token string) (Identity, error) {
	aud := r.Audience
	if aud == "" {
		aud = DefaultAudience
	}
	tr := &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{aud}}}
	if err := r.Client.Create(ctx, tr); err != nil {
		return Identity{}, fmt.Errorf("token review: %w", err)
	}
	return identityOf(tr, aud)
}

// identityOf accepts a TokenReview's answer only when it says
// authenticated, for aud, as a ServiceAccount.
func identityOf(tr *authnv1.TokenReview, aud string) (Identity, error) {
	st := tr.Status
	if !st.Authenticated {
		return Identity{}, errors.New("token not authenticated")
	}
	found := false
	for _, a := range st.Audiences {
		found = found || a == aud
	}
	if !found {
		return Identity{}, errors.New("token not valid for the xds audience")
	}
	id, ok := serviceAccountOf(st.User.Username)
	if !ok {
		return Identity{}, errors.New("token not issued to a ServiceAccount")
	}
	id.PodName, id.PodUID, ok = podOf(st.User.Extra)
	if !ok {
		return Identity{}, errNotBoundToAPod
	}
	return id, nil
}

// errNotBoundToAPod refuses a ServiceAccount token that names no pod: one
// minted with TokenRequest without a boundObjectRef, or bound to a Secret.
// Sidecars hold projected tokens, which are always bound to their pod; a
// token that names no pod could not be held to a pod's stream bound.
var errNotBoundToAPod = errors.New("token not bound to a pod")

// podOf reads the pod a token is bound to from a review's user extra:
// exactly one name and one UID, both well formed.
func podOf(extra map[string]authnv1.ExtraValue) (name, uid string, ok bool) {
	names, uids := extra[podNameExtra], extra[podUIDExtra]
	if len(names) != 1 || len(uids) != 1 {
		return "", "", false
	}
	name, uid = names[0], uids[0]
	if len(validation.IsDNS1123Subdomain(name)) > 0 || uid == "" || len(uid) > maxPodUIDBytes {
		return "", "", false
	}
	return name, uid, true
}

// maxPodUIDBytes bounds the pod UID a review may carry (a UID is 36).
const maxPodUIDBytes = 128

// serviceAccountPrefix starts the user name of every ServiceAccount.
const serviceAccountPrefix = "system:serviceaccount:"

// serviceAccountOf parses "system:serviceaccount:<namespace>:<name>".
func serviceAccountOf(username string) (Identity, bool) {
	rest, ok := strings.CutPrefix(username, serviceAccountPrefix)
	if !ok {
		return Identity{}, false
	}
	ns, name, ok := strings.Cut(rest, ":")
	if !ok || len(validation.IsDNS1123Label(ns)) > 0 || len(validation.IsDNS1123Subdomain(name)) > 0 {
		return Identity{}, false
	}
	return Identity{Namespace: ns, ServiceAccount: name}, true
}

type identityKey struct{}

// identityFrom returns the identity the stream interceptor put in ctx.
func identityFrom(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok && id.Namespace != ""
}

// authStream is a server stream whose context carries its identity.
type authStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *authStream) Context() context.Context { return s.ctx }

// streamAuthenticator returns a gRPC stream interceptor that admits a
// stream only with a bearer token that reviewer accepts, and gives the
// handler the identity in the stream's context. It fails closed: no token,
// a malformed one or a review that fails all end the stream as
// Unauthenticated before any request is read.
func streamAuthenticator(reviewer TokenReviewer, onFailure func(error)) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx := ss.Context()
		token, ok := bearerToken(ctx)
		if !ok {
			onFailure(errors.New("no bearer token"))
			return errUnauthenticated
		}
		id, err := reviewer.Review(ctx, token)
		if err != nil {
			onFailure(err)
			return errUnauthenticated
		}
		return handler(srv, &authStream{ServerStream: ss, ctx: context.WithValue(ctx, identityKey{}, id)})
	}
}

// bearerToken is the token of the stream's one authorization header.
func bearerToken(ctx context.Context) (string, bool) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) != 1 {
		return "", false
	}
	scheme, token, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "bearer") || token == "" || len(token) > maxTokenBytes {
		return "", false
	}
	return token, true
}

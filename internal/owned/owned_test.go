package owned

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/scheme"
)

// fixture is a fake API server holding one APIKey, which owns what the
// tests write, and counting the writes that reach it.
type fixture struct {
	c       client.Client
	w       Writer
	owner   *gatehousev1.APIKey
	creates int
	updates int
	deletes []client.DeleteOptions
}

// testOwner is the owner every fixture holds.
func testOwner() *gatehousev1.APIKey {
	return &gatehousev1.APIKey{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "billing", UID: "owner-uid"}}
}

func newFixture(t *testing.T, objs ...client.Object) *fixture {
	t.Helper()
	f := &fixture{owner: testOwner()}
	f.c = fake.NewClientBuilder().
		WithScheme(scheme.New()).
		WithObjects(append([]client.Object{f.owner.DeepCopy()}, objs...)...).
		WithInterceptorFuncs(interceptor.Funcs{
			Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
				f.creates++
				return c.Create(ctx, obj, opts...)
			},
			Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
				f.updates++
				return c.Update(ctx, obj, opts...)
			},
			Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
				var o client.DeleteOptions
				o.ApplyOptions(opts)
				f.deletes = append(f.deletes, o)
				return c.Delete(ctx, obj, opts...)
			},
		}).
		Build()
	f.w = Writer{Client: f.c, Scheme: scheme.New()}
	return f
}

func (f *fixture) wantSecret() *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:   "ns",
			Name:        "billing-key",
			Labels:      Labels(f.owner, nil),
			Annotations: map[string]string{"issued": "now"},
		},
		Type: "gatehouse.dev/test",
		Data: map[string][]byte{"key": []byte("v2")},
	}
}

func (f *fixture) wantConfigMap() *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "billing-record", Labels: Labels(f.owner, map[string]string{"kind": "record"})},
		Data:       map[string]string{"record": "v2"},
	}
}

// controlledBy returns a reference that makes owner the controller.
func controlledBy(owner *gatehousev1.APIKey) []metav1.OwnerReference {
	yes := true
	return []metav1.OwnerReference{{APIVersion: gatehousev1.GroupVersion.String(), Kind: "APIKey", Name: owner.Name, UID: owner.UID, Controller: &yes, BlockOwnerDeletion: &yes}}
}

func (f *fixture) getSecret(t *testing.T) *corev1.Secret {
	t.Helper()
	sec := &corev1.Secret{}
	if err := f.c.Get(t.Context(), types.NamespacedName{Namespace: "ns", Name: "billing-key"}, sec); err != nil {
		t.Fatalf("reading the secret: %v", err)
	}
	return sec
}

func TestLabelsMarkTheOwnerAndAddExtra(t *testing.T) {
	got := Labels(&metav1.ObjectMeta{Name: "billing"}, map[string]string{gatehousev1.LabelRecord: gatehousev1.RecordAPIKey})
	want := map[string]string{
		gatehousev1.LabelManagedBy: gatehousev1.ManagedByValue,
		gatehousev1.LabelOwnerName: "billing",
		gatehousev1.LabelRecord:    gatehousev1.RecordAPIKey,
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}

func TestMergeStringsSetsWantedEntriesAndKeepsOthers(t *testing.T) {
	var have map[string]string
	if MergeStrings(&have, nil) || have != nil {
		t.Fatalf("merging nothing into nil changed it to %v", have)
	}
	if !MergeStrings(&have, map[string]string{"a": "1"}) || have["a"] != "1" {
		t.Fatalf("merging into nil: got %v, want a=1", have)
	}
	have["other"] = "kept"
	if MergeStrings(&have, map[string]string{"a": "1"}) {
		t.Fatal("merging entries already present reported a change")
	}
	if !MergeStrings(&have, map[string]string{"a": "2"}) || have["a"] != "2" || have["other"] != "kept" {
		t.Fatalf("got %v, want a=2 and other=kept", have)
	}
}

func TestSecretCreatesAMissingSecretControlledByTheOwner(t *testing.T) {
	f := newFixture(t)
	want := f.wantSecret()
	sec, written, err := f.w.Secret(t.Context(), f.owner, nil, want)
	if err != nil || !written || f.creates != 1 {
		t.Fatalf("got written=%v, err=%v, %d creates; want one create", written, err, f.creates)
	}
	if sec == want {
		t.Fatal("the writer created the caller's object instead of a copy")
	}
	if sec.ResourceVersion == "" {
		t.Fatal("the returned Secret lacks the server's resourceVersion: the next update could not be conditional")
	}
	got := f.getSecret(t)
	if !metav1.IsControlledBy(got, f.owner) || string(got.Data["key"]) != "v2" || got.Type != want.Type ||
		got.Annotations["issued"] != "now" || got.Labels[gatehousev1.LabelOwnerName] != "billing" {
		t.Fatalf("created %+v, want the wanted Secret controlled by the owner", got)
	}
}

func TestSecretLeavesAnUnchangedSecretAlone(t *testing.T) {
	f := newFixture(t)
	created, _, err := f.w.Secret(t.Context(), f.owner, nil, f.wantSecret())
	if err != nil {
		t.Fatal(err)
	}
	got, written, err := f.w.Secret(t.Context(), f.owner, created, f.wantSecret())
	if err != nil || written || f.updates != 0 {
		t.Fatalf("got written=%v, err=%v, %d updates; want no write", written, err, f.updates)
	}
	if got == created || got.ResourceVersion != created.ResourceVersion {
		t.Fatal("want a copy of the observed Secret back")
	}
}

func TestSecretUpdatesContentAndKeepsOthersMetadata(t *testing.T) {
	f := newFixture(t, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "ns", Name: "billing-key", OwnerReferences: controlledBy(testOwner()),
			Labels:      map[string]string{"team": "payments"},
			Annotations: map[string]string{"issued": "then", "note": "kept"},
		},
		Type: "gatehouse.dev/test",
		Data: map[string][]byte{"key": []byte("v1"), "extra": []byte("x")},
	})
	observed := f.getSecret(t)
	observed.StringData = map[string]string{"hand": "edit"} // the server folds it into data; a cached copy may not
	before := observed.DeepCopy()

	_, written, err := f.w.Secret(t.Context(), f.owner, observed, f.wantSecret())
	if err != nil || !written || f.updates != 1 {
		t.Fatalf("got written=%v, err=%v, %d updates; want one update", written, err, f.updates)
	}
	if observed.ResourceVersion != before.ResourceVersion || string(observed.Data["key"]) != "v1" {
		t.Fatal("the writer changed the observed Secret, which the caller may share with a cache")
	}
	got := f.getSecret(t)
	if len(got.Data) != 1 || string(got.Data["key"]) != "v2" {
		t.Fatalf("data %v, want exactly key=v2", got.Data)
	}
	if got.Labels["team"] != "payments" || got.Labels[gatehousev1.LabelManagedBy] != gatehousev1.ManagedByValue {
		t.Fatalf("labels %v, want others' labels kept and ours added", got.Labels)
	}
	if got.Annotations["note"] != "kept" || got.Annotations["issued"] != "now" {
		t.Fatalf("annotations %v, want others' annotations kept and ours set", got.Annotations)
	}
}

func TestSecretRefusesASecretTheOwnerDoesNotControl(t *testing.T) {
	f := newFixture(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "billing-key"}, Data: map[string][]byte{"key": []byte("theirs")}})
	_, written, err := f.w.Secret(t.Context(), f.owner, f.getSecret(t), f.wantSecret())
	if !apierrors.IsConflict(err) || written || f.updates != 0 {
		t.Fatalf("got written=%v, err=%v, %d updates; want a Conflict and no write", written, err, f.updates)
	}
	if want := "secret is not controlled by this APIKey"; !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q, want it to say %q", err, want)
	}
	if !IsNotControlled(err) || !IsNotControlled(fmt.Errorf("writing: %w", err)) {
		t.Fatalf("IsNotControlled(%v) = false, want true, also when wrapped", err)
	}
	if got := f.getSecret(t); string(got.Data["key"]) != "theirs" {
		t.Fatal("a foreign Secret was overwritten")
	}
}

func TestSecretWritesConditionallyOnTheResourceVersionRead(t *testing.T) {
	f := newFixture(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "billing-key", OwnerReferences: controlledBy(testOwner())}})
	stale := f.getSecret(t)
	newer := stale.DeepCopy()
	newer.Data = map[string][]byte{"key": []byte("newer")}
	if err := f.c.Update(t.Context(), newer); err != nil {
		t.Fatal(err)
	}
	_, _, err := f.w.Secret(t.Context(), f.owner, stale, f.wantSecret())
	if !IsConflict(err) {
		t.Fatalf("writing over a stale read: got %v, want a conflict", err)
	}
	if got := f.getSecret(t); string(got.Data["key"]) != "newer" {
		t.Fatal("a decision on a stale read overwrote newer state")
	}
}

func TestCreatingATakenNameIsAConflict(t *testing.T) {
	f := newFixture(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "billing-key"}})
	_, written, err := f.w.Secret(t.Context(), f.owner, nil, f.wantSecret())
	if !apierrors.IsAlreadyExists(err) || !IsConflict(err) || written {
		t.Fatalf("got written=%v, err=%v; want AlreadyExists, counted as a conflict", written, err)
	}
}

func TestConfigMapCreatesUpdatesAndLeavesAlone(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	cm, written, err := f.w.ConfigMap(ctx, f.owner, nil, f.wantConfigMap())
	if err != nil || !written || !metav1.IsControlledBy(cm, f.owner) {
		t.Fatalf("got %+v, written=%v, err=%v; want a ConfigMap created under the owner", cm, written, err)
	}

	again, written, err := f.w.ConfigMap(ctx, f.owner, cm, f.wantConfigMap())
	if err != nil || written || f.updates != 0 || again.ResourceVersion != cm.ResourceVersion {
		t.Fatalf("got written=%v, err=%v, %d updates; want no write for the same content", written, err, f.updates)
	}

	edited := cm.DeepCopy()
	edited.Labels["team"] = "payments"
	edited.Data["record"] = "hand edit"
	edited.BinaryData = map[string][]byte{"blob": {1}}
	if err := f.c.Update(ctx, edited); err != nil {
		t.Fatal(err)
	}
	repaired, written, err := f.w.ConfigMap(ctx, f.owner, edited, f.wantConfigMap())
	if err != nil || !written {
		t.Fatalf("got written=%v, err=%v; want the hand edit repaired", written, err)
	}
	if repaired.Data["record"] != "v2" || len(repaired.BinaryData) != 0 || repaired.Labels["team"] != "payments" {
		t.Fatalf("got %+v; want our data back, binaryData gone and others' labels kept", repaired)
	}
}

func TestConfigMapRefusesAConfigMapTheOwnerDoesNotControl(t *testing.T) {
	f := newFixture(t)
	foreign := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "billing-record", ResourceVersion: "1"}}
	_, written, err := f.w.ConfigMap(t.Context(), f.owner, foreign, f.wantConfigMap())
	if !apierrors.IsConflict(err) || written || f.updates != 0 {
		t.Fatalf("got written=%v, err=%v, %d updates; want a Conflict and no write", written, err, f.updates)
	}
	if want := "configmap is not controlled by this APIKey"; !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q, want it to say %q", err, want)
	}
	if !IsNotControlled(err) || !IsNotControlled(fmt.Errorf("writing: %w", err)) {
		t.Fatalf("IsNotControlled(%v) = false, want true, also when wrapped", err)
	}
}

func TestDeleteIsConditionalOnTheObjectRead(t *testing.T) {
	f := newFixture(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "billing-key", UID: "sec-uid"}})
	read := f.getSecret(t)
	newer := read.DeepCopy()
	newer.Data = map[string][]byte{"key": []byte("newer")}
	if err := f.c.Update(t.Context(), newer); err != nil {
		t.Fatal(err)
	}
	if err := Delete(t.Context(), f.c, read); !apierrors.IsConflict(err) {
		t.Fatalf("deleting a changed object: got %v, want a Conflict", err)
	}
	if err := Delete(t.Context(), f.c, newer); err != nil {
		t.Fatalf("deleting the current object: %v", err)
	}
	for _, o := range f.deletes {
		p := o.Preconditions
		if p == nil || p.UID == nil || *p.UID != "sec-uid" || p.ResourceVersion == nil {
			t.Fatalf("delete preconditions %+v, want the UID and resourceVersion read", p)
		}
	}
}

// A Conflict from anywhere else is not a refusal to touch a foreign
// object, whatever its message says: only the Writer's own error is.
func TestIsNotControlledOnlyForTheWritersOwnError(t *testing.T) {
	gr := corev1.Resource("secrets")
	for _, err := range []error{
		nil,
		apierrors.NewConflict(gr, "x", errors.New("the object has been modified")),
		apierrors.NewConflict(gr, "x", errors.New("secret is not controlled by this APIKey")),
		errors.New("secret is not controlled by this APIKey"),
	} {
		if IsNotControlled(err) {
			t.Errorf("IsNotControlled(%v) = true, want false", err)
		}
	}
}

func TestIsConflictAndLogConflict(t *testing.T) {
	gr := corev1.Resource("secrets")
	cases := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{apierrors.NewConflict(gr, "x", errors.New("stale")), true},
		{apierrors.NewAlreadyExists(gr, "x"), true},
		{&RedactedError{Op: "writing", Err: apierrors.NewAlreadyExists(gr, "x")}, true},
		{apierrors.NewNotFound(gr, "x"), false},
		{apierrors.NewForbidden(gr, "x", errors.New("rbac")), false},
		{errors.New("connection refused"), false},
	}
	for _, tc := range cases {
		if got := IsConflict(tc.err); got != tc.want {
			t.Errorf("IsConflict(%v) = %v, want %v", tc.err, got, tc.want)
		}
		if got := LogConflict(t.Context(), tc.err); got != tc.want {
			t.Errorf("LogConflict(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestRedactedErrorPrintsOnlyTheReason(t *testing.T) {
	inner := apierrors.NewInvalid(corev1.SchemeGroupVersion.WithKind("Secret").GroupKind(), "billing-key", nil)
	inner.ErrStatus.Message = "Secret is invalid: data: PRIVATE"
	err := error(&RedactedError{Op: "writing delivery secret", Err: inner})
	if got, want := err.Error(), "writing delivery secret: Invalid"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	var status apierrors.APIStatus
	if !errors.As(err, &status) || !apierrors.IsInvalid(err) {
		t.Fatal("the wrapped API error is not reachable through errors.As")
	}
}

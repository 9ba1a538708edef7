// Package owned writes the Secrets and ConfigMaps that a Gatehouse custom
// resource controls, the way every Gatehouse controller writes them.
//
// A controller reads an object (usually through its cache), decides what it
// should hold, and hands both to a Writer: a missing object is created with
// the owner as its controller, an existing one is updated only when its
// content differs, and every update is conditional on the resourceVersion
// read. A decision taken on a stale view therefore fails with a conflict
// (IsConflict) instead of overwriting newer state, and the controller
// reconciles again on fresh state.
package owned

import (
	"context"
	"errors"
	"fmt"
	"maps"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
)

// Labels returns the labels that mark an object as managed by Gatehouse on
// behalf of owner, with extra added.
func Labels(owner metav1.Object, extra map[string]string) map[string]string {
	l := map[string]string{
		gatehousev1.LabelManagedBy: gatehousev1.ManagedByValue,
		gatehousev1.LabelOwnerName: owner.GetName(),
	}
	maps.Copy(l, extra)
	return l
}

// MergeStrings sets want's entries in *have, allocating the map if needed,
// and reports whether that changed anything. Entries of *have that want
// does not name are kept: labels and annotations that others add survive.
func MergeStrings(have *map[string]string, want map[string]string) bool {
	changed := false
	for k, v := range want {
		if cur, ok := (*have)[k]; !ok || cur != v {
			if *have == nil {
				*have = map[string]string{}
			}
			(*have)[k] = v
			changed = true
		}
	}
	return changed
}

// Writer creates and updates objects controlled by an owner.
type Writer struct {
	// Client writes the objects.
	Client client.Writer
	// Scheme resolves the owner's kind for the controller reference.
	Scheme *runtime.Scheme
}

// Secret makes the Secret the owner controls hold want and returns what it
// wrote (or, when nothing changed, a copy of observed) and whether it
// wrote.
//
// With observed nil, it creates want (its namespace, name, labels,
// annotations, type and data) with owner as the controller. Otherwise it
// updates a copy of observed, conditionally on its resourceVersion: want's
// labels and annotations are merged in (others' entries are kept), the data
// is replaced by want's, and stringData is cleared. The type is left alone:
// it is immutable. An observed Secret that owner does not control is not
// touched: the result is a Conflict error.
func (w Writer) Secret(ctx context.Context, owner client.Object, observed, want *corev1.Secret) (*corev1.Secret, bool, error) {
	return write(ctx, w, owner, observed, want, "secrets", "secret", func(sec *corev1.Secret) bool {
		changed := false
		if !equality.Semantic.DeepEqual(sec.Data, want.Data) {
			sec.Data, changed = want.Data, true
		}
		if len(sec.StringData) > 0 {
			sec.StringData, changed = nil, true
		}
		return changed
	})
}

// ConfigMap makes the ConfigMap the owner controls hold want and returns
// what it wrote (or, when nothing changed, a copy of observed) and whether
// it wrote.
//
// With observed nil, it creates want (its namespace, name, labels,
// annotations and data) with owner as the controller. Otherwise it updates
// a copy of observed, conditionally on its resourceVersion: want's labels
// and annotations are merged in (others' entries are kept), the data is
// replaced by want's, and binaryData is cleared. An observed ConfigMap that
// owner does not control is not touched: the result is a Conflict error.
func (w Writer) ConfigMap(ctx context.Context, owner client.Object, observed, want *corev1.ConfigMap) (*corev1.ConfigMap, bool, error) {
	return write(ctx, w, owner, observed, want, "configmaps", "configmap", func(cm *corev1.ConfigMap) bool {
		if maps.Equal(cm.Data, want.Data) && len(cm.BinaryData) == 0 {
			return false
		}
		cm.Data, cm.BinaryData = want.Data, nil
		return true
	})
}

// ConfigMapConfirmed is ConfigMap for a caller whose view may lag behind
// the API server (a cache): when it saw no ConfigMap, reader (a live
// reader) is asked first, so that one created a moment ago is updated, not
// created again. A ConfigMap of that name that owner does not control is
// left alone: the result is a Conflict error, as from ConfigMap.
func (w Writer) ConfigMapConfirmed(ctx context.Context, reader client.Reader, owner client.Object, observed, want *corev1.ConfigMap) (*corev1.ConfigMap, bool, error) {
	if observed == nil {
		live := &corev1.ConfigMap{}
		switch err := reader.Get(ctx, client.ObjectKeyFromObject(want), live); {
		case err == nil:
			observed = live
		case !apierrors.IsNotFound(err):
			return nil, false, err
		}
	}
	return w.ConfigMap(ctx, owner, observed, want)
}

// write does the work of Secret and ConfigMap: it creates a copy of want
// when observed is nil, and otherwise merges want's labels and annotations
// into a copy of observed, lets setData bring the rest in line (reporting
// whether it changed anything) and updates the copy if anything changed.
// resource and noun name the kind in a Conflict error.
func write[O any, T interface {
	*O
	client.Object
}](ctx context.Context, w Writer, owner client.Object, observed, want T, resource, noun string, setData func(T) bool) (T, bool, error) {
	var none T
	if observed == nil {
		obj := want.DeepCopyObject().(T)
		if err := w.create(ctx, owner, obj); err != nil {
			return none, false, err
		}
		return obj, true, nil
	}
	obj := observed.DeepCopyObject().(T)
	if err := w.checkControlled(owner, obj, resource, noun); err != nil {
		return none, false, err
	}
	labels, annotations := obj.GetLabels(), obj.GetAnnotations()
	changed := MergeStrings(&labels, want.GetLabels())
	changed = MergeStrings(&annotations, want.GetAnnotations()) || changed
	obj.SetLabels(labels)
	obj.SetAnnotations(annotations)
	changed = setData(obj) || changed
	if !changed {
		return obj, false, nil
	}
	if err := w.Client.Update(ctx, obj); err != nil {
		return none, false, err
	}
	return obj, true, nil
}

// create makes owner the controller of obj and creates it.
func (w Writer) create(ctx context.Context, owner, obj client.Object) error {
	if err := controllerutil.SetControllerReference(owner, obj, w.Scheme); err != nil {
		return err
	}
	return w.Client.Create(ctx, obj)
}

// checkControlled returns a NotControlledError unless owner controls obj,
// a core object of the given resource, called noun in the message.
func (w Writer) checkControlled(owner, obj client.Object, resource, noun string) error {
	if metav1.IsControlledBy(obj, owner) {
		return nil
	}
	ownerKind := "owner"
	if gvk, err := apiutil.GVKForObject(owner, w.Scheme); err == nil {
		ownerKind = gvk.Kind
	}
	return &NotControlledError{StatusError: apierrors.NewConflict(corev1.Resource(resource), obj.GetName(),
		fmt.Errorf("%s is not controlled by this %s", noun, ownerKind))}
}

// NotControlledError is the Conflict that Secret and ConfigMap return for
// an object that exists but that the owner does not control. It is still
// a Conflict for apierrors (it wraps the StatusError), so callers that
// only test for a conflict treat it as one.
type NotControlledError struct {
	*apierrors.StatusError
}

// Unwrap returns the Conflict.
func (e *NotControlledError) Unwrap() error { return e.StatusError }

// IsNotControlled reports whether err is a NotControlledError (rather
// than a stale resourceVersion or any other Conflict).
func IsNotControlled(err error) bool {
	var nc *NotControlledError
	return errors.As(err, &nc)
}

// Delete deletes obj on condition that it is still the object read: same
// UID and resourceVersion. A replaced or since-changed object is left
// alone, with a Conflict error.
func Delete(ctx context.Context, c client.Writer, obj client.Object) error {
	uid, rv := obj.GetUID(), obj.GetResourceVersion()
	return c.Delete(ctx, obj, client.Preconditions{UID: &uid, ResourceVersion: &rv})
}

// IsConflict reports whether err is a write that lost a race: the object
// changed since it was read (Conflict) or its name was taken meanwhile
// (AlreadyExists). Through a cache that lags behind the controller's own
// last writes this is routine; the answer is to reconcile again on fresh
// state, not to report a failure.
func IsConflict(err error) bool {
	return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)
}

// LogConflict reports whether err is a conflict (see IsConflict) and, if
// so, logs at V(1) that the object will be reconciled again.
func LogConflict(ctx context.Context, err error) bool {
	if !IsConflict(err) {
		return false
	}
	log.FromContext(ctx).V(1).Info("write conflict, reconciling again", "reason", apierrors.ReasonForError(err))
	return true
}

// RedactedError is a failed write of an object whose content is secret. It
// prints Op and the API reason only, because the API server's message may
// quote the object; errors.Is and errors.As see the wrapped error.
type RedactedError struct {
	// Op says what failed, e.g. "writing delivery secret".
	Op string
	// Err is the write's error.
	Err error
}

func (e *RedactedError) Error() string {
	return e.Op + ": " + string(apierrors.ReasonForError(e.Err))
}

func (e *RedactedError) Unwrap() error { return e.Err }

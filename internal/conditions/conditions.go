// Package conditions sets status conditions the way every Gatehouse
// controller writes them: observedGeneration stamped on each condition,
// lastTransitionTime moved only when the status changes, reasons as
// CamelCase constants from api/v1 and messages as sentences.
package conditions

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Set adds or updates the condition of type t in conds. now is the time
// recorded when the status changes (from the controller's clock, so tests
// are deterministic). It reports whether anything changed.
func Set(conds *[]metav1.Condition, generation int64, now metav1.Time, t string, status metav1.ConditionStatus, reason, message string) bool {
	return meta.SetStatusCondition(conds, metav1.Condition{
		Type:               t,
		Status:             status,
		ObservedGeneration: generation,
		LastTransitionTime: now,
		Reason:             reason,
		Message:            message,
	})
}

// IsTrue reports whether the condition of type t is True.
func IsTrue(conds []metav1.Condition, t string) bool {
	return meta.IsStatusConditionTrue(conds, t)
}

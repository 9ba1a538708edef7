package conditions

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestSetMovesTransitionTimeOnlyWhenTheStatusChanges(t *testing.T) {
	t0 := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	t1 := metav1.NewTime(t0.Add(time.Hour))
	var conds []metav1.Condition

	if !Set(&conds, 1, t0, "Ready", metav1.ConditionFalse, "Pending", "Waiting.") {
		t.Fatal("adding a condition reported no change")
	}
	if !Set(&conds, 2, t1, "Ready", metav1.ConditionFalse, "Other", "Still waiting.") {
		t.Fatal("changing reason and generation reported no change")
	}
	if !conds[0].LastTransitionTime.Equal(&t0) {
		t.Fatalf("transition time moved without a status change: %v", conds[0].LastTransitionTime)
	}
	if conds[0].ObservedGeneration != 2 || conds[0].Reason != "Other" {
		t.Fatalf("condition not updated: %+v", conds[0])
	}
	if Set(&conds, 2, t1, "Ready", metav1.ConditionFalse, "Other", "Still waiting.") {
		t.Fatal("setting the same condition again reported a change")
	}
	Set(&conds, 2, t1, "Ready", metav1.ConditionTrue, "Done", "Ready.")
	if !conds[0].LastTransitionTime.Equal(&t1) || !IsTrue(conds, "Ready") {
		t.Fatalf("status change not recorded: %+v", conds[0])
	}
}

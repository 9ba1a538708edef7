// Package e2e holds Gatehouse's end-to-end test (issue #7) on a real API
// server: the chart installed with helm, the operator and a sidecar running
// in process with the chart's ServiceAccounts' tokens only, the
// sidecar-injection webhook called by the API server, and the demo's flow
// asserted over gRPC and through nginx auth_request.
package e2e

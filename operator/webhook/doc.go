// Package webhook is the operator's sidecar-injection admission webhook and
// the management of its TLS certificate.
//
// The Injector adds the Gatehouse sidecar, as a Kubernetes native sidecar,
// to pods labelled auth.gatehouse.dev/inject=true. The CertManager keeps a
// self-signed CA and a serving certificate in a Secret, rotates them before
// they expire and writes the CA into the MutatingWebhookConfiguration's
// caBundle; only the elected leader writes. Every replica serves the current
// certificate, which a Secret watcher loads into memory as it changes. With
// cert-manager, certificates come from files instead (Options.CertDir).
package webhook

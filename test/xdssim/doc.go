// Package xdssim simulates many Gatehouse sidecars in one process, each a
// real delta xDS client of the operator on a gRPC connection of its own,
// for the scale simulation of issue 13 (the CI test in this package, and
// the hack/xdssim command).
//
// A simulated sidecar does what sidecar/source.XDS does on the wire: it
// opens one aggregated delta stream over TLS with its own bearer token (a
// projected ServiceAccount token), subscribes to the three Gatehouse types
// (operator/xds.Types) with the wildcard, acknowledges every response, and
// after a broken stream reconnects with the versions it holds
// (initial_resource_versions), keeping its state meanwhile (fail static).
// It keeps, per type, each resource's name, version and decoded message;
// it builds no snapshot and answers no checks.
//
// It checks every resource it receives and records a violation (and drops
// the resource, as the real sidecar drops one it cannot use) when:
//
//   - its version is not the hex SHA-256 of the Any's value, the content
//     hash the operator declares (operator/xds/typecache.go);
//   - the Any's type URL is not the response's, the response's type is not
//     one of the three, or the value does not decode;
//   - the name inside the message is not the resource's name;
//   - the caller's Belongs says the resource is not of the sidecar's
//     namespace.
//
// A removal of a name it does not hold is not a violation: the protocol
// allows it. Violations name the sidecar, the type and the resource, never
// a value. It also counts the bytes it receives (proto.Size of each
// response) and, per API key entry, how often an ACTIVE entry it held was
// removed or replaced by a non-ACTIVE one (Removals).
package xdssim

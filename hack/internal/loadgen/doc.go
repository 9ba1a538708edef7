// Package loadgen is Gatehouse's own ext_authz load client: it drives a gRPC
// (envoy.service.auth.v3.Authorization/Check) or HTTP ext_authz server with
// prebuilt requests and checks the verdict of every response.
//
// It exists because general-purpose gRPC load tools cost more CPU per request
// than a fast ext_authz server does, so the ratio of two servers measured
// with them is a measurement of the tool. loadgen pre-encodes each request
// once, decodes only the verdict fields of each response, and records
// latencies in a fixed-size log-linear histogram, so a single core drives a
// trivial server at tens of thousands of requests per second.
//
// Two runners are provided:
//
//   - [RunClosed] keeps C requests in flight for a duration and reports the
//     saturation throughput.
//   - [RunOpen] issues requests at a fixed rate and measures each latency
//     from the request's scheduled send time, not from when it was actually
//     sent, so that a stalled server cannot hide its stall by delaying the
//     client (coordinated omission).
//
// Credentials (API keys, tokens) live in memory only; nothing in this package
// prints or logs them. Errors kept for the report are transport errors and
// never contain request headers.
package loadgen

// Package nginx holds the sidecar's end-to-end tests with real proxies in
// front of it (nginx auth_request), started by the tests on loopback.
package nginx

package snapshot

import (
	"net"
	"strings"
)

// Match returns the first rule that matches the request, or nil. method
// and path must be canonical (canonical.Request with the policy's
// PathOptions): rules hold canonical patterns and compare bytes. host may
// carry a port (ignored).
func (p *Policy) Match(method, host, path string) *Rule {
	host = HostWithoutPort(host)
	for _, r := range p.Rules {
		if r.matches(method, host, path) {
			return r
		}
	}
	return nil
}

func (r *Rule) matches(method, host, path string) bool {
	if len(r.Methods) > 0 && !contains(r.Methods, method) {
		return false
	}
	if len(r.Hosts) > 0 && !anyHost(r.Hosts, host) {
		return false
	}
	if len(r.Paths) > 0 && !anyPath(r.Paths, path) {
		return false
	}
	return true
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func anyHost(patterns []string, host string) bool {
	for _, p := range patterns {
		switch {
		case p == "*":
			return true
		case strings.HasPrefix(p, "*."):
			// "*.example.com" needs at least one label before the suffix.
			if len(host) > len(p)-1 && strings.HasSuffix(host, p[1:]) {
				return true
			}
		case p == host:
			return true
		}
	}
	return false
}

func anyPath(patterns []string, path string) bool {
	for _, p := range patterns {
		if strings.HasSuffix(p, "*") {
			if strings.HasPrefix(path, p[:len(p)-1]) {
				return true
			}
		} else if p == path {
			return true
		}
	}
	return false
}

// HostWithoutPort lower-cases host and drops a port and a trailing dot.
func HostWithoutPort(host string) string {
	// Without a colon there is no port, and SplitHostPort would only
	// allocate its "missing port" error: every check asks.
	if strings.IndexByte(host, ':') >= 0 {
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
	}
	host = strings.TrimSuffix(host, ".")
	for i := 0; i < len(host); i++ {
		if c := host[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(host)
		}
	}
	return host
}

// PathWithoutQuery drops the query string and fragment.
func PathWithoutQuery(path string) string {
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		return path[:i]
	}
	return path
}

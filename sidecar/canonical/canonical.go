// Package canonical turns the method and path of a request, as a proxy
// forwards them to the sidecar, into the form AuthPolicy rules are matched
// against, or refuses them when the upstream could read them differently.
//
// Both the gRPC and the HTTP frontend go through it (the engine calls it
// before matching), and the snapshot builder puts rule paths through it, so
// that a rule and a request are compared in the same form.
//
// The canonical path is the path of RFC 3986 section 6.2.2, with the query
// and fragment split off: percent-encoded unreserved characters are decoded
// and the hex digits of the remaining escapes are upper-cased. Escapes of
// the other characters a path segment may carry unencoded (the sub-delims
// except ';', and ':' and '@') are decoded too, because upstream routers
// decode them: a rule for /a:b must see /a%3Ab as well. Characters that may
// not appear raw in a path (space, '"', '<', '>', '[', ']', '^', '`', '{',
// '|', '}') are percent-encoded, so that "/a b" and "/a%20b" are one path.
//
// What cannot be matched without guessing how the upstream reads it is
// refused: dot segments (also encoded), encoded '/' and '\', backslashes,
// empty segments, ';' path parameters, double encoding (%25 followed by two
// hex digits), control characters (raw or encoded), raw non-ASCII bytes,
// malformed escapes and a path that does not start with '/'. Options relax
// the refusal of empty segments and path parameters for an AuthPolicy that
// opts in.
//
// An already-canonical path or method is returned as is, without
// allocating: this is on every request's path.
package canonical

import (
	"errors"
	"strings"
)

// Options relax the refusals for one AuthPolicy. The zero value refuses.
type Options struct {
	// MergeSlashes matches a path with empty segments ("//") as if each run
	// of slashes were one, as Envoy's merge_slashes and nginx's
	// merge_slashes do.
	MergeSlashes bool
	// StripPathParameters matches a path with ';' path parameters as if
	// each segment's parameters ("/a;x=1/b") were removed, as Tomcat, Jetty
	// and Spring route such paths.
	StripPathParameters bool
}

// Refusal says why a path or method was refused.
type Refusal struct {
	msg string
	// ambiguous is true for a well-formed request whose meaning depends on
	// how the upstream reads it; false for a malformed one.
	ambiguous bool
}

func (r *Refusal) Error() string { return r.msg }

// Ambiguous reports whether the request is well formed but could be read
// differently by the upstream (as opposed to malformed).
func (r *Refusal) Ambiguous() bool { return r.ambiguous }

// The refusals. They are static: a refusal never echoes the request.
var (
	ErrNotOriginForm     = &Refusal{msg: "the path does not start with /"}
	ErrMalformedEscape   = &Refusal{msg: "the path has a malformed percent escape"}
	ErrControlCharacter  = &Refusal{msg: "the path has a control character"}
	ErrNonASCII          = &Refusal{msg: "the path has a raw non-ASCII byte"}
	ErrDotSegment        = &Refusal{msg: "the path has a dot segment", ambiguous: true}
	ErrEncodedSeparator  = &Refusal{msg: "the path has an encoded / or \\", ambiguous: true}
	ErrBackslash         = &Refusal{msg: "the path has a backslash", ambiguous: true}
	ErrEmptySegment      = &Refusal{msg: "the path has an empty segment", ambiguous: true}
	ErrPathParameter     = &Refusal{msg: "the path has a ; path parameter", ambiguous: true}
	ErrDoubleEncoding    = &Refusal{msg: "the path has a percent-encoded escape", ambiguous: true}
	ErrInvalidMethod     = &Refusal{msg: "the method is not an HTTP token"}
	ErrAsteriskNotOption = &Refusal{msg: "the * request target is for OPTIONS only"}
)

// AsRefusal returns err as a *Refusal, if it is one.
func AsRefusal(err error) (*Refusal, bool) {
	var r *Refusal
	ok := errors.As(err, &r)
	return r, ok
}

// Request canonicalises a request's method and target (path with any
// query). The asterisk form "*" is accepted for OPTIONS only and is
// returned as "*".
func Request(method, target string, opts Options) (string, string, error) {
	m, err := Method(method)
	if err != nil {
		return "", "", err
	}
	p, err := Path(target, opts)
	if err != nil {
		return "", "", err
	}
	if p == "*" && m != "OPTIONS" {
		return "", "", ErrAsteriskNotOption
	}
	return m, p, nil
}

// Method upper-cases an HTTP method and refuses one that is not a token
// (RFC 9110 section 5.6.2).
func Method(m string) (string, error) {
	if m == "" {
		return "", ErrInvalidMethod
	}
	lower := false
	for i := 0; i < len(m); i++ {
		c := m[i]
		if c >= 'a' && c <= 'z' {
			lower = true
			continue
		}
		if !isTchar(c) {
			return "", ErrInvalidMethod
		}
	}
	if lower {
		return strings.ToUpper(m), nil
	}
	return m, nil
}

// Path returns the canonical form of a request target's path (the query
// and fragment are dropped), or a *Refusal. "*" is returned as is; see
// Request.
func Path(target string, opts Options) (string, error) {
	p := target
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	if p == "*" {
		return p, nil
	}
	if p == "" || p[0] != '/' {
		return "", ErrNotOriginForm
	}
	b := builder{in: p, opts: opts}
	return b.run()
}

// builder writes the canonical path. While out is nil the output so far
// is in[:n], byte for byte; the first change copies it into out.
type builder struct {
	in       string
	opts     Options
	out      []byte
	n        int
	segStart int
	// escaped25 is set when an escaped '%' was kept, to look for double
	// encoding at the end.
	escaped25 bool
}

func (b *builder) run() (string, error) {
	in := b.in
	for i := 0; i < len(in); {
		var err error
		switch c := in[i]; {
		case c == '/':
			err = b.slash(i)
			i++
		case c == '%':
			err = b.escape(i)
			i += 3
		case c == ';':
			i, err = b.parameter(i)
		case c == '\\':
			err = ErrBackslash
		case c < 0x20 || c == 0x7f:
			err = ErrControlCharacter
		case c >= 0x80:
			err = ErrNonASCII
		case isPathChar(c):
			b.keep(i)
			i++
		default:
			b.put('%')
			b.put(upperHex[c>>4])
			b.put(upperHex[c&0xf])
			i++
		}
		if err != nil {
			return "", err
		}
	}
	if err := b.endSegment(); err != nil {
		return "", err
	}
	if b.escaped25 && b.doubleEncoded() {
		return "", ErrDoubleEncoding
	}
	if b.out == nil {
		return in, nil
	}
	return string(b.out), nil
}

// slash ends a segment at in[i] == '/' and starts the next one.
func (b *builder) slash(i int) error {
	if err := b.endSegment(); err != nil {
		return err
	}
	if b.n > 0 && b.n == b.segStart {
		// The segment that just ended is empty: "//".
		if !b.opts.MergeSlashes {
			return ErrEmptySegment
		}
		b.diverge()
	} else {
		b.keep(i)
	}
	b.segStart = b.n
	return nil
}

// parameter handles the ';' at in[i]: refused, or (StripPathParameters)
// dropped up to the end of the segment. It returns where to go on.
func (b *builder) parameter(i int) (int, error) {
	if !b.opts.StripPathParameters {
		return i, ErrPathParameter
	}
	b.diverge()
	for ; i < len(b.in) && b.in[i] != '/'; i++ {
		// The parameter is dropped, not matched, but it must still be
		// plain text.
		if c := b.in[i]; c < 0x20 || c >= 0x7f || c == '\\' {
			return i, ErrPathParameter
		}
	}
	return i, nil
}

// escape handles the percent escape at in[i].
func (b *builder) escape(i int) error {
	in := b.in
	if i+2 >= len(in) {
		return ErrMalformedEscape
	}
	hi, ok1 := unhex(in[i+1])
	lo, ok2 := unhex(in[i+2])
	if !ok1 || !ok2 {
		return ErrMalformedEscape
	}
	v := hi<<4 | lo
	switch {
	case v == '/' || v == '\\':
		return ErrEncodedSeparator
	case v < 0x20 || v == 0x7f:
		return ErrControlCharacter
	case v < 0x80 && isPathChar(v):
		b.put(v)
		return nil
	case v == '%':
		b.escaped25 = true
	}
	if isUpperHex(in[i+1]) && isUpperHex(in[i+2]) {
		b.keep(i)
		b.keep(i + 1)
		b.keep(i + 2)
		return nil
	}
	b.put('%')
	b.put(upperHex[hi])
	b.put(upperHex[lo])
	return nil
}

// endSegment refuses a dot segment, in its decoded form.
func (b *builder) endSegment() error {
	switch b.n - b.segStart {
	case 1:
		if b.at(b.segStart) == '.' {
			return ErrDotSegment
		}
	case 2:
		if b.at(b.segStart) == '.' && b.at(b.segStart+1) == '.' {
			return ErrDotSegment
		}
	}
	return nil
}

// at is the output byte at k < n.
func (b *builder) at(k int) byte {
	if b.out != nil {
		return b.out[k]
	}
	return b.in[k]
}

// doubleEncoded reports whether the output has "%25" followed by two hex
// digits, which an upstream that decodes twice reads as another escape.
func (b *builder) doubleEncoded() bool {
	s := b.written()
	for {
		i := strings.Index(s, "%25")
		if i < 0 {
			return false
		}
		s = s[i+3:]
		if len(s) >= 2 {
			if _, ok := unhex(s[0]); ok {
				if _, ok := unhex(s[1]); ok {
					return true
				}
			}
		}
	}
}

// written is the output so far.
func (b *builder) written() string {
	if b.out == nil {
		return b.in[:b.n]
	}
	return string(b.out)
}

// keep outputs in[i] unchanged.
func (b *builder) keep(i int) {
	if b.out != nil {
		b.out = append(b.out, b.in[i])
	}
	b.n++
}

// put outputs c where the input had something else.
func (b *builder) put(c byte) {
	b.diverge()
	b.out = append(b.out, c)
	b.n++
}

// diverge starts writing into out: the output no longer follows the input.
func (b *builder) diverge() {
	if b.out == nil {
		b.out = make([]byte, b.n, len(b.in)+8)
		copy(b.out, b.in[:b.n])
	}
}

const upperHex = "0123456789ABCDEF"

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func isUpperHex(c byte) bool { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') }

// isPathChar reports whether c stands for itself in a canonical path
// segment: unreserved, sub-delims except ';', ':' and '@' (RFC 3986 pchar).
func isPathChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '-', '.', '_', '~', '!', '$', '&', '\'', '(', ')', '*', '+', ',', '=', ':', '@':
		return true
	}
	return false
}

// isTchar reports whether c may appear in an HTTP token (RFC 9110).
func isTchar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

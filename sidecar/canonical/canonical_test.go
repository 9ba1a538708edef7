package canonical_test

import (
	"errors"
	"strings"
	"testing"

	"gatehouse.dev/gatehouse/sidecar/canonical"
)

func TestPath(t *testing.T) {
	merge := canonical.Options{MergeSlashes: true}
	strip := canonical.Options{StripPathParameters: true}
	cases := []struct {
		name   string
		in     string
		opts   canonical.Options
		want   string
		refuse error
	}{
		{name: "A canonical path is returned as is.", in: "/api/v1/items", want: "/api/v1/items"},
		{name: "The root path is canonical.", in: "/", want: "/"},
		{name: "A trailing slash is kept.", in: "/api/", want: "/api/"},
		{name: "The query is split off.", in: "/api?next=/../admin", want: "/api"},
		{name: "The fragment is split off.", in: "/api#x", want: "/api"},
		{name: "A percent-encoded letter is decoded.", in: "/%61dmin", want: "/admin"},
		{name: "Percent-encoded unreserved marks are decoded.", in: "/a%2Db%5Fc%7Ed%2ee", want: "/a-b_c~d.e"},
		{name: "An encoded colon is decoded, as routers do.", in: "/admin%3Aexport", want: "/admin:export"},
		{name: "Encoded sub-delims are decoded.", in: "/a%21%24%26%27%28%29%2A%2B%2C%3D%40", want: "/a!$&'()*+,=@"},
		{name: "The hex of an escape that stays is upper-cased.", in: "/caf%c3%a9", want: "/caf%C3%A9"},
		{name: "An escaped question mark stays escaped.", in: "/a%3fb", want: "/a%3Fb"},
		{name: "An escaped semicolon stays escaped.", in: "/a%3bb", want: "/a%3Bb"},
		{name: "An escaped percent not followed by hex stays escaped.", in: "/100%25", want: "/100%25"},
		{name: "A raw space is percent-encoded.", in: "/a b", want: "/a%20b"},
		{name: "Raw characters not allowed in a path are percent-encoded.", in: "/a|b{c}", want: "/a%7Cb%7Bc%7D"},
		{name: "A dot inside a segment is fine.", in: "/a.b/..c/.d", want: "/a.b/..c/.d"},
		{name: "The asterisk form is kept.", in: "*", want: "*"},

		{name: "A dot-dot segment is refused.", in: "/public/../admin", refuse: canonical.ErrDotSegment},
		{name: "A dot segment is refused.", in: "/public/./admin", refuse: canonical.ErrDotSegment},
		{name: "A final dot-dot segment is refused.", in: "/public/..", refuse: canonical.ErrDotSegment},
		{name: "An encoded dot-dot segment is refused.", in: "/public/%2e%2E/admin", refuse: canonical.ErrDotSegment},
		{name: "A half-encoded dot segment is refused.", in: "/public/.%2e", refuse: canonical.ErrDotSegment},
		{name: "An encoded slash is refused.", in: "/public%2fadmin", refuse: canonical.ErrEncodedSeparator},
		{name: "An encoded backslash is refused.", in: "/public%5Cadmin", refuse: canonical.ErrEncodedSeparator},
		{name: "A backslash is refused.", in: "/public\\..\\admin", refuse: canonical.ErrBackslash},
		{name: "A leading empty segment is refused.", in: "//admin", refuse: canonical.ErrEmptySegment},
		{name: "An inner empty segment is refused.", in: "/api//admin", refuse: canonical.ErrEmptySegment},
		{name: "A path parameter is refused.", in: "/admin;x=1", refuse: canonical.ErrPathParameter},
		{name: "An empty path parameter is refused.", in: "/admin;/x", refuse: canonical.ErrPathParameter},
		{name: "A double-encoded letter is refused.", in: "/%2561dmin", refuse: canonical.ErrDoubleEncoding},
		{name: "A double-encoded slash is refused.", in: "/a%252fb", refuse: canonical.ErrDoubleEncoding},
		{name: "A double encoding with encoded hex digits is refused.", in: "/a%25%32%46b", refuse: canonical.ErrDoubleEncoding},
		{name: "A raw control character is refused.", in: "/a\tb", refuse: canonical.ErrControlCharacter},
		{name: "An encoded NUL is refused.", in: "/a%00b", refuse: canonical.ErrControlCharacter},
		{name: "An encoded line feed is refused.", in: "/a%0Ab", refuse: canonical.ErrControlCharacter},
		{name: "A raw non-ASCII byte is refused.", in: "/caf\xc3\xa9", refuse: canonical.ErrNonASCII},
		{name: "A truncated escape is refused.", in: "/a%4", refuse: canonical.ErrMalformedEscape},
		{name: "An escape with a non-hex digit is refused.", in: "/a%zz", refuse: canonical.ErrMalformedEscape},
		{name: "An IIS-style %u escape is refused.", in: "/%u0061dmin", refuse: canonical.ErrMalformedEscape},
		{name: "A relative path is refused.", in: "admin", refuse: canonical.ErrNotOriginForm},
		{name: "An absolute URI is refused.", in: "http://h/admin", refuse: canonical.ErrNotOriginForm},
		{name: "An empty path is refused.", in: "", refuse: canonical.ErrNotOriginForm},
		{name: "A path that is only a query is refused.", in: "?a=b", refuse: canonical.ErrNotOriginForm},

		{name: "Slashes are merged when the policy opts in.", in: "//api///admin/", opts: merge, want: "/api/admin/"},
		{name: "Merging slashes still refuses a dot segment.", in: "/a//../admin", opts: merge, refuse: canonical.ErrDotSegment},
		{name: "Path parameters are stripped when the policy opts in.", in: "/admin;jsessionid=1/x;y", opts: strip, want: "/admin/x"},
		{name: "A dot segment hidden behind a parameter is refused.", in: "/..;x/admin", opts: strip, refuse: canonical.ErrDotSegment},
		{name: "A segment that is only a parameter leaves an empty segment.", in: "/;x/admin", opts: strip, refuse: canonical.ErrEmptySegment},
		{name: "A parameter with a control character is refused.", in: "/a;\x01", opts: strip, refuse: canonical.ErrPathParameter},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := canonical.Path(tc.in, tc.opts)
			if tc.refuse != nil {
				if !errors.Is(err, tc.refuse) {
					t.Fatalf("Path(%q) = %q, %v; want refusal %v", tc.in, got, err, tc.refuse)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Path(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestRefusalKinds(t *testing.T) {
	if canonical.ErrMalformedEscape.Ambiguous() || canonical.ErrNotOriginForm.Ambiguous() {
		t.Fatal("a malformed path is reported as ambiguous")
	}
	if !canonical.ErrEmptySegment.Ambiguous() || !canonical.ErrDotSegment.Ambiguous() {
		t.Fatal("an ambiguous path is reported as malformed")
	}
}

func TestMethod(t *testing.T) {
	cases := []struct {
		name, in, want string
	}{
		{"An upper-case method is returned as is.", "GET", "GET"},
		{"A lower-case method is upper-cased.", "get", "GET"},
		{"A mixed-case method is upper-cased.", "dElEtE", "DELETE"},
		{"An extension method is accepted.", "PROPFIND", "PROPFIND"},
		{"An empty method is refused.", "", ""},
		{"A method with a space is refused.", "GET /", ""},
		{"A method with a control character is refused.", "GET\x00", ""},
		{"A method with non-ASCII bytes is refused.", "G\xc3\x89T", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := canonical.Method(tc.in)
			if tc.want == "" {
				if !errors.Is(err, canonical.ErrInvalidMethod) {
					t.Fatalf("Method(%q) = %q, %v; want a refusal", tc.in, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Method(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestTheAsteriskFormIsForOptionsOnly(t *testing.T) {
	if m, p, err := canonical.Request("options", "*", canonical.Options{}); err != nil || m != "OPTIONS" || p != "*" {
		t.Fatalf("OPTIONS * = %q %q %v", m, p, err)
	}
	if _, _, err := canonical.Request("GET", "*", canonical.Options{}); !errors.Is(err, canonical.ErrAsteriskNotOption) {
		t.Fatalf("GET * was not refused: %v", err)
	}
}

func TestACanonicalPathDoesNotAllocate(t *testing.T) {
	for _, p := range []string{"/api/v1/items/123", "/api/v1/items?q=%2e%2e", "/caf%C3%A9/100%25"} {
		allocs := testing.AllocsPerRun(100, func() {
			if _, err := canonical.Path(p, canonical.Options{}); err != nil {
				t.Fatal(err)
			}
			if _, err := canonical.Method("GET"); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Fatalf("canonicalising %q allocated %v times", p, allocs)
		}
	}
}

// FuzzPath checks that the canonical form is a fixed point, that it never
// holds what a refusal is about, and that a refused path matches no rule
// pattern by prefix either (it is refused before matching).
func FuzzPath(f *testing.F) {
	for _, s := range []string{"/", "/api/v1", "/%61dmin", "//admin", "/admin;x=1", "/public/../admin", "/a%2fb", "/%2561", "/a b", "/caf%c3%a9", "*", "/a;b/c", "/..;/x"} {
		f.Add(s, false, false)
	}
	f.Fuzz(func(t *testing.T, in string, mergeSlashes, stripParams bool) {
		opts := canonical.Options{MergeSlashes: mergeSlashes, StripPathParameters: stripParams}
		got, err := canonical.Path(in, opts)
		if err != nil {
			if _, ok := canonical.AsRefusal(err); !ok {
				t.Fatalf("Path(%q) returned a non-refusal error %v", in, err)
			}
			if got != "" {
				t.Fatalf("Path(%q) refused but returned %q", in, got)
			}
			return
		}
		again, err := canonical.Path(got, opts)
		if err != nil || again != got {
			t.Fatalf("Path(%q) = %q, but Path(%q) = %q, %v", in, got, got, again, err)
		}
		if got == "*" {
			return
		}
		if !mergeSlashes && strings.Contains(in, "//") && !strings.ContainsAny(in, "?#") {
			t.Fatalf("Path(%q) = %q: an empty segment was accepted", in, got)
		}
		for _, bad := range []string{"/./", "/../", "\\", ";", "%2F", "%5C", "%2E", "?", "#"} {
			if strings.Contains(got+"/", bad) || strings.Contains(got, "//") {
				t.Fatalf("Path(%q) = %q holds %q", in, got, bad)
			}
		}
		for i := 0; i < len(got); i++ {
			if c := got[i]; c <= ' ' || c >= 0x7f {
				t.Fatalf("Path(%q) = %q holds byte %#x", in, got, c)
			}
		}
	})
}

func BenchmarkPath(b *testing.B) {
	for _, bc := range []struct{ name, path string }{
		{"canonical", "/api/v1/items/123?limit=10"},
		{"encodedLetter", "/api/v1/%69tems/123"},
		{"refused", "/api/v1/../admin"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				_, _, _ = canonical.Request("GET", bc.path, canonical.Options{})
			}
		})
	}
}

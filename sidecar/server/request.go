package server

import (
	"strings"
	"sync"

	"google.golang.org/protobuf/encoding/protowire"

	"gatehouse.dev/gatehouse/sidecar/authz"
)

// checkRequest is what the gRPC handler reads of a CheckRequest, decoded
// by the codec (decodeCheck) without building the generated message: the
// http attributes the engine and the decision log read, and the headers
// as (name, value) pairs pointing into the one copy of the http message's
// bytes. The engine reads two or three headers of a request; a map of all
// of them was most of the decoding's cost.
//
// Its lookups are grpcHeaders' on the generated message: header_map (one
// entry per field, names compared without case, raw_value when value is
// empty) when it has entries, else the headers map (exact lower-case
// names; of repeated keys, the last wins, as protobuf decodes a map).
type checkRequest struct {
	id, method, path, host string
	// headers are the headers map's entries, in wire order.
	headers []headerField
	// raw are header_map's entries, in wire order.
	raw []headerField
	// identity is the engine's room for an API key's identity
	// (authz.Request.IdentityRoom): with the request pooled, a check
	// allocates no Identity.
	identity authz.Identity
}

type headerField struct{ name, value, rawValue string }

// checkRequests are the handler's requests, reused from check to check
// (the request and its slices of header fields were two of a check's
// allocations). A request goes back only once its check is answered, and
// reset: nothing of it outlives the check (the engine, the decision log
// and the answers keep strings, never the request).
var checkRequests = sync.Pool{New: func() any { return new(checkRequest) }}

// maxPooledFields bounds the header fields a pooled request keeps room
// for: a request with more is reused without them, so that one large
// request does not pin its slices in the pool.
const maxPooledFields = 64

// reset empties r for reuse. Its strings point into the copy of a
// request's bytes, credential included: they are cleared, so that a
// pooled request keeps none of them alive.
func (r *checkRequest) reset() {
	r.id, r.method, r.path, r.host = "", "", "", ""
	r.headers = resetFields(r.headers)
	r.raw = resetFields(r.raw)
	r.identity = authz.Identity{}
}

func resetFields(fs []headerField) []headerField {
	if cap(fs) > maxPooledFields {
		return nil
	}
	clear(fs)
	return fs[:0]
}

// rawFieldValue is a header_map entry's value: value, else raw_value.
func (f *headerField) rawFieldValue() string {
	if f.value != "" {
		return f.value
	}
	return f.rawValue
}

// mapValue is the headers map's value for name: its last entry's.
func (r *checkRequest) mapValue(name string) (string, bool) {
	for i := len(r.headers) - 1; i >= 0; i-- {
		if r.headers[i].name == name {
			return r.headers[i].value, true
		}
	}
	return "", false
}

// Values implements authz.Headers.
func (r *checkRequest) Values(name string) []string {
	if len(r.raw) > 0 {
		var out []string
		for i := range r.raw {
			if strings.EqualFold(r.raw[i].name, name) {
				out = append(out, r.raw[i].rawFieldValue())
			}
		}
		return out
	}
	if v, ok := r.mapValue(name); ok {
		return []string{v}
	}
	return nil
}

// FirstValue implements authz.FirstValuer.
func (r *checkRequest) FirstValue(name string) (string, int) {
	if len(r.raw) == 0 {
		v, ok := r.mapValue(name)
		if !ok {
			return "", 0
		}
		return v, 1
	}
	first, n := "", 0
	for i := range r.raw {
		if strings.EqualFold(r.raw[i].name, name) {
			if n == 0 {
				first = r.raw[i].rawFieldValue()
			}
			n++
		}
	}
	return first, n
}

// Count implements authz.Headers: the number of header_map entries, else
// of distinct keys of the headers map.
func (r *checkRequest) Count() int {
	if len(r.raw) > 0 {
		return len(r.raw)
	}
	return distinctNames(r.headers)
}

// CountBound implements authz.CountBounder: the fields received, so that
// the engine counts distinct names only for a request that may have too
// many.
func (r *checkRequest) CountBound() int {
	if len(r.raw) > 0 {
		return len(r.raw)
	}
	return len(r.headers)
}

// distinctNames counts the distinct names of fs: by comparing pairs when
// they are few (a check's usual dozen), with a set otherwise.
func distinctNames(fs []headerField) int {
	const fewFields = 32
	if len(fs) <= fewFields {
		n := 0
	next:
		for i := range fs {
			for j := i + 1; j < len(fs); j++ {
				if fs[j].name == fs[i].name {
					continue next // counted at its last occurrence
				}
			}
			n++
		}
		return n
	}
	set := make(map[string]struct{}, len(fs))
	for i := range fs {
		set[fs[i].name] = struct{}{}
	}
	return len(set)
}

// decodeCheck decodes into req what the handler reads of a CheckRequest,
// as decodeCheckRequest does into the generated message: the same fields
// are read, the same strings checked to be UTF-8, the same malformed input
// refused, and repeated messages merge as in protobuf.
func decodeCheck(b []byte, req *checkRequest) error {
	return eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if num != fieldCheckRequestAttributes || typ != protowire.BytesType {
			return nil
		}
		return eachField(v, func(num protowire.Number, typ protowire.Type, v []byte) error {
			if num != fieldAttributesRequest || typ != protowire.BytesType {
				return nil
			}
			return eachField(v, func(num protowire.Number, typ protowire.Type, v []byte) error {
				if num != fieldRequestHTTP || typ != protowire.BytesType {
					return nil
				}
				return decodeHTTP(v, req)
			})
		})
	})
}

// decodeHTTP decodes an AttributeContext.HttpRequest into req. A request
// with no room for header fields counts them first, to allocate them
// once; a reused one appends into the room it has.
func decodeHTTP(b []byte, req *checkRequest) error {
	// The one copy every string below points into. Its strings must be
	// UTF-8 (proto3), checked one by one unless all of b is ASCII, or all
	// of the header field they are in (a token's field is not: its
	// length takes two bytes).
	str := &stringsOf{b: b, s: string(b), ascii: isASCII(b)}
	if cap(req.headers) == 0 && cap(req.raw) == 0 {
		if err := growHeaders(b, req); err != nil {
			return err
		}
	}
	return eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if typ != protowire.BytesType {
			return nil
		}
		var dst *string
		var ignored string
		switch num {
		case fieldHTTPID:
			dst = &req.id
		case fieldHTTPMethod:
			dst = &req.method
		case fieldHTTPPath:
			dst = &req.path
		case fieldHTTPHost:
			dst = &req.host
		case fieldHTTPScheme, fieldHTTPQuery, fieldHTTPFragment, fieldHTTPProtocol:
			dst = &ignored // not read, but checked as the standard decoder checks it
		case fieldHTTPHeaders:
			return decodeHeaderEntry(v, str, req)
		case fieldHTTPHeaderMap:
			return eachField(v, func(num protowire.Number, typ protowire.Type, v []byte) error {
				if num != fieldHeaderMapHeader || typ != protowire.BytesType {
					return nil
				}
				req.raw = append(req.raw, headerField{})
				entry := str.within(v)
				return decodeRawHeader(v, &entry, &req.raw[len(req.raw)-1])
			})
		default:
			return nil
		}
		out, err := str.of(v)
		*dst = out
		return err
	})
}

// growHeaders makes room in req for the headers of http message b, so
// that decoding them appends without copying.
func growHeaders(b []byte, req *checkRequest) error {
	headers, raw := 0, 0
	if err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if typ == protowire.BytesType {
			switch num {
			case fieldHTTPHeaders:
				headers++
			case fieldHTTPHeaderMap:
				raw += countFields(v, fieldHeaderMapHeader)
			default:
			}
		}
		return nil
	}); err != nil {
		return err
	}
	if headers > 0 {
		req.headers = growFields(req.headers, headers)
	}
	if raw > 0 {
		req.raw = growFields(req.raw, raw)
	}
	return nil
}

func growFields(fs []headerField, n int) []headerField {
	if cap(fs)-len(fs) >= n {
		return fs
	}
	out := make([]headerField, len(fs), len(fs)+n)
	copy(out, fs)
	return out
}

// decodeHeaderEntry decodes one entry of the headers map (a missing key
// or value is ""; of a repeated one, the last counts).
func decodeHeaderEntry(b []byte, msg *stringsOf, req *checkRequest) error {
	var f headerField
	str := msg.within(b)
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if typ != protowire.BytesType {
			return nil
		}
		var err error
		switch num {
		case fieldMapKey:
			f.name, err = str.of(v)
		case fieldMapValue:
			f.value, err = str.of(v)
		default:
		}
		return err
	})
	if err != nil {
		return err
	}
	req.headers = append(req.headers, f)
	return nil
}

// decodeRawHeader decodes one HeaderValue of header_map. raw_value is
// bytes, not checked for UTF-8.
func decodeRawHeader(b []byte, str *stringsOf, f *headerField) error {
	return eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if typ != protowire.BytesType {
			return nil
		}
		var err error
		switch num {
		case fieldMapKey:
			f.name, err = str.of(v)
		case fieldMapValue:
			f.value, err = str.of(v)
		case fieldHeaderRawValue:
			off := cap(str.b) - cap(v)
			f.rawValue = str.s[off : off+len(v)]
		default:
		}
		return err
	})
}

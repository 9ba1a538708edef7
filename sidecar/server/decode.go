package server

import (
	"encoding/binary"
	"errors"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of the parts of a CheckRequest the sidecar reads
// (envoy/service/auth/v3/external_auth.proto, attribute_context.proto,
// envoy/config/core/v3/base.proto).
const (
	fieldCheckRequestAttributes = 1 // CheckRequest.attributes
	fieldAttributesRequest      = 4 // AttributeContext.request
	fieldRequestHTTP            = 2 // AttributeContext.Request.http

	fieldHTTPID        = 1
	fieldHTTPMethod    = 2
	fieldHTTPHeaders   = 3 // map<string, string>
	fieldHTTPPath      = 4
	fieldHTTPHost      = 5
	fieldHTTPScheme    = 6
	fieldHTTPQuery     = 7
	fieldHTTPFragment  = 8
	fieldHTTPSize      = 9
	fieldHTTPProtocol  = 10
	fieldHTTPHeaderMap = 13 // HeaderMap

	fieldMapKey          = 1 // map entry key; HeaderValue.key
	fieldMapValue        = 2 // map entry value; HeaderValue.value
	fieldHeaderRawValue  = 3 // HeaderValue.raw_value
	fieldHeaderMapHeader = 1 // HeaderMap.headers
)

var errMalformedRequest = errors.New("malformed CheckRequest")

// decodeCheckRequest decodes into req only what the sidecar reads of a
// CheckRequest: attributes.request.http, without its body. Envoy also sends
// both peers (addresses, principals, labels, certificates), the request
// time, context extensions, metadata and TLS details; decoding them cost
// most of the allocations of a check, for fields nothing reads. They are
// skipped here, checked only for being well-formed protobuf.
//
// Every string of the http message shares one copy of its bytes (one
// allocation instead of two per header), which lives as long as the
// request does. Strings are checked to be UTF-8, as the standard decoder
// checks proto3 strings. Repeated occurrences of a message merge, as in
// protobuf.
func decodeCheckRequest(b []byte, req *authv3.CheckRequest) error {
	var block *decodedMessages // allocated once, when the first message is met
	return eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if num != fieldCheckRequestAttributes || typ != protowire.BytesType {
			return nil
		}
		if block == nil {
			block = new(decodedMessages)
		}
		if req.Attributes == nil {
			req.Attributes = &block.attributes
		}
		return eachField(v, func(num protowire.Number, typ protowire.Type, v []byte) error {
			if num != fieldAttributesRequest || typ != protowire.BytesType {
				return nil
			}
			if req.Attributes.Request == nil {
				req.Attributes.Request = &block.request
			}
			return eachField(v, func(num protowire.Number, typ protowire.Type, v []byte) error {
				if num != fieldRequestHTTP || typ != protowire.BytesType {
					return nil
				}
				if req.Attributes.Request.Http == nil {
					req.Attributes.Request.Http = &block.http
				}
				return decodeHTTPRequest(v, req.Attributes.Request.Http)
			})
		})
	})
}

// decodedMessages are the three nested messages of a decoded request, in
// one allocation.
type decodedMessages struct {
	attributes authv3.AttributeContext
	request    authv3.AttributeContext_Request
	http       authv3.AttributeContext_HttpRequest
}

// stringsOf gives the strings of a message's fields, all pointing into one
// copy of the message.
type stringsOf struct {
	b []byte
	s string
	// ascii says that the bytes the strings come from are all ASCII, so
	// that every string of them is UTF-8 and need not be checked.
	ascii bool
}

// of returns field v (a sub-slice of b) as a string; it must be UTF-8.
func (c *stringsOf) of(v []byte) (string, error) {
	off := cap(c.b) - cap(v) // v is a sub-slice of b (eachField keeps capacities)
	out := c.s[off : off+len(v)]
	if !c.ascii && !utf8.ValidString(out) {
		return "", errMalformedRequest
	}
	return out, nil
}

// within is c for the strings of field v (a sub-slice of b): known to be
// UTF-8 without checking each when v is ASCII.
func (c *stringsOf) within(v []byte) stringsOf {
	out := *c
	out.ascii = c.ascii || isASCII(v)
	return out
}

// isASCII reports whether b holds no byte of 0x80 or more: 32 bytes at a
// time, then eight, then the rest. It stops at the first 32 that hold
// one: a message or header field bearing a token is not ASCII from its
// length on (two bytes of varint), and its strings are checked one by one
// after. Not inlined, so that within, which calls it only for bytes not
// known to be ASCII, is.
//
//go:noinline
func isASCII(b []byte) bool {
	const high = 0x8080808080808080
	var acc uint64
	for len(b) >= 32 {
		acc |= binary.LittleEndian.Uint64(b) | binary.LittleEndian.Uint64(b[8:]) |
			binary.LittleEndian.Uint64(b[16:]) | binary.LittleEndian.Uint64(b[24:])
		if acc&high != 0 {
			return false
		}
		b = b[32:]
	}
	for len(b) >= 8 {
		acc |= binary.LittleEndian.Uint64(b)
		b = b[8:]
	}
	for _, c := range b {
		acc |= uint64(c)
	}
	return acc&high == 0
}

// decodeHTTPRequest decodes an AttributeContext.HttpRequest, body aside.
func decodeHTTPRequest(b []byte, h *authv3.AttributeContext_HttpRequest) error {
	str := &stringsOf{b: b, s: string(b)} // the one copy every string below points into
	headers, raw := 0, 0
	if err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if typ == protowire.BytesType {
			switch num {
			case fieldHTTPHeaders:
				headers++
			case fieldHTTPHeaderMap:
				raw += countFields(v, fieldHeaderMapHeader)
			}
		}
		return nil
	}); err != nil {
		return err
	}
	if headers > 0 && h.Headers == nil {
		h.Headers = make(map[string]string, headers)
	}
	var values []corev3.HeaderValue
	if raw > 0 {
		values = make([]corev3.HeaderValue, 0, raw)
	}
	return eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if num == fieldHTTPSize {
			if typ == protowire.VarintType {
				n, _ := protowire.ConsumeVarint(v)
				h.Size = int64(n) //nolint:gosec // protobuf int64: the two's complement of the varint, as the standard decoder reads it
			}
			return nil
		}
		if typ != protowire.BytesType {
			return nil
		}
		var dst *string
		switch num {
		case fieldHTTPID:
			dst = &h.Id
		case fieldHTTPMethod:
			dst = &h.Method
		case fieldHTTPPath:
			dst = &h.Path
		case fieldHTTPHost:
			dst = &h.Host
		case fieldHTTPScheme:
			dst = &h.Scheme
		case fieldHTTPQuery:
			dst = &h.Query
		case fieldHTTPFragment:
			dst = &h.Fragment
		case fieldHTTPProtocol:
			dst = &h.Protocol
		case fieldHTTPHeaders:
			return decodeMapEntry(v, str, h.Headers)
		case fieldHTTPHeaderMap:
			if h.HeaderMap == nil {
				h.HeaderMap = &corev3.HeaderMap{}
			}
			return eachField(v, func(num protowire.Number, typ protowire.Type, v []byte) error {
				if num != fieldHeaderMapHeader || typ != protowire.BytesType {
					return nil
				}
				values = append(values, corev3.HeaderValue{})
				hv := &values[len(values)-1]
				h.HeaderMap.Headers = append(h.HeaderMap.Headers, hv)
				return decodeHeaderValue(v, str, hv)
			})
		default:
			return nil
		}
		out, err := str.of(v)
		*dst = out
		return err
	})
}

func decodeMapEntry(b []byte, str *stringsOf, m map[string]string) error {
	var k, v string
	err := eachField(b, func(num protowire.Number, typ protowire.Type, f []byte) error {
		if typ != protowire.BytesType {
			return nil
		}
		var err error
		switch num {
		case fieldMapKey:
			k, err = str.of(f)
		case fieldMapValue:
			v, err = str.of(f)
		}
		return err
	})
	if err != nil {
		return err
	}
	m[k] = v
	return nil
}

func decodeHeaderValue(b []byte, str *stringsOf, hv *corev3.HeaderValue) error {
	return eachField(b, func(num protowire.Number, typ protowire.Type, f []byte) error {
		if typ != protowire.BytesType {
			return nil
		}
		var err error
		switch num {
		case fieldMapKey:
			hv.Key, err = str.of(f)
		case fieldMapValue:
			hv.Value, err = str.of(f)
		case fieldHeaderRawValue:
			hv.RawValue = append([]byte(nil), f...)
		}
		return err
	})
}

// eachField calls fn for every field of a message: for a bytes field with
// its contents, for a varint with its encoding, and for other types with
// their raw value. It fails on malformed wire data, including groups that
// do not close, as the standard decoder does; fields fn ignores are only
// skipped.
func eachField(b []byte, fn func(protowire.Number, protowire.Type, []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errMalformedRequest
		}
		b = b[n:]
		var v []byte
		if typ == protowire.BytesType {
			// Sliced here, not by protowire, so that v keeps the
			// capacity of b: decodeHTTPRequest finds v's offset by it.
			m, k := protowire.ConsumeVarint(b)
			if k < 0 || m > uint64(len(b)-k) { //nolint:gosec // k <= len(b): the difference is not negative
				return errMalformedRequest
			}
			l := int(m) //nolint:gosec // m <= len(b)-k, so it fits an int
			v, n = b[k:k+l], k+l
		} else {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n >= 0 {
				v = b[:n]
			}
		}
		if n < 0 {
			return errMalformedRequest
		}
		if err := fn(num, typ, v); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// countFields counts the bytes fields numbered num of a message; malformed
// data counts what precedes it (eachField reports the error later).
func countFields(b []byte, num protowire.Number) int {
	n := 0
	_ = eachField(b, func(got protowire.Number, typ protowire.Type, _ []byte) error {
		if got == num && typ == protowire.BytesType {
			n++
		}
		return nil
	})
	return n
}

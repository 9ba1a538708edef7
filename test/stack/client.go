package stack

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"gatehouse.dev/gatehouse/sidecar/server"
)

// TokenResponse is the token endpoint's answer: a token, or an RFC 6749
// error.
type TokenResponse struct {
	Status      int    `json:"-"`
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
	Scope       string `json:"scope"`
	Error       string `json:"error"`
}

// String never shows the token.
func (t TokenResponse) String() string {
	if t.AccessToken == "" {
		return fmt.Sprintf("HTTP %d error=%s", t.Status, t.Error)
	}
	return fmt.Sprintf("HTTP %d token (%d bytes, redacted) expires_in=%d scope=%q", t.Status, len(t.AccessToken), t.ExpiresIn, t.Scope)
}

// GetToken trades apiKey for a token at baseURL's token endpoint (client
// credentials, the key as the HTTP Basic client secret).
func GetToken(ctx context.Context, baseURL, apiKey, scope, audience string) (TokenResponse, error) {
	form := url.Values{"grant_type": {"client_credentials"}}
	if scope != "" {
		form.Set("scope", scope)
	}
	if audience != "" {
		form.Set("audience", audience)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/oauth2/token", strings.NewReader(form.Encode()))
	if err != nil {
		return TokenResponse{}, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("", apiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return TokenResponse{}, fmt.Errorf("calling the token endpoint: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	var tr TokenResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&tr); err != nil {
		return TokenResponse{}, fmt.Errorf("decoding the token endpoint's answer (HTTP %d): %w", resp.StatusCode, err)
	}
	tr.Status = resp.StatusCode
	return tr, nil
}

// Verdict is what a sidecar answered to a check.
type Verdict struct {
	Allowed bool
	// Status is the HTTP status a denied request gets (200 when allowed).
	Status int
	// Reason is the deny reason header; Subject the identity header.
	Reason, Subject string
}

func (v Verdict) String() string {
	if v.Allowed && v.Subject == "" {
		return "allowed (anonymous)"
	}
	if v.Allowed {
		return fmt.Sprintf("allowed (subject %q)", v.Subject)
	}
	return fmt.Sprintf("denied %d (%s)", v.Status, v.Reason)
}

// Request is a request Envoy asks the sidecar about.
type Request struct {
	Method, Host, Path string
	Headers            map[string]string
}

// CheckGRPC asks the sidecar at addr over envoy.service.auth.v3.
func CheckGRPC(ctx context.Context, addr string, r Request) (Verdict, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return Verdict{}, err
	}
	defer func() { _ = conn.Close() }()
	headers := map[string]string{}
	for k, v := range r.Headers {
		headers[strings.ToLower(k)] = v
	}
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: r.Method, Host: r.Host, Path: r.Path, Headers: headers, Protocol: "HTTP/1.1",
		}},
	}})
	if err != nil {
		return Verdict{}, fmt.Errorf("check: %w", err)
	}
	names := server.HeaderNamesWithPrefix(server.DefaultHeaderPrefix)
	if ok := resp.GetOkResponse(); ok != nil {
		v := Verdict{Allowed: true, Status: http.StatusOK}
		for _, h := range ok.GetHeaders() {
			if strings.EqualFold(h.GetHeader().GetKey(), names.Subject) {
				v.Subject = h.GetHeader().GetValue()
			}
		}
		return v, nil
	}
	denied := resp.GetDeniedResponse()
	v := Verdict{Status: int(denied.GetStatus().GetCode())}
	for _, h := range denied.GetHeaders() {
		if strings.EqualFold(h.GetHeader().GetKey(), names.DenyReason) {
			v.Reason = h.GetHeader().GetValue()
		}
	}
	return v, nil
}

// CheckHTTP asks the sidecar's HTTP contract at addr, as Envoy's HTTP
// ext_authz service does: the original method, path and headers.
func CheckHTTP(ctx context.Context, addr string, r Request) (Verdict, error) {
	req, err := http.NewRequestWithContext(ctx, r.Method, "http://"+addr+r.Path, nil)
	if err != nil {
		return Verdict{}, err
	}
	req.Host = r.Host
	for k, v := range r.Headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return Verdict{}, fmt.Errorf("check: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	names := server.HeaderNamesWithPrefix(server.DefaultHeaderPrefix)
	return Verdict{
		Allowed: resp.StatusCode == http.StatusOK,
		Status:  resp.StatusCode,
		Reason:  resp.Header.Get(names.DenyReason),
		Subject: resp.Header.Get(names.Subject),
	}, nil
}

package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
)

// fullSidecar is a real gatehouse-sidecar process on --source=xds, with a
// token file and CA file written as the kubelet would project them.
type fullSidecar struct {
	*process
	healthAddr string
	check      authv3.AuthorizationClient
	conn       *grpc.ClientConn
}

// startFullSidecar runs sidecar i of namespace ns against the operator.
func startFullSidecar(ctx context.Context, i int, dir, bin string, op *operatorProcess, token, ns string) (*fullSidecar, error) {
	sdir := filepath.Join(dir, fmt.Sprintf("sidecar-%d", i))
	if err := os.MkdirAll(sdir, 0o700); err != nil {
		return nil, err
	}
	tokenFile, caFile := filepath.Join(sdir, "token"), filepath.Join(sdir, "ca.crt")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(caFile, op.caPEM, 0o600); err != nil {
		return nil, err
	}
	grpcAddr, err := freeAddr(ctx)
	if err != nil {
		return nil, err
	}
	healthAddr, err := freeAddr(ctx)
	if err != nil {
		return nil, err
	}
	p, err := startProcess(ctx, fmt.Sprintf("sidecar-%d", i), dir, bin,
		"--source", "xds", "--namespace", ns, "--pod-labels", "app=xdssim",
		"--xds-address", "passthrough:///"+op.xdsAddr, "--xds-server-name", op.serverName,
		"--xds-ca-file", caFile, "--xds-token-file", tokenFile,
		"--grpc-bind-address", grpcAddr, "--http-bind-address", "", "--metrics-bind-address", "",
		"--health-probe-bind-address", healthAddr, "--remote-issuers=false", "--decision-logs-per-second", "0",
	)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient("passthrough:///"+grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		p.stop()
		return nil, err
	}
	return &fullSidecar{process: p, healthAddr: healthAddr, check: authv3.NewAuthorizationClient(conn), conn: conn}, nil
}

func (s *fullSidecar) stop() {
	_ = s.conn.Close()
	s.process.stop()
}

// waitReady polls /readyz until the sidecar holds a complete state.
func (s *fullSidecar) waitReady(ctx context.Context) error {
	url := "http://" + s.healthAddr + "/readyz"
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if err := s.exited(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s to be ready: %w", s.name, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// allows sends one ext_authz check for GET /orders/1 with key and says
// whether it was allowed.
func (s *fullSidecar) allows(ctx context.Context, key apikeyformat.Key) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := s.check.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Host: "api.example.com", Path: "/orders/1", Headers: map[string]string{"x-api-key": key.Plaintext()}},
	}}})
	if err != nil {
		return false, fmt.Errorf("check on %s: %w", s.name, err)
	}
	return resp.GetStatus().GetCode() == int32(codes.OK) && resp.GetOkResponse() != nil, nil
}

// waitVerdict checks key until the sidecar answers want, or ctx ends.
func (s *fullSidecar) waitVerdict(ctx context.Context, key apikeyformat.Key, want bool) error {
	for {
		got, err := s.allows(ctx, key)
		if err != nil {
			return err
		}
		if got == want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: a check still answered allowed=%v: %w", s.name, got, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// deliveredKey reads the plaintext key the operator delivered for the
// APIKey ns/name (kept in memory, never printed).
func deliveredKey(ctx context.Context, c client.Client, ns, name string) (apikeyformat.Key, error) {
	sec := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name + "-key"}, sec); err != nil {
		return apikeyformat.Key{}, fmt.Errorf("reading the delivery Secret of %s/%s: %w", ns, name, err)
	}
	k, err := apikeyformat.Parse(string(sec.Data[gatehousev1.DeliveryKeyDataKey]))
	if err != nil {
		return apikeyformat.Key{}, fmt.Errorf("the delivery Secret of %s/%s: %w", ns, name, err)
	}
	return k, nil
}

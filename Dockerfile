# syntax=docker/dockerfile:1
#
# The one Gatehouse image: two static binaries on distroless, running as the
# non-root user 65532:
#
#   /gatehouse operator  the entrypoint (the chart's Deployment)
#   /gatehouse-sidecar   injected beside workloads by the operator's webhook,
#                        which sets it as the container's command; it links
#                        none of the operator's code, so each pod maps less
#
# Build:  docker build --build-arg VERSION=v0.1.0 -t gatehouse:v0.1.0 .
#
# The base images below are referenced by tag because the machine that
# maintains this file cannot pull images. Release tooling MUST pin each one by
# digest before building, e.g. with `crane digest <image>` and then
#   FROM golang:1.26-bookworm@sha256:<digest>
#   FROM gcr.io/distroless/static-debian12:nonroot@sha256:<digest>
# (a tag can be moved; a digest cannot). test/image checks the rest of this
# file: the static build flags, the non-root user and the entrypoint.

# Builder: pin as golang:1.26-bookworm@sha256:<digest> in release tooling.
FROM --platform=$BUILDPLATFORM golang:1.26-bookworm AS build
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
WORKDIR /src
# Modules first, so that source edits do not refetch them.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
# .dockerignore keeps the context to the Go sources the binary is built from.
COPY . .
# CGO_ENABLED=0: a static binary, as distroless/static has no libc.
# -trimpath: no build-machine paths in the binary; -s -w: no symbol tables.
# -tags grpcnotrace: gRPC without golang.org/x/net/trace, whose html/template
# stops the linker from dropping unused methods (about 7 MiB less resident
# memory per sidecar; docs/performance.md).
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -tags grpcnotrace -ldflags "-s -w -X gatehouse.dev/gatehouse/internal/version.Version=${VERSION}" \
      -o /out/ ./cmd/gatehouse ./cmd/gatehouse-sidecar

# Runtime: pin as gcr.io/distroless/static-debian12:nonroot@sha256:<digest> in
# release tooling. No shell, no package manager, CA certificates and tzdata
# included (the sidecar fetches remote JWKS over HTTPS).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/gatehouse /out/gatehouse-sidecar /
# Numeric, so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532
ENTRYPOINT ["/gatehouse"]

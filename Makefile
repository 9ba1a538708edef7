# Gatehouse — run `make help` for the targets.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

LOCALBIN ?= $(CURDIR)/bin
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint
BUF ?= $(LOCALBIN)/buf
PROTOC_GEN_GO ?= $(LOCALBIN)/protoc-gen-go
HELM ?= $(LOCALBIN)/helm

# Pinned tool versions, installed into ./bin through the Go module proxy.
CONTROLLER_TOOLS_VERSION ?= v0.23.0
GOLANGCI_LINT_VERSION ?= v2.15.0
HELM_VERSION ?= v3.22.0
BUF_VERSION ?= v1.75.0
# protoc-gen-go goes with the google.golang.org/protobuf of go.mod.
PROTOC_GEN_GO_VERSION ?= v1.36.12

GO_TEST_FLAGS ?= -race -count=1
TEST_TIMEOUT ?= 20m

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: generate
generate: $(CONTROLLER_GEN) $(BUF) $(PROTOC_GEN_GO) ## Write zz_generated.deepcopy.go from the API types and the Go types of api/xds protos.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."
	@# buf compiles the protos itself (no protoc) and runs the pinned
	@# protoc-gen-go found first on PATH; old outputs go first so that a
	@# removed .proto leaves no stale .pb.go behind.
	cd api/xds && $(BUF) lint && rm -f v1alpha1/*.pb.go && PATH="$(LOCALBIN):$$PATH" $(BUF) generate

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Write CRDs and RBAC from markers, and copy both into the chart.
	$(CONTROLLER_GEN) crd paths="./api/..." output:crd:artifacts:config=config/crd/bases
	$(CONTROLLER_GEN) rbac:roleName=gatehouse-operator paths="./controllers/...;./operator/..." output:rbac:artifacts:config=config/rbac
	@# The sidecar's rules come from the markers in sidecar/source, the
	@# code that reads; test/sidecarrbac binds them and the chart renders them.
	$(CONTROLLER_GEN) rbac:roleName=gatehouse-sidecar paths="./sidecar/..." output:rbac:artifacts:config=config/rbac/sidecar
	mkdir -p charts/gatehouse/crds charts/gatehouse/files
	cp config/crd/bases/*.yaml charts/gatehouse/crds/
	cp config/rbac/sidecar/role.yaml charts/gatehouse/files/sidecar-role.yaml
	@# The chart renders the operator's ClusterRole from this copy, so that
	@# its RBAC is always the markers'. controller-gen writes no file while
	@# there are no markers: the operator then needs no cluster-wide rule.
	if [[ -f config/rbac/role.yaml ]]; then cp config/rbac/role.yaml charts/gatehouse/files/operator-role.yaml; \
	else printf -- '---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: gatehouse-operator\nrules: []\n' > charts/gatehouse/files/operator-role.yaml; fi

.PHONY: chart-docs
chart-docs: ## Write the values table of charts/gatehouse/README.md from values.yaml.
	go run ./hack/chartdoc -values charts/gatehouse/values.yaml -readme charts/gatehouse/README.md

.PHONY: chart-lint
chart-lint: $(HELM) ## Lint the Helm chart.
	$(HELM) lint --strict charts/gatehouse

.PHONY: fmt
fmt: $(GOLANGCI_LINT) ## Format with the formatters `make lint` checks (.golangci.yml: gofmt, goimports with the local prefix).
	$(GOLANGCI_LINT) fmt ./...

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: lint
lint: vet $(GOLANGCI_LINT) ## Run go vet and golangci-lint.
	$(GOLANGCI_LINT) run ./...

.PHONY: verify
verify: ## Fail if generated files, CRDs or go.mod are out of date.
	hack/verify.sh

##@ Test

.PHONY: apiserver
apiserver: ## Build kube-apiserver and etcd from source (cached outside the tree).
	@hack/build-apiserver.sh

.PHONY: test
test: test-unit test-integration test-fuzz ## Run every test (unit, integration with -race, and a short fuzz of each target).

.PHONY: test-unit
test-unit: $(HELM) ## Run unit tests (no API server).
	go test $(GO_TEST_FLAGS) -short -timeout $(TEST_TIMEOUT) ./...

FUZZTIME ?= 5s

.PHONY: test-fuzz
test-fuzz: ## Fuzz every Fuzz target for FUZZTIME each (seeds also run in test-unit).
	@set -e; for pkg in $$(go list ./...); do \
	  dir=$$(go list -f '{{.Dir}}' $$pkg); \
	  for target in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/^func //'); do \
	    echo ">> fuzz $$pkg $$target ($(FUZZTIME))"; \
	    hack/fuzz.sh $$pkg $$target $(FUZZTIME); \
	  done; \
	done

.PHONY: test-integration
test-integration: $(HELM) ## Run integration tests against a real kube-apiserver and etcd.
	KUBEBUILDER_ASSETS=$${KUBEBUILDER_ASSETS:-$$(hack/build-apiserver.sh)} go test $(GO_TEST_FLAGS) -timeout $(TEST_TIMEOUT) -run 'Integration' ./...

##@ Build

.PHONY: build
# grpcnotrace: gRPC without golang.org/x/net/trace, whose html/template keeps
# every exported method in the binary (docs/performance.md); the Dockerfile
# builds the same way.
GO_BUILD_TAGS ?= grpcnotrace

build: ## Build bin/gatehouse (operator, tools) and bin/gatehouse-sidecar.
	CGO_ENABLED=0 go build -trimpath -tags $(GO_BUILD_TAGS) -o $(LOCALBIN)/ ./cmd/gatehouse ./cmd/gatehouse-sidecar

.PHONY: demo
demo: ## Run Gatehouse locally: API server, operator, sidecar, samples and real requests.
	go run ./hack/demo --assets "$$(hack/build-apiserver.sh)" $(DEMO_FLAGS)

##@ Tools

$(CONTROLLER_GEN):
	GOBIN=$(LOCALBIN) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)

$(BUF):
	GOBIN=$(LOCALBIN) go install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)

$(PROTOC_GEN_GO):
	GOBIN=$(LOCALBIN) go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)

$(GOLANGCI_LINT):
	GOBIN=$(LOCALBIN) go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

# The -X flags are what Helm's own release build sets: without them `helm
# version` says "v3.22" and `helm template` assumes Kubernetes 1.20, below the
# chart's kubeVersion. 1.37 is the Kubernetes version of Helm's client-go.
HELM_K8S_MINOR ?= 37
$(HELM):
	GOBIN=$(LOCALBIN) go install -ldflags "-X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION) \
	  -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$(HELM_K8S_MINOR) \
	  -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$(HELM_K8S_MINOR)" \
	  helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

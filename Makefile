# nodepki build, run and test entry points. See README.md.
GO ?= go
BIN := bin
CLUSTER_STATE ?= $(CURDIR)/_out/cluster

.PHONY: build tools tools-kubernetes run test bench fuzz generate lint clean

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# etcd, etcdctl and etcdutl from the pinned module in tools/etcd (go.mod tool directives); each is
# rebuilt only when missing or older than the pins.
ETCD_TOOLS := $(BIN)/etcd $(BIN)/etcdctl $(BIN)/etcdutl
ETCD_PINS := tools/etcd/go.mod tools/etcd/go.sum

tools: $(ETCD_TOOLS) tools-kubernetes

$(BIN)/etcd: $(ETCD_PINS)
	cd tools/etcd && $(GO) build -o $(CURDIR)/$@ go.etcd.io/etcd/server/v3

$(BIN)/etcdctl: $(ETCD_PINS)
	cd tools/etcd && $(GO) build -o $(CURDIR)/$@ go.etcd.io/etcd/etcdctl/v3

$(BIN)/etcdutl: $(ETCD_PINS)
	cd tools/etcd && $(GO) build -o $(CURDIR)/$@ go.etcd.io/etcd/etcdutl/v3


# kube-apiserver and kubectl from the pinned module in tools/kubernetes (k8s.io/kubernetes with its
# staging modules at their matching releases); each is rebuilt only when missing or older than the
# pins. A cold build compiles most of Kubernetes: minutes, and about 2 GiB of build cache.
KUBERNETES_TOOLS := $(BIN)/kube-apiserver $(BIN)/kubectl
KUBERNETES_PINS := tools/kubernetes/go.mod tools/kubernetes/go.sum
# The release, stamped into the binaries as Kubernetes' own build does (they report it in
# --version, /version and kubectl version).
KUBERNETES_VERSION := $(shell sed -n 's/^[[:space:]]*k8s.io\/kubernetes \(v[0-9.]*\)$$/\1/p' tools/kubernetes/go.mod)
KUBERNETES_MINOR := $(word 2,$(subst ., ,$(KUBERNETES_VERSION)))
KUBERNETES_LDFLAGS := $(foreach pkg,k8s.io/component-base/version k8s.io/client-go/pkg/version,\
	-X $(pkg).gitVersion=$(KUBERNETES_VERSION) -X $(pkg).gitMajor=1 -X $(pkg).gitMinor=$(KUBERNETES_MINOR) -X $(pkg).gitTreeState=clean)

tools-kubernetes: $(KUBERNETES_TOOLS)

$(BIN)/kube-apiserver: $(KUBERNETES_PINS) tools/kubernetes/kube-apiserver/main.go
	@echo "building $@ from tools/kubernetes (the first build takes several minutes)"
	cd tools/kubernetes && $(GO) build -ldflags '$(KUBERNETES_LDFLAGS)' -o $(CURDIR)/$@ ./kube-apiserver

$(BIN)/kubectl: $(KUBERNETES_PINS)
	@echo "building $@ from tools/kubernetes (the first build takes several minutes)"
	cd tools/kubernetes && $(GO) build -ldflags '$(KUBERNETES_LDFLAGS)' -o $(CURDIR)/$@ k8s.io/kubernetes/cmd/kubectl

run: build tools
	./scripts/run.sh $(BIN) $(CLUSTER_STATE)

test: tools
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 12m ./...

# In-process benchmarks run for a fixed time; those that start real nodepkid processes (test/...)
# for a fixed number of iterations. Results are recorded in docs/benchmarks.md.
bench: build tools
	$(GO) test -run '^$$' -bench . -benchtime 2s -timeout 20m ./pkg/... ./controllers/... ./runtime/...
	$(GO) test -run '^$$' -bench . -benchtime 10x -timeout 20m ./test/...

# Go native fuzzing of every fuzz target in the module, FUZZTIME each (see scripts/fuzz.sh).
# Crashers are written to the package's testdata/fuzz and replayed by `make test` from then on.
FUZZTIME ?= 60s

fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

PROTOC_GEN_GO := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.11
PROTOC_GEN_GO_GRPC := google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1

# Needs protoc (Debian: apt-get install -y protobuf-compiler); the Go plugins are installed here.
generate:
	GOBIN=$(CURDIR)/$(BIN)/tools $(GO) install $(PROTOC_GEN_GO)
	GOBIN=$(CURDIR)/$(BIN)/tools $(GO) install $(PROTOC_GEN_GO_GRPC)
	PATH=$(CURDIR)/$(BIN)/tools:$$PATH $(GO) generate ./...

GOLANGCI_LINT_VERSION := v2.15.0
GOLANGCI_LINT := $(BIN)/tools/golangci-lint

# Installed once into bin/tools at the pinned version; `make clean` removes it.
$(GOLANGCI_LINT):
	GOBIN=$(CURDIR)/$(BIN)/tools $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

# Configuration in .golangci.yml.
lint: $(GOLANGCI_LINT)
	$(GO) vet ./...
	test -z "$$(gofmt -l $$(git ls-files '*.go'))"
	$(GOLANGCI_LINT) run ./...

clean:
	rm -rf $(BIN) _out

# nodepki build, run and test entry points. See README.md.
GO ?= go
BIN := bin
CLUSTER_STATE ?= $(CURDIR)/_out/cluster

.PHONY: build tools run test bench generate lint clean

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# etcd, etcdctl and etcdutl from the pinned module in tools/etcd (go.mod tool directives); each is
# rebuilt only when missing or older than the pins.
ETCD_TOOLS := $(BIN)/etcd $(BIN)/etcdctl $(BIN)/etcdutl
ETCD_PINS := tools/etcd/go.mod tools/etcd/go.sum

tools: $(ETCD_TOOLS)

$(BIN)/etcd: $(ETCD_PINS)
	cd tools/etcd && $(GO) build -o $(CURDIR)/$@ go.etcd.io/etcd/server/v3

$(BIN)/etcdctl: $(ETCD_PINS)
	cd tools/etcd && $(GO) build -o $(CURDIR)/$@ go.etcd.io/etcd/etcdctl/v3

$(BIN)/etcdutl: $(ETCD_PINS)
	cd tools/etcd && $(GO) build -o $(CURDIR)/$@ go.etcd.io/etcd/etcdutl/v3

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

PROTOC_GEN_GO := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.11
PROTOC_GEN_GO_GRPC := google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1

# Needs protoc (Debian: apt-get install -y protobuf-compiler); the Go plugins are installed here.
generate:
	GOBIN=$(CURDIR)/$(BIN)/tools $(GO) install $(PROTOC_GEN_GO)
	GOBIN=$(CURDIR)/$(BIN)/tools $(GO) install $(PROTOC_GEN_GO_GRPC)
	PATH=$(CURDIR)/$(BIN)/tools:$$PATH $(GO) generate ./...

lint:
	$(GO) vet ./...
	test -z "$$(gofmt -l $$(git ls-files '*.go'))"

clean:
	rm -rf $(BIN) _out

# nodepki build, run and test entry points. See README.md.
GO ?= go
BIN := bin
CLUSTER_STATE ?= $(CURDIR)/_out/cluster

.PHONY: build run test bench fuzz generate lint clean

build:
	$(GO) build -o $(BIN)/ ./cmd/...

run: build
	./scripts/run.sh $(BIN) $(CLUSTER_STATE)

test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 12m ./...

# In-process benchmarks run for a fixed time; those that start real nodepkid processes (test/...)
# for a fixed number of iterations. Results are recorded in docs/benchmarks.md.
bench: build
	$(GO) test -run '^$$' -bench . -benchtime 2s -timeout 20m ./pkg/... ./controllers/... ./runtime/...
	$(GO) test -run '^$$' -bench . -benchtime 10x -timeout 20m ./test/...

# Go native fuzzing, one target at a time (go test -fuzz takes one): FUZZTIME each. Crashers are
# written to the package's testdata/fuzz and replayed by `make test` from then on. Minimizing a
# new input is capped at 10 s (default 60 s) so that short runs spend their time fuzzing.
FUZZTIME ?= 60s
FUZZ_TARGETS := \
	./pkg/machineconfig:FuzzParse \
	./pkg/machineconfig:FuzzPatch \
	./pkg/bundle:FuzzParse \
	./pkg/clientconfig:FuzzParse \
	./pkg/certs:FuzzPEM \
	./runtime/trustd:FuzzCSRPolicy \
	./runtime/api:FuzzLabelledBackendAppendInfo \
	./pkg/revocation:FuzzEntry

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 10s $$pkg; \
	done

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

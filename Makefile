# nodepki build, run and test entry points. See README.md.
GO ?= go
BIN := bin
CLUSTER_STATE ?= $(CURDIR)/_out/cluster

.PHONY: build run test bench generate lint clean

build:
	$(GO) build -o $(BIN)/ ./cmd/...

run: build
	./scripts/run.sh $(BIN) $(CLUSTER_STATE)

test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 12m ./...

bench: build
	$(GO) test -run '^$$' -bench . -benchtime 20x -timeout 20m ./...

generate:
	$(GO) generate ./...

lint:
	$(GO) vet ./...
	test -z "$$(gofmt -l $$(git ls-files '*.go'))"

clean:
	rm -rf $(BIN) _out

# See README.md. `make test` installs and starts what the tests need.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.5.1
GOBIN_DIR := $(CURDIR)/.tools/bin

.PHONY: all build test test-go test-ansible lint proto proto-check deps demo example-data bench clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ ./cmd/reset-agent ./cmd/resetctl

deps:
	bash scripts/ensure-deps.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

proto:
	GOBIN=$(GOBIN_DIR) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(GOBIN_DIR) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	PATH=$(GOBIN_DIR):$$PATH protoc -I proto --go_out=proto --go_opt=paths=source_relative \
		--go-grpc_out=proto --go-grpc_opt=paths=source_relative proto/agent/v1/agent.proto

# Regenerates into a temp copy and fails when the committed code differs.
proto-check: proto
	@git diff --exit-code -- proto/ || (echo "proto: generated code is stale, run make proto and commit"; exit 1)

test: deps lint proto-check test-go test-ansible

test-go:
	$(GO) test -count=1 -timeout 20m ./...

test-ansible: build
	bash scripts/test-ansible.sh

demo: deps build
	bash scripts/demo.sh

example-data:
	$(GO) run ./examples/seed --config examples/resetctl.yaml

bench:
	$(GO) test -run '^$$' -bench . -benchtime 1x ./bench/... ./controller/inventory/

clean:
	rm -rf bin .tools

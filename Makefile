# See README.md. `make test` installs and starts what the tests need.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.5.1
GOBIN_DIR := $(CURDIR)/.tools/bin
# protoc's well-known types (google/protobuf/timestamp.proto): Debian's libprotobuf-dev puts
# them in /usr/include; a protoc release zip in /usr/local/include.
PROTOC_INCLUDE ?= $(firstword $(foreach d,/usr/include /usr/local/include,$(if $(wildcard $(d)/google/protobuf/timestamp.proto),$(d))))

.PHONY: all build test test-go test-ansible lint proto proto-check deps demo example-data bench bench-backup clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ ./cmd/reset-agent ./cmd/resetctl

deps:
	bash scripts/ensure-deps.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

proto:
	@if [ -z "$(PROTOC_INCLUDE)" ]; then echo "proto: google/protobuf/timestamp.proto not found in /usr/include or /usr/local/include: run make deps (Debian package libprotobuf-dev) or set PROTOC_INCLUDE"; exit 1; fi
	GOBIN=$(GOBIN_DIR) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(GOBIN_DIR) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	PATH=$(GOBIN_DIR):$$PATH protoc -I proto -I $(PROTOC_INCLUDE) --go_out=proto --go_opt=paths=source_relative \
		--go-grpc_out=proto --go-grpc_opt=paths=source_relative proto/agent/v1/agent.proto

# Regenerates into a temp copy and fails when the committed code differs.
proto-check: proto
	@git diff --exit-code -- proto/ || (echo "proto: generated code is stale, run make proto and commit"; exit 1)

test: deps lint proto-check test-go test-ansible

# TESTRESET_WORKERD: the D1 suite on workerd (internal/testing/workerdtest) fails instead of
# skipping when .tools/npm is missing; TESTRESET_S3 the same for the run store's S3 suite
# (internal/testing/s3test: versitygw in .tools/bin); TESTRESET_STRIPEMOCK the same for
# stripe-mock (internal/testing/stripemock). MariaDB is never optional outside -short.
test-go:
	@mkdir -p .tools && rm -f .tools/faults-summary.txt
	TESTRESET_FAULTS_SUMMARY=$(CURDIR)/.tools/faults-summary.txt TESTRESET_WORKERD=require TESTRESET_S3=require TESTRESET_STRIPEMOCK=require $(GO) test -count=1 -timeout 20m ./...
	@# go test hides the output of passing packages: show the fault suite's and the hostile-input counts.
	@cat .tools/faults-summary.txt
	@$(GO) test -count=1 -run '^TestHostileInputs$$' -v ./agent/ | grep -E '^(hostile inputs:|--- FAIL|FAIL)'

test-ansible: build
	bash scripts/test-ansible.sh

demo: deps build
	bash scripts/demo.sh

example-data:
	$(GO) run ./examples/seed --config examples/resetctl.yaml

# make bench (about 3 minutes on 2 cores): the fleet batch (100 test tenants on 4 agent
# processes, concurrency 1 and 4), the inventory's and one reset's Cloudflare request figures.
# make bench-backup: the 1 GiB site backup benchmark (several minutes, a few GiB of disk).
bench:
	$(GO) test -run '^$$' -bench '^BenchmarkFleet$$' -benchtime 1x -timeout 20m ./benchmarks/
	$(GO) test -run '^$$' -bench . -benchtime 1x ./controller/inventory/
	FIGURES=1 $(GO) test -count=1 -run '^TestCloudflareRequestFigures$$' -v ./controller/execute/

bench-backup:
	$(GO) test -run '^$$' -bench '^BenchmarkBackup$$' -benchtime 1x -timeout 60m ./benchmarks/

clean:
	rm -rf bin .tools

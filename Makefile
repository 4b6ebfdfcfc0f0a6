# pagecast — see README.md. `make help` lists the targets.

GO ?= go
SHELL := /bin/bash
BIN := bin/pagecast

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_ -]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# Stamp the binary with its commit (pagecast --version) where git can read
# the checkout: -buildvcs=auto fails the build where it cannot (a tree git
# calls of dubious ownership), and some hosts set GOFLAGS=-buildvcs=false.
BUILDVCS := $(shell git status --porcelain >/dev/null 2>&1 && echo auto || echo false)

.PHONY: build
build: ## Build bin/pagecast (no C tools needed: generated code and the guest image are committed), stamped with its commit where built in a git checkout (pagecast --version)
	$(GO) build -buildvcs=$(BUILDVCS) -o $(BIN) ./cmd/pagecast

.PHONY: guest
guest: ## Rebuild the guest image guest/pagecast-guest.elf (needs gcc with -m32)
	$(MAKE) -C guest

.PHONY: generate
generate: guest ## Rebuild everything generated: the guest image and the eBPF objects (needs gcc -m32, clang)
	$(GO) generate ./...

.PHONY: dashboards
dashboards: ## Regenerate the Grafana dashboards' JSON (dashboards/*.json) from their Go code
	$(GO) run ./dashboards/gen -out dashboards

.PHONY: check-generated
check-generated: dashboards ## Fail if regenerating changes committed files
	$(MAKE) -C guest check
	$(GO) generate ./bpf/ ./tcg/
	git diff --exit-code -- bpf/ tcg/ dashboards/

# Where make test keeps the newer QEMU its last pass runs on (scripts/qemu-new.sh).
QEMU_NEW_DIR ?= $(HOME)/.cache/pagecast/qemu-new

.PHONY: test
test: deps-test ## Install what is missing (scripts/deps.sh), then run all tests (under the race detector; the engine's migrations of test guests, whose fault time it checks against their stall, the predictor's scores on real traces, its quiet shortcuts and its plots, three of the slowest end-to-end tests (the demo on QEMU, the dashboards against Prometheus, simulate auto on QEMU traces) and mode auto's watch of growing guests, again without; then, alone, the simulator's agreement with live migrations, whose live side the other tests' CPU would slow; last, the tests where QEMU versions differ, on QEMU 10.0 from bookworm-backports, fetched into QEMU_NEW_DIR) and say how many skipped for want of /dev/kvm, eBPF or QEMU (QEMU tests run under TCG without KVM)
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) build -o bin/testsummary ./internal/testsummary
	set -o pipefail; { $(GO) test -json -race -count=1 -timeout 20m ./...; \
	  $(GO) test -json -count=1 -timeout 10m -run '^(TestPredictiveRegimes|TestAutoGrid|TestGrowSweepGoesOn|TestChooseFrontWorstPoint|TestChooseFrontKnifeEdge|TestRealPrograms|TestRealCalibration|TestRealParts|TestQuietShortcutsExact|TestPlots|TestDashboardsAgainstPrometheus|TestDemoQEMU|TestSimulateAutoQEMUTrace|TestMigrateHeavy|TestMigrateModes|TestPostcopySweepWaits|TestPredictorMemoryUlimit|TestOwnChooserGrowing)$$' ./simulate/ ./predictor/ ./cmd/pagecast/ ./migrator/; \
	  $(GO) test -json -count=1 -timeout 10m -run '^TestAgreesWithLive(TSMC|Slowdown)?$$' ./simulate/; \
	  scripts/qemu-new-tests.sh $(QEMU_NEW_DIR) $(GO); } | bin/testsummary

.PHONY: bench
bench: ## Run the benchmarks (end-to-end ones once, side by side with QEMU; micro ones for 300 ms): a table per benchmark, then what skipped and why
	set -o pipefail; { $(GO) test -v -run '^$$' -bench . -benchtime 1x -timeout 60m ./bench/ && \
	  $(GO) test -v -run '^$$' -bench . -benchtime 300ms -timeout 30m $$($(GO) list ./... | grep -v '/bench$$'); } | $(GO) run ./internal/benchtable

.PHONY: deps-demo deps-test
deps-demo deps-test: ## Install the Debian packages make demo or make test needs, if missing (root or sudo; else say what is missing)
	scripts/deps.sh $(@:deps-%=%)

.PHONY: demo
demo: build deps-demo ## Run the main job end to end on a local VM (installs QEMU first where there is no /dev/kvm)
	./$(BIN) --log-level warn demo

FUZZTIME ?= 10m
.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each (default 10m), all of them even if one fails; FUZZFLAGS adds flags, e.g. -parallel=1
	failed=""; for pkg in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
	  for target in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$pkg/*_test.go | sed 's/^func //'); do \
	    echo "== $$pkg $$target"; \
	    $(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 1000x $(FUZZFLAGS) $$pkg || failed="$$failed $$pkg:$$target"; \
	  done; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz failed:$$failed"; exit 1; fi

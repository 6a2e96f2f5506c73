# Developer entry points for caseroom. `make` (or `make help`) lists the targets.

.DEFAULT_GOAL := help
.PHONY: help run test fuzz build tools fmt vet bench

# How much `make fuzz` runs each fuzz target (a count of inputs, not a duration: Go 1.26's time limit can fail a
# run with "context deadline exceeded" on a loaded machine), and how long it may spend shrinking one input.
FUZZTIME ?= 40000x
FUZZMINIMIZETIME ?= 2s

help: ## Show this list of targets
	@awk 'BEGIN { FS = ":.*## " } /^[a-zA-Z_-]+:.*## / { printf "  %-6s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

run: ## Start a homeserver, the FHIR test server, caseroom and demo accounts in ./dev (HOMESERVER=synapse|dendrite, EHR=none; Ctrl-C stops)
	go run ./cmd/caseroom-dev $(if $(HOMESERVER),-homeserver $(HOMESERVER)) $(if $(EHR),-ehr $(EHR))

test: ## Vet, fuzz briefly, then run all tests (with a real Dendrite and PostgreSQL; CI=1 turns skips into failures)
	go vet ./...
	go vet -tags goolm ./...
	$(MAKE) fuzz
	go test -tags goolm -count=1 -timeout 25m ./...

fuzz: ## Fuzz the check-in parser, the command parser and the transaction decoder, each for FUZZTIME inputs
	go test -tags goolm -run='^$$' -fuzz='^FuzzParseCheckIn$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZETIME) ./care
	go test -tags goolm -run='^$$' -fuzz='^FuzzSplitArgs$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZETIME) ./commands
	go test -tags goolm -run='^$$' -fuzz='^FuzzParseArgs$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZETIME) ./commands
	go test -tags goolm -run='^$$' -fuzz='^FuzzDecodeTransaction$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZETIME) ./bot

build: ## Build bin/caseroom (pure-Go end-to-end encryption; SQLite needs cgo)
	go build -tags goolm -o bin/caseroom ./cmd/caseroom

tools: ## Install the pinned homeservers into .tools (Dendrite binaries, a Synapse virtualenv)
	go run ./cmd/caseroom-dev -install-tools

fmt: ## Format the Go code
	go fmt ./...

vet: ## Run go vet
	go vet ./...

bench: ## Benchmark caseroom against a real homeserver and the FHIR test server (HOMESERVER=dendrite|synapse, default dendrite; ~25 min on Dendrite for both databases; writes bench.json)
	go run ./cmd/caseroom-bench $(if $(HOMESERVER),-homeserver $(HOMESERVER)) -json bench.json

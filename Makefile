# Developer entry points for caseroom. `make` (or `make help`) lists the targets.

.DEFAULT_GOAL := help
.PHONY: help run test fuzz build tools fmt vet

# How long `make fuzz` runs each fuzz target, and how long it may spend shrinking one input (new coverage or a
# failure; Go's default of 60 s would overrun FUZZTIME).
FUZZTIME ?= 8s
FUZZMINIMIZETIME ?= 2s

help: ## Show this list of targets
	@awk 'BEGIN { FS = ":.*## " } /^[a-zA-Z_-]+:.*## / { printf "  %-6s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

run: ## Start Dendrite + caseroom + demo accounts in ./dev for local development (Ctrl-C stops)
	go run ./cmd/caseroom-dev

test: ## Vet, run all tests (with a real Dendrite and PostgreSQL; CI=1 turns skips into failures), then fuzz briefly
	go vet ./...
	go vet -tags goolm ./...
	go test -tags goolm -count=1 -timeout 14m ./...
	$(MAKE) fuzz

fuzz: ## Fuzz the check-in parser, the command parser and the transaction decoder, each for FUZZTIME (8s)
	go test -tags goolm -run='^$$' -fuzz='^FuzzParseCheckIn$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZETIME) ./care
	go test -tags goolm -run='^$$' -fuzz='^FuzzSplitArgs$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZETIME) ./commands
	go test -tags goolm -run='^$$' -fuzz='^FuzzParseArgs$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZETIME) ./commands
	go test -tags goolm -run='^$$' -fuzz='^FuzzDecodeTransaction$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZETIME) ./bot

build: ## Build bin/caseroom (pure-Go end-to-end encryption; SQLite needs cgo)
	go build -tags goolm -o bin/caseroom ./cmd/caseroom

tools: ## Install the pinned Dendrite binaries into .tools/bin
	go run ./cmd/caseroom-dev -install-tools

fmt: ## Format the Go code
	go fmt ./...

vet: ## Run go vet
	go vet ./...

# Developer entry points for caseroom. `make` (or `make help`) lists the targets.

.DEFAULT_GOAL := help
.PHONY: help run test build tools fmt vet

help: ## Show this list of targets
	@awk 'BEGIN { FS = ":.*## " } /^[a-zA-Z_-]+:.*## / { printf "  %-6s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

run: ## Start Dendrite + caseroom + demo accounts in ./dev for local development (Ctrl-C stops)
	go run ./cmd/caseroom-dev

test: ## Vet, then run all tests (with a real Dendrite and PostgreSQL; CI=1 turns skips into failures)
	go vet ./...
	go vet -tags goolm ./...
	go test -tags goolm -count=1 -timeout 14m ./...

build: ## Build bin/caseroom (pure-Go end-to-end encryption; SQLite needs cgo)
	go build -tags goolm -o bin/caseroom ./cmd/caseroom

tools: ## Install the pinned Dendrite binaries into .tools/bin
	go run ./cmd/caseroom-dev -install-tools

fmt: ## Format the Go code
	go fmt ./...

vet: ## Run go vet
	go vet ./...

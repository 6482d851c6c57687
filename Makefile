# caddy-agcluster build, images, tests and benchmarks.
#
# make build   ./caddy (xcaddy, with this module), agent and mock binaries in bin/
# make image   the agent image and the mock Anthropic API image
# make gateway-image  Caddy with the module and the rate limiter, non-root (deploy/gateway)
# make test    unit and integration tests (needs a Docker engine; builds images)
# make bench   benchmarks (same needs as test)
# make run     Caddy with the module on :8080, agents in Docker
# make lint    gofmt and go vet
# make kube    a local one-node Kubernetes cluster (scripts/kube-up.sh; builds
#              it once, ~7 min); make kube-down stops it

GO            ?= go
CLAUDE_VERSION ?= 2.1.328
AGCLUSTER_CACHE ?= $(HOME)/.cache/agcluster
AGENT_IMAGE   ?= agcluster/agent:latest
MOCK_IMAGE    ?= agcluster/mock-anthropic:latest
GATEWAY_IMAGE ?= agcluster/gateway:latest
# The offline base built by `make base-image`. Set BASE_IMAGE=debian:bookworm-slim
# where a registry is reachable to skip debootstrap.
BASE_IMAGE    ?= agcluster/base:bookworm
TEST_TIMEOUT  ?= 45m
GOTEST_FLAGS  ?=

export AGCLUSTER_CACHE CLAUDE_VERSION AGENT_IMAGE MOCK_IMAGE GATEWAY_IMAGE
export DOCKER_BUILDKIT=0

CLAUDE_BIN := $(AGCLUSTER_CACHE)/claude-$(CLAUDE_VERSION)/claude
GO_SOURCES := $(shell find . -name '*.go' -not -path './.build/*' 2>/dev/null) go.mod go.sum

.PHONY: gateway-image kube kube-down test-engine-restart fuzz all build image agent-image mock-image base-image claude test test-unit bench run lint clean docker

all: build

build: caddy bin/agcluster-agent bin/mock-anthropic

# Caddy with this plugin, via xcaddy (pinned in xcaddy/build.sh).
caddy: $(GO_SOURCES)
	xcaddy/build.sh ./caddy

bin/agcluster-agent: $(GO_SOURCES)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $@ ./agent/cmd/agcluster-agent

bin/mock-anthropic: $(GO_SOURCES)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $@ ./internal/anthropictest/cmd/mock-anthropic

# The pinned Claude Code CLI, cached outside the checkout.
claude: $(CLAUDE_BIN)
$(CLAUDE_BIN):
	scripts/fetch-claude.sh

docker:
	scripts/ensure-docker.sh

base-image: docker
	@if [ "$(BASE_IMAGE)" = "agcluster/base:bookworm" ]; then scripts/base-image.sh "$(BASE_IMAGE)"; fi

image: agent-image mock-image

agent-image: bin/agcluster-agent $(CLAUDE_BIN) base-image
	rm -rf .build/agent-context && mkdir -p .build/agent-context
	ln -f $(CLAUDE_BIN) .build/agent-context/claude 2>/dev/null || cp $(CLAUDE_BIN) .build/agent-context/claude
	cp bin/agcluster-agent .build/agent-context/
	docker build -q --build-arg BASE_IMAGE=$(BASE_IMAGE) -f agent/Dockerfile -t $(AGENT_IMAGE) .build/agent-context
	rm -rf .build/agent-context

mock-image: bin/mock-anthropic docker
	rm -rf .build/mock-context && mkdir -p .build/mock-context
	cp bin/mock-anthropic .build/mock-context/
	docker build -q -f internal/anthropictest/cmd/mock-anthropic/Dockerfile -t $(MOCK_IMAGE) .build/mock-context
	rm -rf .build/mock-context

# The gateway image: ./caddy (xcaddy/build.sh: the module and caddy-ratelimit)
# on the agent image's offline base, running as a non-root user with /data
# and /config as volumes (deploy/gateway/Dockerfile; deploy/compose.yaml
# runs it next to LibreChat).
gateway-image: caddy base-image
	rm -rf .build/gateway-context && mkdir -p .build/gateway-context
	cp caddy deploy/gateway/Caddyfile .build/gateway-context/
	docker build -q --build-arg BASE_IMAGE=$(BASE_IMAGE) -f deploy/gateway/Dockerfile -t $(GATEWAY_IMAGE) .build/gateway-context
	rm -rf .build/gateway-context

# A one-node Kubernetes cluster on this machine (etcd, API server,
# controller-manager, scheduler, a private containerd, kubelet), with the
# agent image imported from Docker; the tests of internal/kubetest (and any
# using kubetest.Cluster) run on it. Its kubeconfig path is the script's last
# line of output. The binaries are built once per version in
# $(AGCLUSTER_CACHE)/kubernetes-v<version>.
kube: image
	scripts/kube-up.sh

kube-down:
	scripts/kube-down.sh

# Everything: unit tests, the real claude binary against the mock, and the
# agent in its hardened container.
test: image caddy gateway-image
	CADDY_BIN=$(CURDIR)/caddy CLAUDE_BIN=$(CLAUDE_BIN) $(GO) test -count=1 -timeout $(TEST_TIMEOUT) $(GOTEST_FLAGS) ./...

# The Docker engine restarted under an open conversation. It stops every
# container on the engine, so it runs alone, after `make test`.
test-engine-restart: image caddy
	AGCLUSTER_TEST_ENGINE_RESTART=1 CADDY_BIN=$(CURDIR)/caddy CLAUDE_BIN=$(CLAUDE_BIN) \
		$(GO) test -count=1 -timeout 10m -run '^TestEngineRestart$$' ./e2e/

# Unit tests only: no Docker, no claude.
test-unit:
	$(GO) test -short -count=1 ./...

# make bench (the last step: BenchmarkFleet, one gateway against three
# behind a load balancer): first the Go micro-benchmarks (translator, relay, writers:
# ns and allocs per event) and the per-component ones (agent start and
# turns, container create-to-ready; BENCH_RUNS iterations each), then the
# suite, which measures the whole stack in one invocation and prints one
# table (also written to BENCH_TABLE): every figure a median of BENCH_RUNS
# runs with min and max; BENCH_LEVELS are the conversation counts of the
# growth rows; BENCH_CONVERSATIONS conversations are created, put to sleep
# and 50 of them woken (20 is a quick check, 0 leaves it out; 1000 takes
# about half an hour), which BENCH_TIMEOUT must allow for. The sleeping
# part alone: BENCH_CONVERSATIONS=20 go test -run '^$$' -bench
# '^BenchmarkSleepingConversations$$' -benchtime 1x ./e2e/
BENCH_RUNS   ?= 10
BENCH_LEVELS ?= 1,10,50
BENCH_CONVERSATIONS ?= 1000
BENCH_TIMEOUT ?= 2h
BENCH_TABLE  ?= $(CURDIR)/.build/bench-table.md
bench: image caddy
	$(GO) test -run '^$$' -bench . -benchmem -count=1 $$($(GO) list ./... | grep -v -e '/agent$$' -e '/e2e$$' -e '/providers/docker$$')
	CLAUDE_BIN=$(CLAUDE_BIN) $(GO) test -run '^$$' -bench . -benchtime $(BENCH_RUNS)x -count=1 -timeout $(TEST_TIMEOUT) ./agent/ ./providers/docker/
	@mkdir -p $(dir $(BENCH_TABLE))
	CADDY_BIN=$(CURDIR)/caddy CLAUDE_BIN=$(CLAUDE_BIN) BENCH_RUNS=$(BENCH_RUNS) BENCH_LEVELS=$(BENCH_LEVELS) BENCH_TABLE=$(BENCH_TABLE) \
		BENCH_CONVERSATIONS=$(BENCH_CONVERSATIONS) \
		$(GO) test -run '^$$' -bench '^BenchmarkSuite$$' -benchtime 1x -count=1 -timeout $(BENCH_TIMEOUT) ./e2e/
	# One gateway and three behind Caddy's load balancer, same workload.
	CADDY_BIN=$(CURDIR)/caddy CLAUDE_BIN=$(CLAUDE_BIN) \
		$(GO) test -v -run '^$$' -bench '^BenchmarkFleet$$' -benchtime 1x -count=1 -timeout $(BENCH_TIMEOUT) ./e2e/

# The gateway on :8080 (caddyfile-examples/run.Caddyfile).
run: caddy agent-image
	./caddy run --config caddyfile-examples/run.Caddyfile --adapter caddyfile

# Each fuzz target for a budget of executions, -fuzztime <N>x, not a
# duration (the committed corpora run first). With a duration, Go 1.26's
# fuzz coordinator can fail with "context deadline exceeded" when the time
# runs out on a loaded machine (go.dev/issue/75804, fixed in Go 1.27); an
# execution budget has no deadline, so a loaded machine is only slower.
# Each budget is 4-5.5 s on a 2-core machine with an empty fuzz cache, as
# on CI (Intel Xeon, go1.26.8, load 2.3, 2026-12-01): per second,
# ParseChatCompletionRequest ~100k executions, StreamWriter ~15k,
# ReadData ~160k, DecodeEvent ~150k, Translate ~80k, CleanPath ~160k;
# ContentParts (two parses and an encode per execution) ran at half to
# the whole of ParseChatCompletionRequest's rate side by side on a loaded
# 2-core machine (load 7-9, 2026-12-01), so ~50-100k.
# The fuzz cache ($(go env GOCACHE)/fuzz) keeps what runs find; a large
# one makes some targets much slower (go clean -fuzzcache empties it).
# FUZZ_SCALE multiplies every budget (2: 8-11 s each). Minimizing a new
# interesting input is bounded by executions too (FUZZ_MINIMIZE), not by
# the default 60 s, which a run without a deadline would spend in full.
FUZZ_SCALE    ?= 1
FUZZ_MINIMIZE ?= 10000x
fuzz-limits = -fuzztime $(shell echo $$(( $(1) * $(FUZZ_SCALE) )))x -fuzzminimizetime $(FUZZ_MINIMIZE)
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseChatCompletionRequest$$' $(call fuzz-limits,400000) ./openai/
	$(GO) test -run '^$$' -fuzz '^FuzzContentParts$$' $(call fuzz-limits,50000) ./openai/
	$(GO) test -run '^$$' -fuzz '^FuzzStreamWriter$$' $(call fuzz-limits,80000) ./openai/
	$(GO) test -run '^$$' -fuzz '^FuzzReadData$$' $(call fuzz-limits,800000) ./agent/agentclient/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeEvent$$' $(call fuzz-limits,600000) ./agent/agentclient/
	$(GO) test -run '^$$' -fuzz '^FuzzTranslate$$' $(call fuzz-limits,400000) ./agent/claude/
	$(GO) test -run '^$$' -fuzz '^FuzzCleanPath$$' $(call fuzz-limits,800000) ./agent/workspace/

lint:
	@out=$$(gofmt -l . | grep -v '^.build/' || true); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf bin .build caddy

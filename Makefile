# The commands the README names. `make up` runs capstan with the demo stack;
# `make test` runs every test (CI runs exactly this through .ci/run).
SHELL := /bin/bash
CARGO ?= cargo
RELEASE_BIN := target/release/capstan
# The API is a Unix socket (scripts/capstan.sh): root's default, else one under .data/.
ifeq ($(shell id -u),0)
export CAPSTAN_SOCKET ?= /run/capstan/capstan.sock
else
export CAPSTAN_SOCKET ?= $(CURDIR)/.data/run/capstan.sock
endif
export CAPSTAN_SERVER ?= unix://$(CAPSTAN_SOCKET)
# Debug builds keep file and line tables (backtraces name them) but no full debug info: it
# makes the test build about a third faster and its target folder a third of the size.
# Set CARGO_PROFILE_DEV_DEBUG=true (or 0) to override.
export CARGO_PROFILE_DEV_DEBUG ?= line-tables-only

.PHONY: up down test unit e2e bench chaos images deps build lint fuzz fuzz-deps openapi

## up: install what is missing, build, start etcd and capstan, apply examples/web.yaml
up: build images
	@bash scripts/etcd.sh start
	@bash scripts/capstan.sh start
	$(RELEASE_BIN) apply -f examples/web.yaml --wait --timeout 2m
	$(RELEASE_BIN) get services

## down: delete the demo stack, stop capstan and etcd
down:
	@if curl -fsS --unix-socket $(CAPSTAN_SOCKET) http://capstan/healthz >/dev/null 2>&1; then $(RELEASE_BIN) delete web --volumes || true; fi
	@bash scripts/capstan.sh stop
	@bash scripts/etcd.sh stop

## test: format and lint checks, then every test from one debug build (scripts/run-tests.sh):
## the unit and integration tests, then the end-to-end tests against the real Docker engine
## and etcd, their binaries side by side (E2E_JOBS at a time; each test starts its own etcd
## and daemon; the healing and engine-restart tests alone, last); then the doc tests and each fuzz target
## for FUZZ_TEST_SECONDS. One `cargo build` makes the capstan binary and every test with the
## features `cargo test` unifies, so nothing is compiled twice. Soaks and measurements are
## ignored tests that `make chaos` runs. Measured on fresh clones, 2 cores shared with other
## builds (so both slow): 71 min before (clippy 11, `build -p capstan` 17, the second compile
## for `cargo test` 12, e2e one binary at a time 20, fuzz with cargo-fuzz's install 10), 26 min
## after (clippy 7, one build 6, e2e 7.5, fuzz 5).
test: deps images lint
	$(CARGO) build --workspace --bins --tests
	bash scripts/run-tests.sh
	$(CARGO) test --workspace --doc
	$(MAKE) fuzz FUZZ_SECONDS=$(FUZZ_TEST_SECONDS)

unit:
	$(CARGO) build --workspace --bins --tests
	ONLY=unit bash scripts/run-tests.sh
	$(CARGO) test --workspace --doc

e2e: deps images
	$(CARGO) build --workspace --bins --tests
	ONLY=e2e bash scripts/run-tests.sh

## bench: every benchmark (scale without Docker; convergence, heal, idle cost, proxy and auth
## against the real engine, rolling updates against Swarm, `capstan config` against
## `docker-compose config`), release build; prints tables and writes
## bench/results/latest.json. Never part of `make test`. Takes about 20 minutes.
bench: images
	@bash scripts/deps.sh bench
	$(CARGO) build --release -p capstan
	$(CARGO) bench -p capstan-controller --bench scale
	CAPSTAN_BIN=$(CURDIR)/$(RELEASE_BIN) $(CARGO) bench -p capstan-e2e
	@python3 -c 'import glob, json, os, time; \
	  r = {os.path.basename(f)[:-5]: json.load(open(f)) for f in sorted(glob.glob("bench/results/*.json")) if not f.endswith("latest.json")}; \
	  r["machine"] = {"cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d")}; \
	  json.dump(r, open("bench/results/latest.json", "w"), indent=2)' && echo "wrote bench/results/latest.json"

## chaos: the crash-consistency soak (50 SIGKILLs of the daemon during scale 0 <-> 20,
## prints a table and its seed; CAPSTAN_CHAOS_SEED replays one), failover times (leader
## kill -9, lease TTL 3s and 10s, medians of 5), the heal time of a replica killed during
## an etcd outage (median of CAPSTAN_OUTAGE_RUNS, default 3) and the time to all replicas
## back after an engine restart (median of 3: it stops dockerd, so it waits for a machine
## where no other container runs). Writes bench/results/{failover,outage_heal,engine_restart}.json.
## Never part of `make test`; about 10 minutes.
chaos: deps images
	$(CARGO) build -p capstan
	CAPSTAN_CHAOS_ITERATIONS=$${CAPSTAN_CHAOS_ITERATIONS:-50} $(CARGO) test -p capstan-e2e --test crash_consistency -- --nocapture
	$(CARGO) test -p capstan-e2e --test failover -- --ignored --nocapture
	$(CARGO) test -p capstan-e2e --test outage_heal -- --ignored --nocapture
	$(CARGO) test -p capstan-e2e --test engine_restart -- --ignored --nocapture

deps:
	@bash scripts/deps.sh

## openapi: write docs/openapi.json, the API's OpenAPI 3.1 document (what GET /openapi.json
## serves), generated from the handlers and their types; a unit test fails while it is stale
openapi:
	$(CARGO) run -q -p capstan -- openapi > docs/openapi.json

## fuzz: each cargo-fuzz target (fuzz/: the Compose parser, the apply handler's request
## decoding, the env-file reader, interpolation, the run stream's framing) for FUZZ_SECONDS, seeded with
## examples/ and e2e/conformance/, FUZZ_JOBS targets at a time (one core each: on 2 cores, the
## 5 targets of `make test` take 3 x FUZZ_TEST_SECONDS instead of 5 x, each still fuzzed for
## its full time). Needs the nightly toolchain; installs cargo-fuzz if missing. A crash is
## saved under fuzz/artifacts/ and fails the run: turn it into a regression test.
FUZZ_SECONDS ?= 60
FUZZ_TEST_SECONDS ?= 30
FUZZ_JOBS ?= 2
FUZZ_TARGETS := compose_parse apply_request env_file interpolate run_stream

fuzz-deps:
	@cargo +nightly fuzz --version >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked

fuzz: fuzz-deps
	@bash fuzz/seed.sh
	cd fuzz && cargo +nightly fuzz build
	@mkdir -p fuzz/target/logs
	@echo "fuzzing $(FUZZ_TARGETS) for $(FUZZ_SECONDS) s each, $(FUZZ_JOBS) at a time"
	@printf '%s\n' $(FUZZ_TARGETS) | xargs -P $(FUZZ_JOBS) -I{} sh -c \
	  'cd fuzz && cargo +nightly fuzz run {} corpus/{} -- -max_total_time=$(FUZZ_SECONDS) \
	     -max_len=65536 -rss_limit_mb=2048 >target/logs/{}.log 2>&1 \
	   && echo "{}: $$(grep -o "Done [0-9]* runs" target/logs/{}.log)" \
	   || { echo "{} FAILED:"; cat target/logs/{}.log; exit 1; }'

images: deps
	@bash scripts/images.sh

build: deps
	$(CARGO) build --release -p capstan

lint: deps
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

# chunkd: see README.md. `make run` and `make test` install missing Debian packages first.
CC       ?= cc
VERSION  := 0.1.0
PKGS     := hiredis jansson libcurl libmicrohttpd openssl
# Recursively expanded, so pkg-config runs after `deps` has installed the packages.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
WARN     := -std=c11 -Wall -Wextra -Werror -Wformat=2 -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
            -Wno-format-truncation
CFLAGS   ?= -O2 -g
# src/ holds the data path; src/lib/ the infrastructure, src/handler/ the handlers, src/cmd/ the subcommands.
# Sources are named by file name alone below: vpath and $(call src,...) find them in these directories.
SRC_DIRS := src src/lib src/handler src/cmd
SRC_INC  := $(addprefix -I,$(SRC_DIRS))
SRC_HDRS  = $(wildcard $(addsuffix /*.h,$(SRC_DIRS)))
src = $(foreach f,$(1),$(firstword $(wildcard $(addsuffix /$(f),$(SRC_DIRS))) src/$(f)))
vpath %.c $(SRC_DIRS)
ALL_CFLAGS = $(WARN) $(CFLAGS) -D_GNU_SOURCE -DCHUNKD_VERSION='"$(VERSION)"' $(SRC_INC) -I$(BUILD) $(PKG_CFLAGS) -MMD -MP
LDLIBS_ALL = $(PKG_LIBS) -lpthread -lm
BUILD    ?= build

DEB_PACKAGES := gcc make pkg-config libhiredis-dev libjansson-dev libcurl4-openssl-dev libcmocka-dev libssl-dev \
                redis-server redis-tools python3 libmicrohttpd-dev prometheus \
                valgrind gnuplot-nox nginx libnginx-mod-http-echo openssl tmux

# The data path (src/): enqueue -> fetch -> scheduler on loop -> handler -> commit -> collect.
SRCS_PIPELINE := main.c settings.c enqueue.c chunk.c fetch.c backlog.c window.c scheduler.c loop.c work.c result.c commit.c \
                 commit_round.c collect.c tally.c lastonly.c sink.c worker.c lease.c ratelimit.c ratelimit_math.c metrics.c httpd.c
SRCS_LIB      := log.c sig.c xalloc.c dynbuf.c linereader.c idset.c rconn.c rcluster.c rsentinel.c rtls.c redis_url.c proctab.c children.c progress.c
SRCS_HANDLER  := handler.c handler_sleep.c handler_echo.c handler_http.c http_request.c handler_exec.c exec_proto.c \
                 keeper.c breaker.c
SRCS_CMD      := cmd.c cmd_queue.c cmd_enqueue.c cmd_worker.c cmd_collect.c cmd_status.c cmd_run.c cmd_requeue.c cmd_recover.c cmd_dead.c \
                 localredis.c
SRCS := $(SRCS_PIPELINE) $(SRCS_LIB) $(SRCS_HANDLER) $(SRCS_CMD)
OBJS := $(SRCS:%.c=$(BUILD)/%.o) $(BUILD)/scripts.o
LUA  := $(sort $(wildcard src/scripts/*.lua))

# Unit tests: each links only the modules it tests.
UNIT_TESTS := settings redis_url chunk result dynbuf linereader batch metrics progress work exec_proto ratelimit \
              http_request cmd commit_script commit_round window breaker scheduler log tally lastonly rcluster \
              backlog
UNIT_settings   := settings.c redis_url.c log.c xalloc.c ratelimit_math.c
UNIT_redis_url  := redis_url.c
UNIT_rcluster   := rcluster.c redis_url.c xalloc.c
UNIT_chunk      := chunk.c xalloc.c
UNIT_result     := result.c dynbuf.c xalloc.c
UNIT_dynbuf     := dynbuf.c xalloc.c
UNIT_linereader := linereader.c xalloc.c
UNIT_batch      :=
UNIT_metrics    := metrics.c dynbuf.c xalloc.c
UNIT_progress   := progress.c
UNIT_work       := work.c chunk.c result.c dynbuf.c xalloc.c
UNIT_exec_proto := exec_proto.c dynbuf.c xalloc.c
UNIT_ratelimit  := ratelimit_math.c
UNIT_http_request := http_request.c dynbuf.c xalloc.c
UNIT_cmd        := cmd.c sig.c rconn.c rcluster.c rsentinel.c rtls.c log.c redis_url.c xalloc.c tally.c
UNIT_tally      := tally.c xalloc.c
UNIT_lastonly   := lastonly.c xalloc.c
UNIT_commit_script :=
UNIT_BUILT_commit_script := scripts.c # UNIT_BUILT_<test>: generated sources in $(BUILD) it links too
UNIT_commit_round := commit_round.c
UNIT_backlog    := backlog.c rconn.c rcluster.c rsentinel.c rtls.c log.c redis_url.c xalloc.c sig.c
UNIT_BUILT_backlog := scripts.c
UNIT_window     := window.c metrics.c dynbuf.c xalloc.c
UNIT_breaker    := breaker.c xalloc.c
# The scheduler on real loop threads; ratelimit.c (Redis) and the handlers are faked in the test itself.
UNIT_scheduler  := scheduler.c loop.c work.c chunk.c result.c metrics.c log.c dynbuf.c xalloc.c
UNIT_LDFLAGS_scheduler := -Wl,--wrap=loop_wake # UNIT_LDFLAGS_<test>: its own link flags
UNIT_log        := log.c

.PHONY: all deps bench-deps fuzz-deps check-rules run test unit unit-valgrind integration check-asan bench clean lint \
        lint-deps \
        version install uninstall image image-deps check-image check-deploy deploy-deps deploy-sync fuzz fuzz-ci

all: $(BUILD)/chunkd

# `make install PREFIX=/usr` (default /usr/local) puts chunkd in $(DESTDIR)$(PREFIX)/bin; DESTDIR stages it for a
# package. `make uninstall` takes it out again.
PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
install: $(BUILD)/chunkd
	install -d "$(DESTDIR)$(BINDIR)"
	install -m 0755 $(BUILD)/chunkd "$(DESTDIR)$(BINDIR)/chunkd"

uninstall:
	rm -f "$(DESTDIR)$(BINDIR)/chunkd"

version:
	@echo $(VERSION)

# Installs the missing Debian packages of $(1): as root, or through sudo without a password; otherwise prints the
# apt-get line to run and fails.
define install_missing
	@missing=$$(for p in $(1); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  missing=$$(echo $$missing); \
	  if [ "$$(id -u)" = 0 ]; then sudo=; \
	  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo=sudo; \
	  else echo "chunkd needs Debian packages that are missing. Run:"; \
	       echo "  sudo apt-get update && sudo apt-get install -y $$missing"; exit 1; fi; \
	  echo "installing: $$missing"; \
	  $$sudo apt-get update -q >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q --no-install-recommends $$missing >/dev/null || exit 1; \
	fi
endef

deps:
	$(call install_missing,$(DEB_PACKAGES))

# The HTTP benchmark's load generator (its fixed-delay server, nginx with the echo module, is in DEB_PACKAGES:
# the TLS integration tests use it too).
BENCH_PACKAGES := wrk
bench-deps: deps
	$(call install_missing,$(BENCH_PACKAGES))

$(BUILD)/chunkd: $(OBJS)
	$(CC) $(ALL_CFLAGS) -o $@ $(OBJS) $(LDFLAGS) $(LDLIBS_ALL)

# The http benchmark's floor (tests/bench/README.md): libcurl alone, driven as the http handler drives it.
CURL_LIBS = $(shell pkg-config --libs libcurl 2>/dev/null)
$(BUILD)/curlfloor: tests/bench/curlfloor.c | $(BUILD)
	$(CC) $(ALL_CFLAGS) -pthread -o $@ $< $(LDFLAGS) $(CURL_LIBS)
# The Redis-latency benchmark's proxy (tests/bench/README.md): delays each direction by half a round trip.
$(BUILD)/delayproxy: tests/bench/delayproxy.c | $(BUILD)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(LDFLAGS)

$(BUILD)/%.o: %.c | $(BUILD)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

# The Lua scripts, embedded as C strings (one per file, named script_<file>). Comment lines are sent as empty lines
# and indentation is dropped: EVAL sends the whole text with every call (commit.lua with every chunk), and Redis
# hashes it each time; line numbers in Lua errors stay those of the .lua file. (No script has a [[long string]].)
# The Makefile is a prerequisite, so that a change of this rule regenerates the file.
$(BUILD)/scripts.c: $(LUA) Makefile | $(BUILD)
	@awk 'FNR == 1 { if (NR > 1) print ";"; n = FILENAME; sub(/.*\//, "", n); sub(/\.lua$$/, "", n); \
	      printf "const char script_%s[] =\n", n } \
	      { sub(/^[ \t]+/, ""); if ($$0 ~ /^--/) $$0 = "" } \
	      { gsub(/\\/, "&&"); gsub(/"/, "\\\""); printf "    \"%s\\n\"\n", $$0 } \
	      END { print ";" }' $(LUA) > $@.tmp && \
	  { echo '/* Generated from src/scripts/ (one string per .lua file) by the Makefile. */'; echo '#include "scripts.h"'; cat $@.tmp; } > $@ && \
	  rm -f $@.tmp

$(BUILD)/scripts.o: $(BUILD)/scripts.c
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD):
	@mkdir -p $(BUILD)

# Every header is a prerequisite: with several sources in one command, -MMD records only the last one's headers.
define unit_rule
$(BUILD)/test_$(1): tests/unit/test_$(1).c $(call src,$(UNIT_$(1))) $(addprefix $(BUILD)/,$(UNIT_BUILT_$(1))) \
                    $(SRC_HDRS) | $(BUILD)
	$$(CC) $$(ALL_CFLAGS) -o $$@ $$(filter %.c,$$^) $$(LDFLAGS) $$(UNIT_LDFLAGS_$(1)) $$(LDLIBS_ALL) -lcmocka
endef
$(foreach t,$(UNIT_TESTS),$(eval $(call unit_rule,$(t))))

# Every part of `make test` and `make check-asan` writes its counts (passed failed skipped) to $(COUNTS)/<part>;
# tests/counts.sh sums them into the run's last line.
COUNTS := $(BUILD)/test-counts

# cmocka's TAP output (one line per test case, on stdout) is what gets counted.
unit: $(UNIT_TESTS:%=$(BUILD)/test_%)
	@mkdir -p $(COUNTS); rm -f $(COUNTS)/unit; failed=0; for t in $^; do echo "== $$t"; \
	  CMOCKA_MESSAGE_OUTPUT=TAP $(UNIT_RUNNER) $$t > $$t.tap; rc=$$?; cat $$t.tap; [ $$rc -eq 0 ] || failed=1; \
	  tests/counts.sh add $(COUNTS)/unit $$(tests/counts.sh tap $$t.tap $$rc); \
	done; read -r p f s < $(COUNTS)/unit; echo "unit: $$p passed, $$f failed, $$s skipped"; exit $$failed

# The unit tests again under valgrind: no leak, no invalid access.
# Counted one per binary.
unit-valgrind: $(UNIT_TESTS:%=$(BUILD)/test_%)
	@mkdir -p $(COUNTS); failed=0; passed=0; for t in $^; do \
	  valgrind -q --leak-check=full --errors-for-leak-kinds=all --error-exitcode=1 $$t >/dev/null 2>$$t.valgrind \
	    && { echo "valgrind clean: $$t"; passed=$$((passed + 1)); } \
	    || { echo "valgrind FAILED: $$t"; cat $$t.valgrind; failed=$$((failed + 1)); }; \
	done; echo "$$passed $$failed 0" > $(COUNTS)/unit-valgrind; \
	echo "unit-valgrind: $$passed passed, $$failed failed, 0 skipped"; [ $$failed -eq 0 ]

integration: $(BUILD)/chunkd $(BUILD)/mockapi
	@mkdir -p $(COUNTS)
	python3 tests/integration/run.py --bin $(BUILD)/chunkd --mockapi $(BUILD)/mockapi --counts $(COUNTS)/integration

# The Prometheus alert rules: syntax, and their unit tests (deploy/prometheus/rules_test.yaml).
# Counted as two checks.
check-rules:
	@mkdir -p $(COUNTS); p=0; f=0; \
	for cmd in "check rules deploy/prometheus/rules.yaml" "test rules deploy/prometheus/rules_test.yaml"; do \
	  echo "promtool $$cmd"; if promtool $$cmd; then p=$$((p + 1)); else f=$$((f + 1)); fi; \
	done; echo "$$p $$f 0" > $(COUNTS)/check-rules; echo "check-rules: $$p passed, $$f failed, 0 skipped"; \
	[ $$f -eq 0 ]

# The two commands of the README: set up, then build and run or test.
run: deps
	@$(MAKE) --no-print-directory $(BUILD)/chunkd
	@awk 'BEGIN { for (i = 1; i <= 10000; i++) printf "{\"id\":%d,\"sleep_ms\":100}\n", i }' > $(BUILD)/items.jsonl
	@echo "chunkd run: 10,000 items x 100 ms, concurrency 10000, private redis-server"
	$(BUILD)/chunkd run --concurrency 10000 --out $(BUILD)/results.jsonl $(BUILD)/items.jsonl
	@echo "results: $$(wc -l < $(BUILD)/results.jsonl) lines in $(BUILD)/results.jsonl"

# Every part runs even when an earlier one failed; the last line sums them all (tests/counts.sh).
TEST_PARTS := unit unit-valgrind integration check-rules
test: deps
	@rm -rf $(COUNTS); for part in $(TEST_PARTS); do $(MAKE) --no-print-directory $$part; done; \
	tests/counts.sh sum "make test" $(COUNTS) $(TEST_PARTS)

# CHUNKD_IT_SANITIZER=1 tells the integration tests to use smaller loads (see tests/integration/test_faults.py).
check-asan: deps
	@rm -rf build-asan/test-counts; for part in unit integration; do \
	  CHUNKD_IT_SANITIZER=1 $(MAKE) --no-print-directory BUILD=build-asan CC=gcc \
	  CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	  LDFLAGS="-fsanitize=address,undefined" $$part; done; \
	tests/counts.sh sum "make check-asan" build-asan/test-counts unit integration

# Offline checks of deploy/ and docker/ (deploy/README.md: checks): kustomize renders, schema and unknown-field
# validation (tests/deploy, npm packages pinned in its package-lock.json), promtool, shellcheck, yamllint. kubectl
# (for `kubectl kustomize`) is not a Debian package: it comes with the machine (google-cloud-cli's kubectl).
DEPLOY_PACKAGES := shellcheck yamllint prometheus nodejs $(if $(shell command -v npm),,npm)
SHELL_SCRIPTS = .ci/run $(shell find docker tests -name '*.sh' -not -path '*/node_modules/*')
deploy-deps:
	$(call install_missing,$(DEPLOY_PACKAGES))
	@command -v kubectl >/dev/null || { echo "check-deploy needs kubectl (kubectl kustomize) on PATH"; exit 1; }

check-deploy: deploy-deps
	cd tests/deploy && npm ci --no-audit --no-fund --loglevel=error
	node tests/deploy/check.mjs
	promtool check rules deploy/prometheus/rules.yaml
	promtool check config --syntax-only docker/prometheus.yml
	shellcheck -x $(SHELL_SCRIPTS)
	yamllint -s -c .yamllint.yaml .
	@echo "check-deploy: renders, schemas, promtool, shellcheck and yamllint all clean"

# Regenerates deploy/prometheus/prometheusrule.yaml from deploy/prometheus/rules.yaml.
deploy-sync:
	cd tests/deploy && npm ci --no-audit --no-fund --loglevel=error
	node tests/deploy/check.mjs --write-prometheusrule

# The container image (Dockerfile; docker/README.md): podman, buildah and debootstrap make it without a registry.
# python3-yaml: check-image reads docker/compose.yaml and turns the batch Jobs into Pods for kube play.
IMAGE_PACKAGES := podman buildah runc catatonit debootstrap uidmap netavark aardvark-dns slirp4netns fuse-overlayfs \
                  python3-yaml
image-deps:
	$(call install_missing,$(IMAGE_PACKAGES))

image: image-deps
	docker/image.sh

# The image against a redis-server of its own (pipeline, non-root PID 1, SIGTERM/SIGINT drain), `podman kube play`
# of the dev overlay and of the batch Jobs, and docker/compose.yaml's stack with Prometheus (tests/image/run.py).
check-image: deps image
	tests/image/check-image.sh

bench: bench-deps
	@$(MAKE) --no-print-directory $(BUILD)/chunkd $(BUILD)/mockapi $(BUILD)/curlfloor $(BUILD)/delayproxy
	tests/bench/bench.sh $(BUILD)/chunkd

# Fuzzing: libFuzzer targets in tests/fuzz/ (see tests/fuzz/README.md), built with clang under ASan+UBSan into
# $(FUZZ_BUILD). Each target starts from its committed seeds in tests/fuzz/corpus/<target>/ and writes what it
# finds to $(FUZZ_BUILD)/corpus/<target>/, so a run never changes the committed corpus.
FUZZ_PACKAGES := clang libclang-rt-dev
FUZZ_CC      ?= clang
FUZZ_BUILD   := build/fuzz
FUZZ_SECONDS ?= 60
FUZZ_CI_SECONDS ?= 20
FUZZ_TARGETS := chunk redis_url settings lines exec_proto http_request
FUZZ_chunk     := chunk.c result.c dynbuf.c xalloc.c
FUZZ_redis_url := redis_url.c
FUZZ_settings  := settings.c redis_url.c log.c xalloc.c ratelimit_math.c
FUZZ_lines     := linereader.c chunk.c xalloc.c
FUZZ_exec_proto := exec_proto.c result.c dynbuf.c xalloc.c
FUZZ_http_request := http_request.c dynbuf.c xalloc.c
FUZZ_LIBS_http_request := $(shell pkg-config --libs libcurl 2>/dev/null || echo -lcurl)
FUZZ_CFLAGS   = $(filter-out -Wno-format-truncation,$(WARN)) -O1 -g -fno-omit-frame-pointer \
                -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -D_GNU_SOURCE $(SRC_INC) \
                $(shell pkg-config --cflags jansson 2>/dev/null)
FUZZ_FLAGS   := -timeout=10 -rss_limit_mb=2048 -detect_leaks=1 -print_final_stats=1

fuzz-deps:
	$(call install_missing,$(FUZZ_PACKAGES) libjansson-dev libcurl4-openssl-dev pkg-config)

define fuzz_rule
$(FUZZ_BUILD)/fuzz_$(1): tests/fuzz/fuzz_$(1).c tests/fuzz/fuzz.h $(call src,$(FUZZ_$(1))) $(SRC_HDRS)
	@mkdir -p $(FUZZ_BUILD)
	$$(FUZZ_CC) $$(FUZZ_CFLAGS) -o $$@ $$(filter %.c,$$^) $$(shell pkg-config --libs jansson 2>/dev/null) $$(FUZZ_LIBS_$(1)) -lpthread -lm
endef
$(foreach t,$(FUZZ_TARGETS),$(eval $(call fuzz_rule,$(t))))

# Runs each target for $(1) seconds: first over its seeds (any crash there fails at once), then fuzzing on.
define fuzz_run
	@failed=0; for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_BUILD)/corpus/$$t $(FUZZ_BUILD)/crashes; \
	  dict=; [ -f tests/fuzz/$$t.dict ] && dict=-dict=tests/fuzz/$$t.dict; \
	  echo "== fuzz_$$t: $(1) s"; \
	  $(FUZZ_BUILD)/fuzz_$$t $(FUZZ_FLAGS) $$dict -max_total_time=$(1) \
	    -artifact_prefix=$(FUZZ_BUILD)/crashes/$$t- $(FUZZ_BUILD)/corpus/$$t tests/fuzz/corpus/$$t \
	    > $(FUZZ_BUILD)/fuzz_$$t.log 2>&1 \
	    && { echo "fuzz_$$t: no crash ($$(grep -o 'stat::number_of_executed_units: [0-9]*' $(FUZZ_BUILD)/fuzz_$$t.log | \
	         grep -o '[0-9]*$$') runs)"; } \
	    || { echo "fuzz_$$t FAILED:"; tail -n 60 $(FUZZ_BUILD)/fuzz_$$t.log; failed=1; }; \
	done; exit $$failed
endef

fuzz: fuzz-deps
	@$(MAKE) --no-print-directory $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz_%)
	$(call fuzz_run,$(FUZZ_SECONDS))

# The short pass of CI.
fuzz-ci: fuzz-deps
	@$(MAKE) --no-print-directory $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz_%)
	$(call fuzz_run,$(FUZZ_CI_SECONDS))

# The linters are Debian packages too (installed like the other targets' tools), and a linter that is missing or
# fails to run fails the target: its output is not only grepped for findings.
LINT_PACKAGES := clang-tidy cppcheck libhiredis-dev libjansson-dev libcurl4-openssl-dev libmicrohttpd-dev libssl-dev pkg-config
lint-deps:
	$(call install_missing,$(LINT_PACKAGES))

lint: lint-deps
	@for tool in clang-tidy cppcheck; do \
	  command -v $$tool >/dev/null || { echo "lint: $$tool not found on PATH"; exit 1; }; done
	@out=$$(clang-tidy --quiet $(call src,$(SRCS)) -- $(filter-out -Wno-format-truncation,$(WARN)) \
	  -D_GNU_SOURCE $(SRC_INC) -I$(BUILD) $(PKG_CFLAGS) 2>&1); rc=$$?; \
	if [ $$rc -ne 0 ] || printf '%s\n' "$$out" | grep -qE 'warning:|error:'; then \
	  printf '%s\n' "$$out"; echo "lint: clang-tidy failed (exit $$rc)"; exit 1; fi; \
	echo "lint: clang-tidy clean ($(words $(SRCS)) files)"
	cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability --inline-suppr \
	  -D_GNU_SOURCE $(SRC_INC) --suppress=missingIncludeSystem --suppress=ctuuninitvar src
	@echo "lint: cppcheck clean"

clean:
	rm -rf build build-asan

include tests/mockapi/mockapi.mk

-include $(wildcard $(BUILD)/*.d)

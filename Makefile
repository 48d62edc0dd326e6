# meshd — build, test, bench, demo, fuzz.
#   make                 build/meshd, build/meshctl
#   make test            every test; the last line is "N passed, N failed"
#   make test SANITIZE=address,undefined
#   make fuzz            libFuzzer targets (clang) in build/fuzz/
#   make bench           benchmarks (bench/RESULTS.md has recorded figures)
#   make demo            the local demo
#   make deps            Debian packages (idempotent)

CC       ?= cc
SANITIZE ?=
BUILD    := build
ifneq ($(SANITIZE),)
BUILD    := build/san
endif

PKGS     := yaml-0.1 json-c libpcre2-8 libcurl openssl libnghttp2 libprotobuf-c libmicrohttpd
# Debian packages: to build and test, and (bench) the peers measured against.
DEPS_DEB := build-essential pkg-config clang libyaml-dev libjson-c-dev libpcre2-dev libcmocka-dev \
            libssl-dev libcurl4-openssl-dev libnghttp2-dev libprotobuf-c-dev protobuf-c-compiler \
            libmicrohttpd-dev curl openssl iptables iproute2 python3 nghttp2-client
DEPS_BENCH := wrk nginx-light haproxy h2o nghttp2-client

WARN     := -Wall -Wextra -Werror -Wformat=2 -Wshadow -Wstrict-prototypes -Wno-missing-field-initializers
HARDEN   := -fstack-protector-strong -D_FORTIFY_SOURCE=2
OPT      := -O2
ifneq ($(SANITIZE),)
OPT      := -O1 -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
HARDEN   := -fstack-protector-strong
endif
CFLAGS   += -std=c11 -D_GNU_SOURCE $(OPT) -g $(WARN) $(HARDEN) $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDFLAGS  += $(if $(SANITIZE),-fsanitize=$(SANITIZE))
LDLIBS   += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread -lm

# Every part's sources go into one library, except the binaries' main.c files.
PARTS    := common config controlplane ca webhook xds proxy cli
MAINS    := controlplane/main.c cli/main.c proxy/main.c
LIB_SRC  := $(filter-out $(MAINS),$(foreach p,$(PARTS),$(wildcard $(p)/*.c)))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
LIB      := $(BUILD)/libmesh.a

# protobuf-c code generated from xds/proto and ca/proto (never edited by hand).
GEN      := $(BUILD)/gen
XDS_PROTO := $(shell find xds/proto -name '*.proto' 2>/dev/null | sort)
CA_PROTO  := $(shell find ca/proto -name '*.proto' 2>/dev/null | sort)
GEN_C    := $(XDS_PROTO:xds/proto/%.proto=$(GEN)/%.pb-c.c) $(CA_PROTO:ca/proto/%.proto=$(GEN)/%.pb-c.c)
GEN_OBJ  := $(GEN_C:%.c=%.o)
CFLAGS   += -I$(GEN)

TEST_SRC := $(wildcard test/*/test_*.c)
TEST_BIN := $(TEST_SRC:test/%.c=$(BUILD)/test/%)

BINS := $(BUILD)/meshd $(BUILD)/meshctl $(if $(wildcard proxy/main.c),$(BUILD)/meshproxy) $(BUILD)/backend

.SECONDARY:
.PHONY: all test test-run deps deps-bench deps-envtest fuzz bench bench-run demo crds clean format
all: $(BINS)

$(GEN)/.stamp: $(XDS_PROTO) $(CA_PROTO)
	@mkdir -p $(GEN)
	$(if $^,protoc-c --c_out=$(GEN) $(if $(XDS_PROTO),-Ixds/proto) $(if $(CA_PROTO),-Ica/proto) $^)
	@touch $@
$(GEN_C): $(GEN)/.stamp
$(GEN)/%.pb-c.o: $(GEN)/%.pb-c.c
	$(CC) -std=c11 -D_GNU_SOURCE $(OPT) -g -I$(GEN) -c $< -o $@

$(BUILD)/obj/%.o: %.c | $(GEN)/.stamp
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(LIB): $(LIB_OBJ) $(GEN_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/meshd: $(BUILD)/obj/controlplane/main.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/meshctl: $(BUILD)/obj/cli/main.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# A tiny HTTP backend for the demo and the benchmarks (not part of meshd).
$(BUILD)/backend: examples/backend/backend.c
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $<

$(BUILD)/meshproxy: $(BUILD)/obj/proxy/main.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

TEST_HELPERS := $(wildcard test/*.c)
$(BUILD)/test/%: $(BUILD)/obj/test/%.o $(TEST_HELPERS:%.c=$(BUILD)/obj/%.o) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

test: deps deps-envtest
	@$(MAKE) --no-print-directory test-run

test-run: $(BINS) $(TEST_BIN)
	@BUILD=$(BUILD) SANITIZE=$(SANITIZE) sh test/run.sh

# libFuzzer targets: clang, ASan+UBSan, seed corpora from ../shared/testdata.
FUZZ_SRC := $(wildcard test/fuzz/fuzz_*.c)
FUZZ_BIN := $(FUZZ_SRC:test/fuzz/%.c=build/fuzz/%)
FUZZ_FLAGS := -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
fuzz: $(FUZZ_BIN)
build/fuzz/%: test/fuzz/%.c $(LIB_SRC) build/gen/.stamp
	@mkdir -p $(dir $@)
	clang $(FUZZ_FLAGS) -Ibuild/gen -o $@ $< $(LIB_SRC) $$(find build/gen -name '*.pb-c.c') $(LDLIBS)

BENCH_SRC := $(wildcard bench/*.c)
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)
$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

bench: deps-bench
	@$(MAKE) --no-print-directory bench-run

bench-run: $(BINS) $(BENCH_BIN)
	@BUILD=$(BUILD) sh bench/run.sh

demo: deps $(BINS)
	@sh examples/demo/run.sh

crds: $(BUILD)/meshctl
	$(BUILD)/meshctl crds --out crds

deps-bench:
	@$(MAKE) --no-print-directory deps DEPS_DEB="$(DEPS_DEB) $(DEPS_BENCH)"

# The integration tests' Kubernetes API server (kube-apiserver, etcd and
# kube-controller-manager built from Debian's sources, cached) lives in ../shared.
ENVTEST := ../shared/tools/envtest
# Test clients nobody here wrote, from npm (lockfiles committed).
NPM_DIRS := $(patsubst %/package-lock.json,%,$(wildcard test/*/*/package-lock.json e2e/*/package-lock.json))
deps:
	@missing=""; for p in $(DEPS_DEB); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	command -v kubectl >/dev/null 2>&1 || missing="$$missing kubernetes-client"; \
	command -v node >/dev/null 2>&1 || missing="$$missing nodejs"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	else echo "deps: all installed"; fi
	@for d in $(NPM_DIRS); do [ -d $$d/node_modules ] || npm ci --prefix $$d --no-audit --no-fund; done

# kube-apiserver, etcd and kube-controller-manager for the integration tests
# (built once from Debian's sources, then cached).
deps-envtest: deps
	@if [ -x $(ENVTEST)/build.sh ]; then ENVTEST_CONTROLLERS=1 $(ENVTEST)/build.sh; \
	else echo "deps: $(ENVTEST) not found (integration tests need ../shared beside the checkout)"; exit 1; fi

format:
	clang-format -i $(wildcard */*.c */*.h test/*/*.c)

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

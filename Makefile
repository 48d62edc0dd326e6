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

PKGS     := yaml-0.1 json-c libpcre2-8
# Debian packages: to build and test, and (bench) the peers measured against.
DEPS_DEB := build-essential pkg-config clang libyaml-dev libjson-c-dev libpcre2-dev libcmocka-dev \
            libssl-dev libcurl4-openssl-dev libnghttp2-dev libprotobuf-c-dev protobuf-c-compiler \
            libmicrohttpd-dev curl
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

LIB_SRC  := $(wildcard common/*.c) $(wildcard config/*.c)
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
LIB      := $(BUILD)/libmesh.a

MESHD_SRC  := $(wildcard controlplane/*.c)
MESHCTL_SRC := $(wildcard cli/*.c)

TEST_SRC := $(wildcard test/*/test_*.c)
TEST_BIN := $(TEST_SRC:test/%.c=$(BUILD)/test/%)

BINS := $(BUILD)/meshd $(BUILD)/meshctl

.SECONDARY:
.PHONY: all test test-run deps deps-bench fuzz bench bench-run demo crds clean format
all: $(BINS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/meshd: $(MESHD_SRC:%.c=$(BUILD)/obj/%.o) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/meshctl: $(MESHCTL_SRC:%.c=$(BUILD)/obj/%.o) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/test/%: $(BUILD)/obj/test/%.o $(BUILD)/obj/test/testutil.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

test: deps
	@$(MAKE) --no-print-directory test-run

test-run: $(BINS) $(TEST_BIN)
	@BUILD=$(BUILD) SANITIZE=$(SANITIZE) sh test/run.sh

# libFuzzer targets: clang, ASan+UBSan, seed corpora from ../shared/testdata.
FUZZ_SRC := $(wildcard test/fuzz/fuzz_*.c)
FUZZ_BIN := $(FUZZ_SRC:test/fuzz/%.c=build/fuzz/%)
FUZZ_FLAGS := -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
fuzz: $(FUZZ_BIN)
build/fuzz/%: test/fuzz/%.c $(LIB_SRC)
	@mkdir -p $(dir $@)
	clang $(FUZZ_FLAGS) -o $@ $< $(LIB_SRC) $(LDLIBS)

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

deps:
	@missing=""; for p in $(DEPS_DEB); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	else echo "deps: all installed"; fi

format:
	clang-format -i $(wildcard */*.c */*.h test/*/*.c)

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

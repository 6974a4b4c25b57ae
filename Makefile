# fmtrain - quiet by default; `make V=1` prints full commands.
#   make            build ./fmtrain (for this machine's CPU; ARCH= below for others)
#   make ARCH=x86-64-v3   build for another CPU: native (default), generic (any x86-64),
#                   or any -march name (x86-64-v2, x86-64-v3, x86-64-v4, icelake-server, znver3, ...);
#                   ARCH=-m... passes flags as they are. Use a fresh BUILD=build-x (or make clean)
#                   after changing it: objects are not rebuilt on a flag change.
#   make test       install missing packages (all groups of scripts/setup.sh), build, run the whole suite
#   make test SAN=1 the same under AddressSanitizer + UndefinedBehaviorSanitizer
#   make test-cluster  slurm/train.sh on a 2-node Slurm cluster of network namespaces (root)
#   make run        install missing build/run packages (no test-only ones), build, run configs/ldm.yaml into runs/ldm
#   make bench      benchmarks against PyTorch (not part of the tests)
#   make install PREFIX=/usr/local

CC      := mpicc
PREFIX  ?= /usr/local
ARCH    ?= native
OPT     ?= -O2
# ARCH: "generic" = baseline x86-64 tuned for no CPU in particular; "-..." = flags as given; else -march=ARCH
ARCH_FLAGS := $(if $(filter generic,$(ARCH)),-march=x86-64 -mtune=generic,$(if $(filter -%,$(ARCH)),$(ARCH),-march=$(ARCH)))
CFLAGS  := -std=c11 $(OPT) $(ARCH_FLAGS) -fno-math-errno -fopenmp -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L \
           -Iinclude -MMD -MP $(EXTRA_CFLAGS)
LDLIBS  := -ldnnl -lyaml -lpng -lz -lcjson -llapacke -lm

ifeq ($(SAN),1)
BUILD   ?= build-san
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined -g
LDFLAGS += -fsanitize=address,undefined
BIN     := $(BUILD)/fmtrain
else
BUILD   ?= build
# a developer's own build directory (BUILD=build-x) gets its own binary
BIN     := $(if $(filter build,$(BUILD)),fmtrain,$(BUILD)/fmtrain)
endif

ifneq ($(V),1)
Q := @
endif

LIB_SRC  := $(filter-out src/cli/fmtrain.c $(LIB_EXCLUDE),$(wildcard src/*/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
HARN_SRC := $(wildcard tests/harness/*.c)
HARN_OBJ := $(HARN_SRC:%.c=$(BUILD)/%.o)
TEST_SRC := $(wildcard tests/*/test_*.c)
TEST_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
PAR_SRC  := $(wildcard tests/*/parity_*.c)
PAR_BIN  := $(patsubst tests/%.c,$(BUILD)/tests/%,$(PAR_SRC))
BENCH_SRC := $(wildcard tests/bench/bench_*.c)
BENCH_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(BENCH_SRC))

# the builds that test, run and bench start use every core (make JOBS=1 ... for one)
JOBS ?= $(shell nproc 2>/dev/null || echo 1)

.PHONY: all deps deps-run test tests test-scale test-cluster scaling run bench install clean
all: $(BIN)

$(BIN): $(BUILD)/src/cli/fmtrain.o $(BUILD)/libfm.a
	@echo "  LD      $@"
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/libfm.a: $(LIB_OBJ)
	@echo "  AR      $@"
	$(Q)rm -f $@ && ar rcs $@ $^

# The git revision and build flags `fmtrain --version` reports: rewritten only
# when they change, so a new commit recompiles version.c alone.
BUILDINFO := $(BUILD)/gen/fm_buildinfo.h
GIT_REV    = $(shell git describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)
.PHONY: FORCE
$(BUILDINFO): FORCE
	@mkdir -p $(@D)
	$(Q)printf '#define FM_GIT_REV "%s"\n#define FM_BUILD_FLAGS "%s"\n' '$(GIT_REV)' '$(strip $(OPT) $(ARCH_FLAGS))' >$@.tmp.new; \
	if cmp -s $@.tmp.new $@; then rm -f $@.tmp.new; else mv $@.tmp.new $@; fi
$(BUILD)/src/cli/version.o: $(BUILDINFO)
$(BUILD)/src/cli/version.o: CFLAGS += -I$(BUILD)/gen

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(CFLAGS) -Itests/harness -c -o $@ $<

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(HARN_OBJ) $(BUILD)/libfm.a
	@echo "  LD      $@"
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# every package (tests, benchmarks, fuzzing); deps-run: what building and running need
deps:
	$(Q)bash scripts/setup.sh all
deps-run:
	$(Q)bash scripts/setup.sh run

tests: $(BIN) $(TEST_BIN) $(PAR_BIN) $(BENCH_BIN)

# The suite: every C unit test, then every Python parity test; one line per
# test and a final "N passed, N failed, N skipped" line.
test: deps
	$(Q)$(MAKE) --no-print-directory -j$(JOBS) tests
	$(Q)BUILD=$(BUILD) FMTRAIN=$(abspath $(BIN)) bash tests/run.sh

# fmtrain at 64 ranks on this machine (oversubscribed, one thread a rank):
# completes, matches 1 rank, and the job's peak memory stays under 12 GB.
test-scale: deps
	$(Q)$(MAKE) --no-print-directory -j$(JOBS) all
	$(Q)FMTRAIN=$(abspath $(BIN)) bash tests/scale/run_scale.sh

# The simulated scaling study (SimGrid SMPI + the alpha-beta model, jobs/simulate/study.py):
# rewrites docs/scaling-sim.csv, docs/scaling-sim.png and the simulated-study section of
# docs/scaling.md from the schedules in jobs/simulate/schedules, with the calibration table of
# docs/scaling-calibration.md (sudo jobs/simulate/calibrate.sh; CALIB=FILE another); MEASURED="CSV ..."
# (jobs/report.py CSVs of repeated measured points; default: docs/measured/*.csv, one per repeat of
# `STRONG_GRID="1x1 2x1 1x2" WEAK_GRID="1x1 2x1 1x2" jobs/run_study.sh --local OUT`) draws those too.
MEASURED ?= $(wildcard docs/measured/*.csv)
scaling: deps
	$(Q)$(MAKE) --no-print-directory -C jobs/simulate
	$(Q)/usr/bin/python3 jobs/simulate/study.py $(if $(CALIB),--calibration $(CALIB)) $(if $(MEASURED),--measured $(MEASURED))

# slurm/train.sh across two nodes of a Slurm cluster in network namespaces on
# this machine (tests/cluster/cluster.sh; root): hostnames, veth traffic,
# losses, one data copy per node, a node lost and the job resumed.
test-cluster: deps
	$(Q)$(MAKE) --no-print-directory -j$(JOBS) all
	$(Q)FMTRAIN=$(abspath $(BIN)) bash tests/cluster/run_cluster.sh

run: deps-run
	$(Q)$(MAKE) --no-print-directory -j$(JOBS) all
	./fmtrain configs/ldm.yaml --out runs/ldm

bench: deps
	$(Q)$(MAKE) --no-print-directory -j$(JOBS) tests
	$(Q)BUILD=$(BUILD) bash tests/bench/run.sh

install: $(BIN)
	install -d $(PREFIX)/bin
	install -m 755 $(BIN) $(PREFIX)/bin/fmtrain
	install -d $(PREFIX)/share/fmtrain
	install -m 755 scripts/plot_run.py $(PREFIX)/share/fmtrain/plot_run.py

clean:
	rm -rf build build-san fmtrain

.SECONDARY:
-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# ---- fuzz: libFuzzer harnesses tests/fuzz/fuzz_<name>.c (not part of `make test`) ----
#   make fuzz [FUZZ_SECONDS=60]  build each harness and run it for FUZZ_SECONDS from
#                                its seed corpus tests/fuzz/corpus/<name> (new inputs go
#                                to $(BUILD)/fuzz/work/<name>); fails on the first crash,
#                                leaving the input in $(BUILD)/fuzz/crash-<name>-*
# clang, not mpicc (which may wrap gcc: no libFuzzer); each harness links only the
# library sources it needs, built with ASan + UBSan.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_DIR     := $(BUILD)/fuzz
FUZZ_CFLAGS  := -std=c11 -g -O1 -D_POSIX_C_SOURCE=200809L -Iinclude -Itests/fuzz -Wall -Wextra -Wno-unknown-pragmas \
                -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_NAMES   := config idx ckpt latents ckpt_meta
FUZZ_SRC_config := src/io/config.c src/io/config_schema.c src/core/status.c src/core/sbuf.c src/core/log.c
FUZZ_LIB_config := -lyaml -lm
FUZZ_SRC_idx    := src/io/idx.c src/core/status.c
FUZZ_LIB_idx    := -lz
FUZZ_SRC_ckpt   := src/io/ckpt.c src/io/safetensors.c $(addprefix src/core/,crc32c.c params.c status.c log.c tensor.c rng.c arena.c)
FUZZ_LIB_ckpt   := -lcjson -lm
FUZZ_SRC_latents := src/io/latents.c src/io/safetensors.c $(addprefix src/core/,crc32c.c status.c tensor.c arena.c log.c)
FUZZ_LIB_latents := -lcjson -lm
FUZZ_SRC_ckpt_meta := $(FUZZ_SRC_ckpt) src/io/config.c src/io/config_schema.c
FUZZ_LIB_ckpt_meta := -lcjson -lyaml -lm

define fuzz_link
	@mkdir -p $(@D)
	@echo "  FUZZCC  $@"
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $(filter %.c,$^) $(FUZZ_LIB_$(patsubst fuzz_%,%,$(@F)))
endef
FUZZ_HDR     := $(wildcard include/fm/*.h)
$(FUZZ_DIR)/fuzz_config: tests/fuzz/fuzz_config.c $(FUZZ_SRC_config) $(FUZZ_HDR) ; $(fuzz_link)
$(FUZZ_DIR)/fuzz_idx: tests/fuzz/fuzz_idx.c $(FUZZ_SRC_idx) $(FUZZ_HDR) ; $(fuzz_link)
$(FUZZ_DIR)/fuzz_ckpt: tests/fuzz/fuzz_ckpt.c tests/fuzz/fuzz_model.c tests/fuzz/fuzz_file.c $(FUZZ_SRC_ckpt) $(FUZZ_HDR) ; $(fuzz_link)
$(FUZZ_DIR)/fuzz_latents: tests/fuzz/fuzz_latents.c tests/fuzz/fuzz_file.c $(FUZZ_SRC_latents) $(FUZZ_HDR) ; $(fuzz_link)
$(FUZZ_DIR)/fuzz_ckpt_meta: tests/fuzz/fuzz_ckpt_meta.c tests/fuzz/fuzz_model.c $(FUZZ_SRC_ckpt_meta) $(FUZZ_HDR) ; $(fuzz_link)

.PHONY: fuzz fuzz-build
fuzz-build: $(FUZZ_NAMES:%=$(FUZZ_DIR)/fuzz_%)

fuzz: deps
	$(Q)$(MAKE) --no-print-directory fuzz-build
	$(Q)for n in $(FUZZ_NAMES); do \
	  mkdir -p $(FUZZ_DIR)/work/$$n; \
	  echo "  FUZZ    $$n for $(FUZZ_SECONDS) s"; \
	  dict=; [ -f tests/fuzz/$$n.dict ] && dict=-dict=tests/fuzz/$$n.dict; \
	  if ! $(FUZZ_DIR)/fuzz_$$n -max_total_time=$(FUZZ_SECONDS) -timeout=25 -print_final_stats=1 $$dict \
	       -artifact_prefix=$(FUZZ_DIR)/crash-$$n- $(FUZZ_DIR)/work/$$n tests/fuzz/corpus/$$n \
	       >$(FUZZ_DIR)/$$n.log 2>&1; then \
	    grep -A30 -E '^==[0-9]+==ERROR|runtime error|deadly signal' $(FUZZ_DIR)/$$n.log | head -40; \
	    echo "fuzz: $$n crashed (log $(FUZZ_DIR)/$$n.log, input $(FUZZ_DIR)/crash-$$n-*)"; exit 1; \
	  fi; \
	  grep -E '^stat::number_of_executed_units|^#[0-9]+ +DONE' $(FUZZ_DIR)/$$n.log | sed 's/^/          /'; \
	done; echo "fuzz: no crash in $(FUZZ_NAMES)"

# fmtrain - quiet by default; `make V=1` prints full commands.
#   make            build ./fmtrain
#   make test       install missing packages, build, run the whole suite
#   make test SAN=1 the same under AddressSanitizer + UndefinedBehaviorSanitizer
#   make run        install missing packages, build, run configs/ldm.yaml into runs/ldm
#   make bench      benchmarks against PyTorch (not part of the tests)
#   make install PREFIX=/usr/local

CC      := mpicc
PREFIX  ?= /usr/local
ARCH    ?= -march=native
OPT     ?= -O2
CFLAGS  := -std=c11 $(OPT) $(ARCH) -fno-math-errno -fopenmp -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L \
           -Iinclude -MMD -MP $(EXTRA_CFLAGS)
LDLIBS  := -ldnnl -lyaml -lpng -lz -lcjson -llapacke -lm

ifeq ($(SAN),1)
BUILD   ?= build-san
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined -g
LDFLAGS += -fsanitize=address,undefined
BIN     := $(BUILD)/fmtrain
else
BUILD   ?= build
BIN     := fmtrain
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

.PHONY: all deps test tests run bench install clean
all: $(BIN)

$(BIN): $(BUILD)/src/cli/fmtrain.o $(BUILD)/libfm.a
	@echo "  LD      $@"
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/libfm.a: $(LIB_OBJ)
	@echo "  AR      $@"
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(CFLAGS) -Itests/harness -c -o $@ $<

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(HARN_OBJ) $(BUILD)/libfm.a
	@echo "  LD      $@"
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

deps:
	$(Q)bash scripts/setup.sh

tests: $(BIN) $(TEST_BIN) $(PAR_BIN) $(BENCH_BIN)

# The suite: every C unit test, then every Python parity test; one line per
# test and a final "N passed, N failed" line.
test: deps
	$(Q)$(MAKE) --no-print-directory tests
	$(Q)BUILD=$(BUILD) FMTRAIN=$(abspath $(BIN)) bash tests/run.sh

run: deps
	$(Q)$(MAKE) --no-print-directory all
	./fmtrain configs/ldm.yaml --out runs/ldm

bench: deps
	$(Q)$(MAKE) --no-print-directory tests
	$(Q)BUILD=$(BUILD) bash tests/bench/run.sh

install: $(BIN)
	install -d $(PREFIX)/bin
	install -m 755 $(BIN) $(PREFIX)/bin/fmtrain

clean:
	rm -rf build build-san fmtrain

.SECONDARY:
-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

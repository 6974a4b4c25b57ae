#!/usr/bin/env bash
# test_cli.sh - the fmtrain command line: exit codes (DESIGN.md §8), error
# messages that name file:line:col, "nothing is created before the config and
# the data are valid", and runs under mpirun. Prints PASS/FAIL cli/<name> per
# case; exits non-zero if any case fails. Env: FMTRAIN = path of the binary
# (default: ./fmtrain at the repository root).
source "$(dirname "$0")/../lib.sh" cli
DATA=/usr/share/datasets/fashion-mnist

# run_in NAME CMD... : runs CMD in a fresh empty directory $W (the cwd), output in
# $W.out / $W.err, exit status in $rc.
run_in() {
  local name=$1; shift
  W=$T/$name
  mkdir -p "$W"
  (cd "$W" && "$@" >"$W.out" 2>"$W.err")
  rc=$?
}
# fail NAME WHY, with the exit status and the heads of stderr and stdout of the last run_in
fail_run() {
  fail "$1" "$2"
  echo "    exit status: $rc"; sed 's/^/    stderr: /' "$W.err" | head -5; sed 's/^/    stdout: /' "$W.out" | head -5
}
# empty_dir DIR: true if DIR holds nothing
empty_dir() { [ -z "$(ls -A "$1")" ]; }

# --- the must-show: an unknown key appended to tiny.yaml -> 2, names line:col, creates nothing
name=unknown_key_appended
mkdir -p "$T/cfg"
cp "$TINY" "$T/cfg/tiny_copy.yaml"
line=$(($(wc -l <"$T/cfg/tiny_copy.yaml") + 1))
echo "flow.lrr: 1e-3" >>"$T/cfg/tiny_copy.yaml"
run_in $name "$FMTRAIN" "$T/cfg/tiny_copy.yaml" --out "$T/out_$name"
if [ $rc -ne 2 ]; then fail_run $name "expected exit 2"
elif ! grep -q "tiny_copy.yaml:$line:1: flow.lrr: unknown key (did you mean flow.lr?)" "$W.err"; then fail_run $name "stderr lacks tiny_copy.yaml:$line:1"
elif [ -e "$T/out_$name" ] || ! empty_dir "$W"; then fail_run $name "something was created"
else pass $name; fi

name=unknown_key_in_section
cp "$TINY" "$T/cfg/tiny_copy2.yaml"
line=$(($(wc -l <"$T/cfg/tiny_copy2.yaml") + 1))
echo "  bogus: 1" >>"$T/cfg/tiny_copy2.yaml" # inside the last section
last=$(grep -E '^[a-z]+:' "$T/cfg/tiny_copy2.yaml" | tail -n 1 | cut -d: -f1)
run_in $name "$FMTRAIN" "$T/cfg/tiny_copy2.yaml" --out "$T/out_$name"
if [ $rc -ne 2 ]; then fail_run $name "expected exit 2"
elif ! grep -q "tiny_copy2.yaml:$line:3: $last.bogus: unknown key" "$W.err"; then fail_run $name "stderr lacks tiny_copy2.yaml:$line:3: $last.bogus"
elif [ -e "$T/out_$name" ] || ! empty_dir "$W"; then fail_run $name "something was created"
else pass $name; fi

name=set_wrong_type
run_in $name "$FMTRAIN" "$TINY" --set flow.lr=fast --out "$T/out_$name"
if [ $rc -ne 2 ]; then fail_run $name "expected exit 2"
elif ! grep -q -- '--set flow.lr=fast: flow.lr: expected a number, got "fast"' "$W.err"; then fail_run $name "stderr"
elif [ -e "$T/out_$name" ] || ! empty_dir "$W"; then fail_run $name "something was created"
else pass $name; fi

name=set_bad_syntax
run_in $name "$FMTRAIN" "$TINY" --set flowlr
if [ $rc -ne 2 ] || ! grep -q -- '--set flowlr: expected section.key=value' "$W.err"; then fail_run $name "expected exit 2 and the syntax"
else pass $name; fi

name=cross_check
run_in $name "$FMTRAIN" "$TINY" --set unet.groups=3
if [ $rc -ne 2 ] || ! grep -q -- '--set unet.groups=3: unet.groups: 3 does not divide unet.channels\[0\] = 16' "$W.err"; then
  fail_run $name "expected exit 2 naming unet.groups"
else pass $name; fi

name=malformed_yaml
printf 'run:\n  seed: 1\n bad: [1, 2\n' >"$T/cfg/bad.yaml"
run_in $name "$FMTRAIN" "$T/cfg/bad.yaml"
if [ $rc -ne 2 ] || ! grep -q 'bad.yaml:[0-9]*:[0-9]*: malformed YAML: ' "$W.err"; then fail_run $name "expected exit 2, malformed YAML"
else pass $name; fi

name=missing_config
run_in $name "$FMTRAIN" "$T/cfg/nonexistent.yaml"
if [ $rc -ne 2 ] || ! grep -q 'nonexistent.yaml: cannot open config file' "$W.err"; then fail_run $name "expected exit 2"
else pass $name; fi

name=help
run_in $name "$FMTRAIN" --help
if [ $rc -ne 0 ] || ! grep -q '^usage: fmtrain CONFIG' "$W.out"; then fail_run $name "expected exit 0 and usage on stdout"
else pass $name; fi

name=version
run_in $name "$FMTRAIN" --version
if [ $rc -ne 0 ] || ! grep -q '^fmtrain [0-9]' "$W.out"; then fail_run $name "expected exit 0 and a version"
else pass $name; fi

name=unknown_option
run_in $name "$FMTRAIN" "$TINY" --frobnicate
if [ $rc -ne 2 ] || ! grep -q "unknown option '--frobnicate'" "$W.err" || ! grep -q "fmtrain --help" "$W.err"; then
  fail_run $name "expected exit 2 with a usage hint"
else pass $name; fi

name=no_arguments
run_in $name "$FMTRAIN"
if [ $rc -ne 2 ]; then fail_run $name "expected exit 2"; else pass $name; fi

# --- a valid config: exit 0, prints the resolved config and the plan, creates nothing
name=valid_tiny_plan
run_in $name "$FMTRAIN" "$TINY" --set flow.steps=40 --set run.seed=3 --out "$T/out_$name" --dry-run
if [ $rc -ne 0 ]; then fail_run $name "expected exit 0"
elif ! grep -q '^# would run: vae (60 steps, batch 32, .*) -> encode .* -> flow (unet .*, 40 steps, batch 32, .*) -> sample .* -> eval' "$W.out"; then
  fail_run $name "stdout lacks the plan"
elif ! grep -q '^  seed: 3$' "$W.out" || ! grep -q "^  out: \"$T/out_$name\"$" "$W.out"; then fail_run $name "overrides not in the resolved config"
elif [ -e "$T/out_$name" ] || ! empty_dir "$W"; then fail_run $name "something was created"
else pass $name; fi

# the printed config is itself a config that resolves to the same thing
name=printed_config_reloads
cp "$T/valid_tiny_plan.out" "$T/cfg/printed.yaml"
run_in $name "$FMTRAIN" "$T/cfg/printed.yaml" --dry-run
if [ $rc -ne 0 ]; then fail_run $name "the printed config does not load"
elif ! diff <(grep -v '^#' "$T/valid_tiny_plan.out") <(grep -v '^#' "$W.out") >/dev/null; then fail_run $name "resolves differently"
else pass $name; fi

name=default_run_dir_not_created
run_in $name "$FMTRAIN" "$TINY" --dry-run
if [ $rc -ne 0 ] || ! grep -q '^  out: "runs/tiny"$' "$W.out" || ! empty_dir "$W"; then fail_run $name "expected exit 0, runs/tiny not created"
else pass $name; fi

# --- data errors: exit 3 naming the file
mkdir -p "$T/trunc" "$T/empty"
cp "$DATA/train-labels-idx1-ubyte.gz" "$DATA/t10k-labels-idx1-ubyte.gz" "$DATA/t10k-images-idx3-ubyte.gz" "$T/trunc/"
head -c 100000 "$DATA/train-images-idx3-ubyte.gz" >"$T/trunc/train-images-idx3-ubyte.gz"
name=truncated_data
run_in $name "$FMTRAIN" "$TINY" --set "data.dir=$T/trunc" --out "$T/out_$name"
if [ $rc -ne 3 ]; then fail_run $name "expected exit 3"
elif ! grep -q 'train-images-idx3-ubyte.gz' "$W.err"; then fail_run $name "stderr does not name train-images-idx3-ubyte.gz"
elif [ -e "$T/out_$name" ] || ! empty_dir "$W" || [ -s "$W.out" ]; then fail_run $name "something was created or printed"
else pass $name; fi

name=empty_data_dir
run_in $name "$FMTRAIN" "$TINY" --set "data.dir=$T/empty" --out "$T/out_$name"
if [ $rc -ne 3 ] || [ -e "$T/out_$name" ]; then fail_run $name "expected exit 3, nothing created"; else pass $name; fi

# --- sample and eval check their arguments and inputs (the real runs are in tests/e2e)
name=sample_bad_checkpoint
touch "$T/cfg/fake.safetensors"
run_in $name "$FMTRAIN" sample "$T/cfg/fake.safetensors" --class 3 --cfg 2.5 --steps 20 --sampler heun --seed 7 -o "$T/g.png"
if [ $rc -ne 3 ] || ! grep -q 'fake.safetensors' "$W.err" || [ -e "$T/g.png" ]; then fail_run $name "expected exit 3 naming the checkpoint"
else pass $name; fi

name=sample_bad_args
run_in $name "$FMTRAIN" sample "$T/cfg/fake.safetensors" --steps many -o "$T/g.png"
if [ $rc -ne 2 ] || ! grep -q 'fmtrain sample: --steps: expected an integer, got "many"' "$W.err"; then fail_run $name "expected exit 2 naming --steps"
else pass $name; fi

name=sample_missing_output
run_in $name "$FMTRAIN" sample "$T/cfg/fake.safetensors"
if [ $rc -ne 2 ] || ! grep -q 'missing -o FILE.png' "$W.err"; then fail_run $name "expected exit 2, missing -o"; else pass $name; fi

name=eval_not_a_run
run_in $name "$FMTRAIN" eval "$T/cfg"
if [ $rc -ne 2 ] || ! grep -q 'config.yaml' "$W.err" || [ -e "$T/cfg/eval.json" ]; then fail_run $name "expected exit 2 naming config.yaml"; else pass $name; fi

# --- under MPI: one rank, then two ranks (rank 0 prints once; errors once; same exit everywhere)
if command -v mpirun >/dev/null; then
  name=mpirun_np1
  run_in $name mpirun -np 1 "$FMTRAIN" "$TINY" --out "$T/out_$name" --dry-run
  if [ $rc -ne 0 ] || ! grep -q '^# would run: vae' "$W.out" || [ -e "$T/out_$name" ]; then fail_run $name "expected exit 0 and the plan"
  else pass $name; fi

  name=mpirun_np2
  run_in $name mpirun -np 2 "$FMTRAIN" "$TINY" --out "$T/out_$name" --dry-run
  if [ $rc -ne 0 ] || [ "$(grep -c '^# would run: vae' "$W.out")" -ne 1 ] || ! grep -q '^# world: 2 ranks' "$W.out"; then
    fail_run $name "expected exit 0 and one plan from 2 ranks"
  else pass $name; fi

  name=mpirun_np2_config_error
  run_in $name mpirun -np 2 "$FMTRAIN" "$T/cfg/tiny_copy.yaml"
  if [ $rc -ne 2 ] || [ "$(grep -c 'flow.lrr: unknown key' "$W.err")" -ne 1 ]; then fail_run $name "expected exit 2 and one message"
  else pass $name; fi

  name=mpirun_np2_batch_split
  run_in $name mpirun -np 2 "$FMTRAIN" "$TINY" --set eval.batch_size=99
  if [ $rc -ne 2 ] || ! grep -q 'eval.batch_size: 99 does not split evenly over 2 ranks' "$W.err"; then
    fail_run $name "expected exit 2 naming eval.batch_size"
  else pass $name; fi
else
  fail mpirun "mpirun not found"
fi

finish

#!/usr/bin/env bash
# test_robust.sh - runs that share a directory, statuses that combine, files
# that ranks read on their own, signals outside the training loops, inputs
# that are not files, temporaries of dead runs (issue 16, items 4-9).
#   run_dir_lock           a second fmtrain, and `fmtrain eval`, on a directory a
#                          run is training in: exit 2 naming the holder's pid and
#                          host; after the holder is SIGKILLed the same directory
#                          resumes (the kernel dropped the lock)
#   preempt_ckpt_fails     2 ranks, SIGUSR1 to both while RUN/ckpt cannot be
#                          written: rank 0's failed preemption checkpoint (exit 4)
#                          wins over the others' 75
#   config_yaml_lost       config.yaml gone (a crash in the old guard's window):
#                          a locked key changed is still refused (exit 2), from the
#                          config stored in the checkpoints; a free key changed
#                          keeps the old config.yaml beside the new one
#   stale_temporaries      temporaries of a dead writer in RUN, RUN/ckpt and
#                          RUN/samples are removed at start; a live one is kept
#   fifo_data              a data file that is a FIFO: exit 3 naming it, at once
#                          (opening it used to wait for a writer forever); the
#                          config (exit 2) and `fmtrain sample`'s checkpoint (3)
#   preempt_encode         SIGTERM in the encode stage: exit 75 within seconds
#                          (the signal used to be ignored until the flow loop)
#   preempt_sample_cmd     SIGTERM to `fmtrain sample` with a long sampler: 75
#   ranks_other_latents    2 ranks in two directories (not shared) whose latents
#                          differ: exit 3 naming rank 1, before any flow step
#   json_strict            metrics.jsonl parses with a strict parser (NaN and
#                          Infinity raise; eval.json's writer: tests/io/test_files)
source "$(dirname "$0")/lib.sh"
make_base
HOST=$(hostname)

F4=(--set flow.steps=4 --set flow.warmup=1)
# FLOWBASE: BASE with a 4-step flow (checkpoints at steps 2 and 4)
FLOWBASE=$T/flowbase
new_run "$FLOWBASE"
if ! flow "$FLOWBASE" "${F4[@]}" --set flow.ckpt_every=2 --set run.ckpt_keep=5 >"$T/flowbase.log" 2>&1; then
  echo "FAIL $SUITE/setup: the 4-step flow run failed"; show "$T/flowbase.log"; exit 1
fi

# wait_exit PID SECS: wait until PID ends (its status in $rc); 1 on timeout
wait_exit() {
  local pid=$1 secs=$2 i
  for ((i = 0; i < secs * 20; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then wait "$pid"; rc=$?; return 0; fi
    sleep 0.05
  done
  return 1
}

# ---- item 4: the run directory's lock ----
name=run_dir_lock
D=$T/$name
new_run "$D"
flow "$D" --set flow.steps=100000 --set flow.ckpt_every=2 >"$T/$name.1.log" 2>&1 &
holder=$!
at_exit "kill -9 $holder"
if ! wait_step "$D" 3 60; then fail $name "the first run did not reach step 3"; show "$T/$name.1.log"
else
  pid=$(procs $$ "$FMNAME" | head -1)
  [ -z "$pid" ] && pid=$holder
  flow "$D" --set flow.steps=100000 >"$T/$name.2.log" 2>&1
  rc2=$?
  timeout -k 5 60 "$FMTRAIN" eval "$D" >"$T/$name.3.log" 2>&1
  rc3=$?
  kill -9 "$pid" 2>/dev/null # the process holding the lock, not its shell
  wait "$holder" 2>/dev/null
  timeout -k 5 120 "$FMTRAIN" "$TINY" --out "$D" "${SETS[@]}" --set flow.steps=6 >"$T/$name.4.log" 2>&1
  rc4=$?
  if [ $rc2 -ne 2 ]; then fail $name "a second run on a live run directory: exit $rc2, expected 2"; show "$T/$name.2.log"
  elif ! grep -q "in use by another fmtrain (pid $pid on host $HOST" "$T/$name.2.log"; then
    fail $name "the refusal does not name pid $pid on $HOST"; show "$T/$name.2.log"
  elif [ $rc3 -ne 2 ] || ! grep -q "in use by another fmtrain" "$T/$name.3.log"; then
    fail $name "fmtrain eval on a live run: exit $rc3, expected 2"; show "$T/$name.3.log"
  elif [ $rc4 -ne 0 ]; then fail $name "after SIGKILL of the holder: exit $rc4, expected 0"; show "$T/$name.4.log"
  else pass "$name (refused: $(grep -o 'in use by another fmtrain ([^)]*)' "$T/$name.2.log" | head -1))"; fi
fi

# ---- item 5: exit-code precedence ----
name=preempt_ckpt_fails
D=$T/$name
new_run "$D"
flow_mpi 2 "$D" --set flow.steps=100000 --set flow.ckpt_every=100000 >"$T/$name.log" 2>&1 &
job=$!
at_exit "kill -9 $job"
if ! wait_step "$D" 3 60; then fail $name "the run did not reach step 3"; show "$T/$name.log"
else
  rm -rf "$D/ckpt" && touch "$D/ckpt" # rank 0's checkpoint cannot be written
  for p in $(procs $job "$FMNAME"); do kill -USR1 "$p"; done
  if ! wait_exit $job 60; then fail $name "the job did not end within 60 s"
  elif [ $rc -ne 4 ]; then fail $name "exit $rc, expected 4 (an I/O error wins over 75)"; show "$T/$name.log"
  elif ! grep -q "error: .*/ckpt" "$T/$name.log"; then fail $name "no error about the checkpoint"; show "$T/$name.log"
  else pass "$name (exit 4: $(grep -o 'error: .*' "$T/$name.log" | head -1 | cut -c1-100))"; fi
fi

# ---- item 9: config.yaml lost, temporaries ----
name=config_yaml_lost
D=$T/$name
new_run "$D" && cp -r "$FLOWBASE/ckpt" "$D/" && rm -f "$D/config.yaml"
flow "$D" "${F4[@]}" --set flow.lr=1e-3 >"$T/$name.1.log" 2>&1
rc1=$?
cp "$FLOWBASE/config.yaml" "$D/config.yaml"
flow "$D" "${F4[@]}" --set run.log_every=2 >"$T/$name.2.log" 2>&1
rc2=$?
if [ $rc1 -ne 2 ]; then fail $name "flow.lr changed without config.yaml: exit $rc1, expected 2"; show "$T/$name.1.log"
elif ! grep -q "flow.lr: .* recorded.*recorded in .*flow-00000004.safetensors\|recorded in .*flow-00000004.safetensors.*flow.lr" "$T/$name.1.log"; then
  fail $name "the refusal does not name flow.lr and the checkpoint"; show "$T/$name.1.log"
elif [ $rc2 -ne 0 ] || [ ! -f "$D/config.yaml" ] || [ ! -f "$D/config.yaml.1" ]; then
  fail $name "a free key changed: exit $rc2, config.yaml and config.yaml.1 should both exist"; show "$T/$name.2.log"
else pass $name; fi

name=stale_temporaries
D=$T/$name
new_run "$D" && cp -r "$FLOWBASE/ckpt" "$D/" && cp "$FLOWBASE/config.yaml" "$D/"
sh -c 'exit 0' &
dead=$!
wait $dead
mkdir -p "$D/samples"
for f in "$D/eval.json.tmp.$dead" "$D/config.yaml.tmp.$dead" "$D/ckpt/flow-00000006.safetensors.tmp.$dead" \
  "$D/samples/flow-00000004-w1.png.tmp.$dead" "$D/samples/keep.png.tmp.$$"; do echo x >"$f"; done
flow "$D" "${F4[@]}" >"$T/$name.log" 2>&1
rc=$?
left=$(find "$D" -name "*.tmp.$dead" | wc -l)
if [ $rc -ne 0 ]; then fail $name "exit $rc"; show "$T/$name.log"
elif [ "$left" -ne 0 ]; then fail $name "$left temporaries of the dead writer $dead left"; find "$D" -name "*.tmp.*" | sed 's/^/    /'
elif [ ! -f "$D/samples/keep.png.tmp.$$" ]; then fail $name "the temporary of a live process was removed"
else pass "$name (4 removed, the live one kept)"; fi

# ---- item 7: inputs that are not files, signals outside the loops ----
name=fifo_data
F=$T/fifo_data_dir
mkdir -p "$F"
for f in /usr/share/datasets/fashion-mnist/*.gz; do ln -s "$f" "$F/"; done
rm -f "$F/train-images-idx3-ubyte.gz" && mkfifo "$F/train-images-idx3-ubyte.gz"
t0=$(date +%s)
timeout -k 2 15 "$FMTRAIN" "$TINY" --out "$T/$name.run" --set data.dir="$F" --dry-run >"$T/$name.log" 2>&1
rc=$?
if [ $rc -ne 3 ]; then fail $name "exit $rc, expected 3 (124: it blocked)"; show "$T/$name.log"
elif ! grep -q "train-images-idx3-ubyte.gz: is a FIFO, not a regular file" "$T/$name.log"; then
  fail $name "the error does not name the FIFO"; show "$T/$name.log"
else
  mkfifo "$T/fifo.yaml" "$T/fifo.safetensors"
  timeout -k 2 15 "$FMTRAIN" "$T/fifo.yaml" --dry-run >"$T/$name.2.log" 2>&1
  rc2=$?
  timeout -k 2 15 "$FMTRAIN" sample "$T/fifo.safetensors" -o "$T/fifo.png" >"$T/$name.3.log" 2>&1
  rc3=$?
  if [ $rc2 -ne 2 ] || ! grep -q "fifo.yaml: the config is not a regular file" "$T/$name.2.log"; then
    fail $name "a FIFO as the config: exit $rc2, expected 2 naming it"; show "$T/$name.2.log"
  elif [ $rc3 -ne 3 ] || ! grep -q "fifo.safetensors: the checkpoint is not a regular file" "$T/$name.3.log"; then
    fail $name "a FIFO as fmtrain sample's checkpoint: exit $rc3, expected 3 naming it"; show "$T/$name.3.log"
  else pass "$name (data file: exit 3 after $(($(date +%s) - t0))s; config: exit 2; sample's checkpoint: exit 3)"; fi
fi

name=preempt_encode
D=$T/$name # a fresh run: a 2-step VAE, then the encoding of 60000 images
"$FMTRAIN" "$TINY" --out "$D" --set data.train_limit=60000 --set data.test_limit=100 --set run.stages=[vae,encode] \
  --set vae.steps=2 --set vae.warmup=1 >"$T/$name.log" 2>&1 &
job=$!
at_exit "kill -9 $job"
for ((i = 0; i < 2400; i++)); do grep -q "stage encode" "$T/$name.log" && break; sleep 0.05; done
sleep 1
kill -TERM $job
t0=$(date +%s)
if ! wait_exit $job 30; then fail $name "still running 30 s after SIGTERM"
elif [ $rc -ne 75 ]; then fail $name "exit $rc, expected 75"; show "$T/$name.log"
elif [ -e "$D/latents.safetensors" ]; then fail $name "latents were written after the signal"
else pass "$name (exit 75 $(($(date +%s) - t0))s after SIGTERM)"; fi

name=preempt_sample_cmd
"$FMTRAIN" sample "$FLOWBASE/ckpt/flow-00000004.safetensors" --steps 100000 -o "$T/$name.png" >"$T/$name.log" 2>&1 &
job=$!
at_exit "kill -9 $job"
sleep 3 # the generator is built and sampling (a signal before sampling is seen at its first step)
kill -TERM $job
if ! wait_exit $job 30; then fail $name "still running 30 s after SIGTERM"
elif [ $rc -ne 75 ]; then fail $name "exit $rc, expected 75"; show "$T/$name.log"
elif [ -e "$T/$name.png" ]; then fail $name "a grid was written after the signal"
else pass "$name (exit 75: $(grep -o 'stopped by signal [0-9]* while sampling (step [0-9]* of [0-9]*)' "$T/$name.log"))"; fi

# ---- item 6: ranks that read different files ----
name=ranks_other_latents
H=$T/$name
mkdir -p "$H/a" "$H/b"
new_run "$H/a/run" && new_run "$H/b/run"
# the same file with the first latent's first value changed (every checksum
# updated by stedit.py): same count and scale, valid on its own
$PY "$(dirname "$0")/stedit.py" "$H/b/run/latents.safetensors" "$H/b/run/latents.safetensors" set latents 0 123.5
FMTRAIN_RANKS_PER_NODE=1 timeout -k 5 120 mpirun --oversubscribe --bind-to none -x FMTRAIN_RANKS_PER_NODE \
  -x OMP_NUM_THREADS -np 1 -wdir "$H/a" "$FMTRAIN" "$TINY" --out run "${SETS[@]}" "${F4[@]}" : \
  -np 1 -wdir "$H/b" "$FMTRAIN" "$TINY" --out run "${SETS[@]}" "${F4[@]}" >"$T/$name.log" 2>&1
rc=$?
if [ $rc -ne 3 ]; then fail $name "exit $rc, expected 3"; show "$T/$name.log"
elif ! grep -q "rank 1 read another .*latents.safetensors than rank 0" "$T/$name.log"; then
  fail $name "the error does not name rank 1 and the latents"; show "$T/$name.log"
elif grep -q '"stage":"flow"' "$H/a/run/metrics.jsonl" 2>/dev/null; then fail $name "a flow step was trained"
else pass $name; fi

# ---- item 8: strict JSON ----
name=json_strict
STRICT='import json, sys
def nonfinite(s): raise ValueError("non-finite number " + s)
for p in sys.argv[1:]:
    text = open(p).read()
    docs = text.splitlines() if p.endswith(".jsonl") else [text]
    for d in docs:
        json.loads(d, parse_constant=nonfinite)
print(len(sys.argv) - 1, "files")'
if out=$($PY -c "$STRICT" "$FLOWBASE/metrics.jsonl" 2>&1); then pass "$name ($out)"
else fail $name "$out"; fi

finish

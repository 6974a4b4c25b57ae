#!/usr/bin/env bash
# test_resume_config.sh - a run directory resumed with another configuration
# (include/fm/config_guard.h): keys that fix what the existing checkpoints
# and latents mean are refused with exit 2, naming each key, its recorded and
# new values and where the new one came from, and config.yaml is left as it
# was; the others are logged and the old config.yaml is kept as
# config.yaml.N; keys of stages with no checkpoint yet may change. Prints
# PASS/FAIL cli/<name> per case. Env: FMTRAIN (default ./fmtrain).
source "$(dirname "$0")/../lib.sh" cli
# fail NAME WHY, with the end of the last run's log
fail_log() { fail "$1" "$2"; show "$T/log" 5; }
SETS=(--set data.train_limit=256 --set data.test_limit=100 --set vae.steps=2 --set vae.warmup=1 --set flow.warmup=1
      --set flow.sample_every=0 --set run.log_every=1)
# fm RUN ARGS...: fmtrain on tiny.yaml into RUN, log in $T/log, status in $rc
fm() { local d=$1; shift; timeout -k 5 120 "$FMTRAIN" "$TINY" --out "$d" "${SETS[@]}" "$@" >"$T/log" 2>&1; rc=$?; }

R=$T/run
fm "$R" --set run.stages=[vae,encode]
if [ $rc -ne 0 ]; then fail_log setup "the vae + encode run failed (exit $rc)"; exit 1; fi

# flow has no checkpoint yet: its keys may differ from the recorded defaults
name=new_stage_keys_free
fm "$R" --set run.stages=[flow] --set flow.steps=3 --set flow.lr=3e-3 --set unet.channels=[16,48]
if [ $rc -ne 0 ]; then fail_log $name "exit $rc"
elif ! grep -q "resume: flow.lr: 0.002 -> 0.003" "$T/log"; then fail_log $name "the change of flow.lr is not logged"
elif [ ! -f "$R/config.yaml.1" ] || ! grep -q "lr: 0.003" "$R/config.yaml"; then fail_log $name "config.yaml.1 / new config.yaml"
else pass $name; fi

# now a flow checkpoint exists: its architecture and optimiser are fixed
name=locked_keys_refused
cp "$R/config.yaml" "$T/before.yaml"
fm "$R" --set run.stages=[flow] --set flow.steps=5 --set flow.lr=3e-3 --set unet.channels=[16,32] --set run.seed=7
want="unet.channels: [16, 48] recorded, [16, 32] now (--set unet.channels=[16, 32])"
if [ $rc -ne 2 ]; then fail_log $name "exit $rc, expected 2"
elif ! grep -qF "$want" "$T/log" || ! grep -qF "run.seed: 0 recorded, 7 now (--set run.seed=7)" "$T/log"; then
  fail_log $name "the error does not name both keys with values and origin"
elif ! grep -q "start a new run directory (--out)" "$T/log"; then fail_log $name "no way out in the message"
elif ! cmp -s "$T/before.yaml" "$R/config.yaml"; then fail_log $name "config.yaml was changed"
elif [ -e "$R/config.yaml.2" ]; then fail_log $name "a config.yaml.2 was made"
else pass $name; fi

# longer training, another precision and fewer logs may change
name=free_keys_logged
fm "$R" --set run.stages=[flow] --set flow.steps=5 --set flow.lr=3e-3 --set unet.channels=[16,48] \
  --set run.precision=bf16 --set run.log_every=2
if [ $rc -ne 0 ]; then fail_log $name "exit $rc"
elif ! grep -q "resume: flow.steps: 3 -> 5" "$T/log" || ! grep -q "resume: run.precision: fp32 -> bf16" "$T/log"; then
  fail_log $name "the changes are not logged"
elif ! grep -q "flow: resumed from .*flow-00000003" "$T/log"; then fail_log $name "the flow did not resume"
elif [ ! -f "$R/config.yaml.2" ] || ! grep -q "steps: 3" "$R/config.yaml.2"; then fail_log $name "config.yaml.2"
else pass $name; fi

# a stage that does not run keeps its recorded keys in the record, so that
# a later run training it is compared with what trained its checkpoint:
# the latents exist, so the VAE's steps are fixed
name=unused_keys_recorded
fm "$R" --set run.stages=[flow] --set flow.steps=5 --set flow.lr=3e-3 --set unet.channels=[16,48] \
  --set vae.steps=9 --set vae.lr=1e-2
if [ $rc -ne 0 ]; then fail_log $name "exit $rc"
elif ! grep -A3 "^vae:" "$R/config.yaml" | grep -q "steps: 2"; then fail_log $name "the record lost vae.steps=2"
else
  fm "$R" --set run.stages=[vae,encode,flow] --set flow.steps=5 --set flow.lr=3e-3 --set unet.channels=[16,48] \
    --set vae.steps=9
  if [ $rc -ne 2 ] || ! grep -qF "vae.steps: 2 recorded, 9 now" "$T/log"; then
    fail_log $name "training the vae on with other steps after encoding: exit $rc"
  else pass $name; fi
fi

finish

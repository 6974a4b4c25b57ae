#!/usr/bin/env bash
# test_setup.sh - scripts/setup.sh on a real machine's troubles:
#   groups        `make run` installs the run group only, which holds no
#                 test-only package; run + test = all, no package in both
#   lock_timeout  another process holds /var/lib/dpkg/lock-frontend with an
#                 fcntl lock, as apt does (python3 fcntl.lockf, 20 s): with
#                 FM_SETUP_LOCK_WAIT=3 setup gives up after 3 s naming the holder
#   lock_wait     the same lock: setup waits, names the holder, and once it is
#                 released runs apt-get install (FM_SETUP_ALWAYS=1 makes apt
#                 run although nothing is missing) and succeeds
#   no_sudo       non-root without sudo, and with a sudo that wants a password:
#                 exit 1 and the exact apt-get command for an administrator
#   distribution  another distribution is named with a warning, and tried
# The lock cases need root and apt-get (skipped otherwise).
source "$(dirname "$0")/../lib.sh" scripts setup_
S=$ROOT/scripts/setup.sh
secs() { echo $(($(date +%s) - $1)); }

# ---- groups
run_pkgs=$(bash "$S" --list run | sort)
test_pkgs=$(bash "$S" --list test | sort)
all_pkgs=$(bash "$S" --list all | sort)
both=$(comm -12 <(echo "$run_pkgs") <(echo "$test_pkgs"))
test_only=$(echo "$run_pkgs" | grep -x -E 'python3-torch|python3-numpy|python3-yaml|clang|libclang.*|slurm.*|munge|libopenblas.*|libsimgrid.*')
make_run=$(make -C "$ROOT" -n run 2>/dev/null | grep 'scripts/setup.sh')
make_test=$(make -C "$ROOT" -n test 2>/dev/null | grep 'scripts/setup.sh')
if [ -z "$run_pkgs" ] || [ -z "$test_pkgs" ]; then fail groups "an empty group"
elif [ -n "$both" ]; then fail groups "in both groups: $both"
elif [ "$(sort <<<"$run_pkgs"$'\n'"$test_pkgs")" != "$all_pkgs" ]; then fail groups "run + test != all"
elif [ -n "$test_only" ]; then fail groups "test-only packages in the run group: $test_only"
elif [ "$make_run" != "bash scripts/setup.sh run" ]; then fail groups "make run calls '$make_run', not setup.sh run"
elif [ "$make_test" != "bash scripts/setup.sh all" ]; then fail groups "make test calls '$make_test', not setup.sh all"
else pass groups; fi

# ---- distribution: another one is named and tried (nothing missing: exit 0)
printf 'ID=ubuntu\nID_LIKE=debian\nVERSION_ID="22.04"\nPRETTY_NAME="Ubuntu 22.04.3 LTS"\n' >"$T/os-ubuntu"
printf 'ID=fedora\nVERSION_ID=39\nPRETTY_NAME="Fedora Linux 39"\n' >"$T/os-fedora"
FM_SETUP_OS_RELEASE=$T/os-ubuntu bash "$S" run >"$T/d1.out" 2>&1; rc1=$?
FM_SETUP_OS_RELEASE=$T/os-fedora bash "$S" run >"$T/d2.out" 2>&1
if [ $rc1 -ne 0 ] && ! grep -q 'missing' "$T/d1.out"; then fail distribution "exit $rc1 on Ubuntu"; show "$T/d1.out"
elif ! grep -q 'warning: Ubuntu 22.04.3 LTS is not Debian 12, .*trying anyway' "$T/d1.out"; then fail distribution "no warning for Ubuntu"; show "$T/d1.out"
elif ! grep -q 'warning: Fedora Linux 39 is not Debian-based; fmtrain is supported on Debian 12' "$T/d2.out"; then fail distribution "no warning for Fedora"; show "$T/d2.out"
elif grep -q warning <(bash "$S" run 2>&1) && grep -q '^ID=debian' /etc/os-release && grep -q '^VERSION_ID="12"' /etc/os-release
then fail distribution "a warning on Debian 12"
else pass distribution; fi

# ---- non-root: no sudo, and a sudo that wants a password (stdin is no terminal)
if [ "$(id -u)" -ne 0 ] || ! command -v runuser >/dev/null; then
  skip no_sudo "needs root to run the script as another user"
else
  chmod 755 "$T"
  cp "$S" "$T/setup.sh"
  mkdir -p "$T/nosudo" "$T/pwsudo"
  for b in bash env id date dpkg-query grep apt-get stat awk tr sleep cat; do
    ln -s "$(command -v $b)" "$T/nosudo/$b"; ln -s "$(command -v $b)" "$T/pwsudo/$b"
  done
  printf '#!/bin/sh\necho "sudo: a password is required" >&2\nexit 1\n' >"$T/pwsudo/sudo"
  chmod 755 "$T/pwsudo/sudo"
  ok=1
  for d in nosudo pwsudo; do
    runuser -u nobody -- env PATH="$T/$d" FM_SETUP_ALWAYS=1 bash "$T/setup.sh" run </dev/null >"$T/$d.out" 2>"$T/$d.err"
    rc=$?
    case $d in nosudo) why="sudo is not installed" ;; *) why="sudo cannot run without a password here" ;; esac
    if [ $rc -ne 1 ] || ! grep -q "you are not root and $why" "$T/$d.err" ||
       ! grep -q 'Ask an administrator to run, as root:' "$T/$d.err" ||
       ! grep -q '^  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends .*dataset-fashion-mnist python3 python3-matplotlib$' "$T/$d.err" ||
       grep -q 'command not found' "$T/$d.err"; then
      fail no_sudo "$d: exit $rc"; show "$T/$d.err"; ok=0
    fi
  done
  [ $ok -eq 1 ] && pass no_sudo
fi

# ---- the dpkg lock, held the way apt holds it
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null || [ ! -e /var/lib/dpkg/lock-frontend ]; then
  skip lock_timeout "needs root and apt-get"; skip lock_wait "needs root and apt-get"
else
  HOLD=20
  $PY -c 'import fcntl, sys, time
f = open("/var/lib/dpkg/lock-frontend", "w")
fcntl.lockf(f, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(float(sys.argv[1]))' "$HOLD" >"$T/holder.out" 2>&1 &
  holder=$!
  at_exit "kill $holder"
  t_lock=$(date +%s)
  for _ in $(seq 100); do grep -q locked "$T/holder.out" && break; sleep 0.1; done

  t0=$(date +%s)
  FM_SETUP_ALWAYS=1 FM_SETUP_LOCK_WAIT=3 bash "$S" run >"$T/l1.out" 2>&1; rc=$?
  took=$(secs "$t0")
  if [ $rc -ne 1 ] || [ "$took" -lt 3 ] || [ "$took" -gt 10 ]; then fail lock_timeout "exit $rc after ${took}s (want 1 after 3 s)"; show "$T/l1.out"
  elif ! grep -q "error: /var/lib/dpkg/lock-frontend is still held by pid $holder (.*python.*) after 3 s" "$T/l1.out"; then
    fail lock_timeout "the message does not name the holder $holder"; show "$T/l1.out"
  else pass "lock_timeout (${took}s)"; fi

  FM_SETUP_ALWAYS=1 bash "$S" run >"$T/l2.out" 2>&1; rc=$?
  took=$(secs "$t_lock")
  if [ $rc -ne 0 ]; then fail lock_wait "exit $rc"; show "$T/l2.out"
  elif kill -0 "$holder" 2>/dev/null || [ "$took" -lt $HOLD ]; then fail lock_wait "finished after ${took}s, before the holder (${HOLD} s)"
  elif [ "$(grep -c "waiting for /var/lib/dpkg/lock-frontend, held by pid $holder (" "$T/l2.out")" -ne 1 ]; then
    fail lock_wait "the holder $holder is not named exactly once"; show "$T/l2.out"
  elif ! grep -q '^0 upgraded, 0 newly installed, 0 to remove' "$T/l2.out" || ! grep -q '^setup: done$' "$T/l2.out"; then
    fail lock_wait "apt-get install did not run to the end"; show "$T/l2.out"
  else pass "lock_wait (done ${took}s after the lock was taken for ${HOLD} s)"; fi
fi

finish

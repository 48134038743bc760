#!/usr/bin/env bash
# Run `lru-keras train` in RUN_DIR and log its wall time, for the model cards of trained
# weights (scripts/register_trained.py reads the log).
#
#   scripts/timed_train.sh RUN_DIR TRAIN_ARGS...
#
# Appends to RUN_DIR.wall one "start" line per attempt (epoch seconds, ISO time, oneDNN
# setting, CPU model and flags, the arguments) and one "end" line (epoch seconds, ISO time, exit
# code). A stopped run resumes by running the same command again: lru-keras train continues
# from RUN_DIR's last checkpoint, and the card adds up the attempts. Output goes to RUN_DIR.out.
set -u
if [ $# -lt 1 ]; then
  echo "usage: $0 RUN_DIR TRAIN_ARGS..." >&2
  exit 2
fi
run_dir=$1
shift
wall="$run_dir.wall"
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
flags=$(grep -m1 '^flags' /proc/cpuinfo | grep -o -E 'avx512f|amx_tile' | tr '\n' ' ' | sed 's/ $//')
echo "start $(date +%s) $(date -Iseconds) onednn=${TF_ENABLE_ONEDNN_OPTS:-default}" \
  "cpu=[$cpu; $flags] args: $*" >> "$wall"
child=
stop() {
  [ -n "$child" ] && kill -TERM "$child" 2>/dev/null && wait "$child"
  echo "end $(date +%s) $(date -Iseconds) rc=$1" >> "$wall"
  exit "$1"
}
trap 'stop 143' TERM
trap 'stop 130' INT
trap 'stop 129' HUP
lru-keras train --run-dir "$run_dir" "$@" >> "$run_dir.out" 2>&1 &
child=$!
wait "$child"
rc=$?
echo "end $(date +%s) $(date -Iseconds) rc=$rc" >> "$wall"
exit $rc

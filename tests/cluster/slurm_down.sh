#!/usr/bin/env bash
# Stop what tests/cluster/slurm_up.sh started, newest first, by the PIDs it recorded,
# and remove its files. Safe to run when nothing (or only part) was started.
ROOT=${SLURM_CI_ROOT:-/tmp/lambda-hat-slurm}
[ -f "$ROOT/pids" ] || exit 0

timeout 10 scancel --user="$(id -un)" 2>/dev/null || true
tac "$ROOT/pids" | while read -r name pid; do
  kill -TERM "$pid" 2>/dev/null || continue
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "slurm_down: $name ($pid) ignored SIGTERM; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
done
for f in /etc/slurm/slurm.conf /etc/slurm/gres.conf; do
  if [ -L "$f" ] && [[ "$(readlink "$f")" == "$ROOT"/* ]]; then rm -f "$f"; fi
done
rm -rf "$ROOT"

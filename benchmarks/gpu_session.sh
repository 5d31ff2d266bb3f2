#!/usr/bin/env bash
# What a session with a GPU runs (issues 25 and 26), in commands of under 10 minutes each (15 minutes of device time
# hold the speed stage and one recipe, or two recipes), from the repository
# root; results go to $OUT (the device tool's folder that comes back), default ./gpu-out:
#
#   bash benchmarks/gpu_session.sh wheels      # HERE first (pip reaches the registries): what the GPU image lacks
#   bash benchmarks/gpu_session.sh speed       # gpu_speed.py --quick --graphs: every case, float32 and bf16, eager
#                                              # and as a CUDA graph (~7 min)
#   bash benchmarks/gpu_session.sh hierarchy   # `hierarchy-gpu` on the GPU for up to 8 min, then its rule shares
#   bash benchmarks/gpu_session.sh syntax      # `syntax-gpu` likewise, then its structure onsets and loss drops
#
# The device image (Python 3.12, torch, pandas, pyarrow, scipy, scikit-learn, rich, typer) lacks duckdb, ruptures,
# hmmlearn and tomli-w: `wheels` downloads them into .whl (git-ignored through .git/info/exclude); each device call
# then names `.whl` in `carry`, and the stages install them into /tmp/site first.
#
# The run itself stays on the device (weights are large); what comes back: the speed table, the run's timing, its
# scalars (CSV) and its analysis (text and JSON). A run cut by the time limit is analysed as far
# as it got (it commits every 30 s) and resumes with `ontogeny run --resume`. Where the speed stage found the graph
# equal to the eager step and faster, a recipe stage can replay it too: SETTINGS="--set cuda_graphs=true". A dry run
# on a CPU:
#   DEVICE=cpu SETTINGS="--set steps=30 --set seeds=1 --set model.n_layers=1" bash benchmarks/gpu_session.sh hierarchy
#   SPEED_ARGS="--device cpu --members 4 --baseline-seeds 2 syntax" bash benchmarks/gpu_session.sh speed
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if [ "${1:-}" = wheels ]; then
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl duckdb==2.0.1 ruptures==1.1.10 hmmlearn==0.3.3 tomli-w==1.2.0
  ls -la .whl
  exit
fi
if ! "$PY" -c "import duckdb, ruptures, hmmlearn, tomli_w" 2> /dev/null && ls .whl/*.whl > /dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}"
"$PY" - <<'EOF' 2>&1 | tee "$OUT/machine.txt"
import torch, duckdb, pyarrow, ontogeny
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
EOF
run_recipe() {  # RECIPE ANALYSES: train RECIPE for up to 8 min, then bring back its scalars and analyses
  local run=/tmp/$1 start
  start=$(date +%s)
  # shellcheck disable=SC2086  # SETTINGS is a list of words
  timeout 480 "$PY" -m ontogeny.cli run "$1" --device "${DEVICE:-cuda}" ${SETTINGS:-} --out "$run" \
    --overwrite > "$OUT/run.log" 2>&1
  echo "exit $? after $(( $(date +%s) - start )) s" | tee -a "$OUT/run.log"
  "$PY" - "$run" "$OUT" <<'EOF'
import sys
import ontogeny as og
run = og.open(sys.argv[1])
run.scalars().to_csv(f"{sys.argv[2]}/scalars.csv", index=False)
run.members().to_csv(f"{sys.argv[2]}/members.csv", index=False)
EOF
  "$PY" -m ontogeny.cli analyze "$run" --what "$2" > "$OUT/analysis.txt" 2>&1
  "$PY" -m ontogeny.cli analyze "$run" --what "$2" --json > "$OUT/analysis.json" 2>/dev/null
  tail -5 "$OUT/analysis.txt"
}
case "${1:-}" in
  speed)
    # shellcheck disable=SC2086  # SPEED_ARGS is a list of words
    PYTHONUNBUFFERED=1 timeout 540 "$PY" benchmarks/gpu_speed.py --quick --graphs ${SPEED_ARGS:-} \
      --out "$OUT/gpu_speed.md" 2>&1 | tee "$OUT/gpu_speed.log"
    ;;
  hierarchy) run_recipe hierarchy-gpu rules ;;
  syntax) run_recipe syntax-gpu language,transitions ;;
  *)
    echo "usage: bash benchmarks/gpu_session.sh wheels|speed|hierarchy|syntax" >&2
    exit 2
    ;;
esac

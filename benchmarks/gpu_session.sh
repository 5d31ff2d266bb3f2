#!/usr/bin/env bash
# What a session with a GPU runs (issues 25 and 26), in two commands of under 10 minutes each, from the repository
# root; results go to $OUT (the device tool's folder that comes back), default ./gpu-out:
#
#   bash benchmarks/gpu_session.sh speed       # gpu_speed.py --quick: every case, float32 and bf16 (~5 min)
#   bash benchmarks/gpu_session.sh hierarchy   # `hierarchy-gpu` on the GPU for up to 8 min, then its rule shares
#
# The run itself stays on the device (weights are large); what comes back: the speed table, the run's timing, its
# scalars (CSV) and `ontogeny analyze --what rules` (text and JSON). A run cut by the time limit is analysed as far
# as it got (it commits every 30 s) and resumes with `ontogeny run --resume`. A dry run on a CPU:
#   DEVICE=cpu SETTINGS="--set steps=30 --set seeds=1 --set model.n_layers=1" bash benchmarks/gpu_session.sh hierarchy
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
python - <<'EOF' 2>&1 | tee "$OUT/machine.txt"
import torch, duckdb, pyarrow, ontogeny
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
EOF
case "${1:-}" in
  speed)
    (cd benchmarks && timeout 540 python gpu_speed.py --quick --out "../$OUT/gpu_speed.md") 2>&1 | tee "$OUT/gpu_speed.log"
    ;;
  hierarchy)
    RUN=/tmp/hierarchy-gpu
    start=$(date +%s)
    # shellcheck disable=SC2086  # SETTINGS is a list of words
    timeout 480 python -m ontogeny.cli run hierarchy-gpu --device "${DEVICE:-cuda}" ${SETTINGS:-} --out "$RUN" \
      --overwrite > "$OUT/run.log" 2>&1
    echo "exit $? after $(( $(date +%s) - start )) s" | tee -a "$OUT/run.log"
    python - "$RUN" "$OUT" <<'EOF'
import sys
import ontogeny as og
run = og.open(sys.argv[1])
run.scalars().to_csv(f"{sys.argv[2]}/scalars.csv", index=False)
run.members().to_csv(f"{sys.argv[2]}/members.csv", index=False)
EOF
    python -m ontogeny.cli analyze "$RUN" --what rules > "$OUT/rules.txt" 2>&1
    python -m ontogeny.cli analyze "$RUN" --what rules --json > "$OUT/rules.json" 2>/dev/null
    tail -5 "$OUT/rules.txt"
    ;;
  *)
    echo "usage: bash benchmarks/gpu_session.sh speed|hierarchy" >&2
    exit 2
    ;;
esac

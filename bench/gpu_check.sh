#!/usr/bin/env bash
# The GPU check of issue 26: one script, about 8 minutes on one H100, results under OUT.
#
#   bench/gpu_check.sh [--tiny] [--device cuda|cpu] OUT
#
# Steps, each its own command with its own log (OUT/<step>.log) and exit status
# (OUT/steps.tsv); a failed step does not stop the others:
#   embed-float32   the embed jobs vs extract.py, esm2_t33 width, 2,000 ScanNet-length chains
#   embed-float16   the same at esm.precision float16 (extract.py's model cast to half)
#   train-loop      training steps/s of the new loop vs the old one, three fusions, and the
#                   data share of a step (bench.data_path part 1)
#   plan            bihmf plan --device cuda --save-calibration OUT/calibration.json
#   targets         the issue's targets from the files above, printed and in OUT/targets.json
#
# --tiny shrinks every step to seconds of work (a random ESM-2 t6, three chains, the training
# benchmark's quick mode, the demo config) so that tests/test_gpu_check.py runs it on the CPU and the
# script cannot rot; tiny results measure nothing.
set -uo pipefail

tiny=0
device=cuda
while [[ $# -gt 1 ]]; do
    case "$1" in
        --tiny) tiny=1; shift ;;
        --device) device="$2"; shift 2 ;;
        *) echo "gpu_check.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
if [[ $# -ne 1 ]]; then
    echo "usage: bench/gpu_check.sh [--tiny] [--device cuda|cpu] OUT" >&2
    exit 2
fi
out="$1"
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
: > "$out/steps.tsv"

# step NAME SECONDS COMMAND...: run one step from the repository root under a time limit
step() {
    local name="$1" limit="$2"
    shift 2
    local started=$SECONDS
    echo "== $name: $*" | tee "$out/$name.log"
    (cd "$root" && timeout "$limit" "$@") >> "$out/$name.log" 2>&1
    local rc=$?
    printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - started))" >> "$out/steps.tsv"
    echo "== $name: exit $rc after $((SECONDS - started)) s" | tee -a "$out/$name.log"
}

if [[ $tiny -eq 1 ]]; then
    embed=(--sizes t6 --unique 3 --lengths scannet --targets 0 --repeats 1 --threads 1)
    loop=(--quick)  # one fusion, one demo chain
    plan=(--configfile config/demo.yaml --width 8 --calibrate-steps 1 --calibrate-residues 100)
    limits=(900 900 900 900 900)  # generous: a busy 2-core machine runs it ten times slower
else
    embed=(--sizes t33 --unique 2000 --lengths scannet --targets 0 --repeats 1)
    loop=(--fusions cross,bihmf_local,bihmf_global --epochs 2 --lengths 100,300 --repeats 1 --attention "")
    plan=()
    limits=(150 120 120 60 30)  # seconds per step: 8 minutes in all
fi

# float32 is esm.precision's default; float16 is asked for by that config key
step embed-float32 "${limits[0]}" "$python" -m bench.embed_vs_extract --device "$device" "${embed[@]}" --out "$out/embed-float32"
step embed-float16 "${limits[1]}" "$python" -m bench.embed_vs_extract --device "$device" "${embed[@]}" --precision float16 \
    --out "$out/embed-float16"
step train-loop "${limits[2]}" "$python" -m bench.data_path --device "$device" "${loop[@]}" --out "$out/train-loop"
step plan "${limits[3]}" "$python" -m bihmf plan --device "$device" "${plan[@]}" --out "$out/plan" \
    --save-calibration "$out/calibration.json"
step targets "${limits[4]}" "$python" -m bench.gpu_targets "$out"
cat "$out/targets.log"

! cut -f2 "$out/steps.tsv" | grep -qv '^0$'

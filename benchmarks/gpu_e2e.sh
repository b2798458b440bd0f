#!/usr/bin/env bash
# Whole decoding steps and runs of every method on the real 8B/7B models, on one NVIDIA GPU, with provenance.
#
#   bash benchmarks/gpu_e2e.sh [SPEC]        # SPEC: catalog name of the GPU (default: from the device name)
#
# Runs `perfmodel measure --device cuda --suite e2e` (validation/e2e.py: Llama-3.1-8B, LLaDA-8B and Dream-7B
# shapes, every layer, bf16, compiled Triton kernels; 1 warm-up + 3 timed eager runs per case, cases taking
# turns, and one run per replayable case timed from CUDA graph replays) into data/measured/, then validates it.
# Budget: under 8 minutes on one H100/H200 (the run stops itself at 7.5 minutes; a rerun resumes). Without a
# CUDA device it measures nothing and exits 3.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_e2e.sh: no CUDA device; nothing measured" >&2
    exit 3
fi
name=$(python -c "import torch; print(torch.cuda.get_device_name(0))")
spec=${1:-}
if [ -z "$spec" ]; then
    case "$name" in
        *H200*) spec=h200-sxm ;;
        *H100*) spec=h100-sxm ;;
        *A100*) spec=a100-sxm-80gb ;;
        *B200*) spec=b200-sxm ;;
        *L40S*) spec=l40s ;;
        *) echo "gpu_e2e.sh: no catalog spec for '$name'; pass one (perfmodel hardware list)" >&2; exit 2 ;;
    esac
fi
torch_v=$(python -c "import torch; print(torch.__version__.split('+')[0])")
stem="data/measured/${spec}_e2e_torch-${torch_v}"
mkdir -p data/measured
export TRITON_INTERPRET=0

{
    echo "command: bash benchmarks/gpu_e2e.sh $spec"
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (modified)')"
    echo "device: $name"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit --format=csv,noheader || true
    python -c "import torch, triton; print(f'torch {torch.__version__}, cuda {torch.version.cuda}, triton {triton.__version__}')"
} > "${stem}.provenance.txt"

status=0
timeout 450 perfmodel measure --device cuda --suite e2e --hardware "$spec" -o "${stem}.csv" --repeats 3 \
    --graph-replays 10 --no-progress || status=$?
if [ "$status" -ne 0 ]; then
    echo "gpu_e2e.sh: measure stopped with status $status (124: the time budget); rows so far are in ${stem}.csv" \
        | tee -a "${stem}.provenance.txt" >&2
fi
if [ -s "${stem}.csv" ]; then
    perfmodel validate "${stem}.csv" --json > "${stem}.validation.json"
    python benchmarks/e2e_cpu.py "${stem}.csv" > "${stem}.md"
    echo "wrote ${stem}.csv, .provenance.txt, .validation.json and .md"
fi
exit "$status"

#!/usr/bin/env bash
# The GPU figures of the README, in one run of at most ~8 minutes on a machine with an NVIDIA GPU:
# the v5 model's training and inference samples/s at batch 32 in float32 and mixed_bfloat16 with
# compile times (benchmarks/model_step.py), then the wall time of the quick recipe.
#
#     bash benchmarks/gpu_check.sh            # from the repository root, in its virtual environment
#
# Installs the CUDA 12 JAX wheels (`pip install -e ".[cuda12]"`) unless JAX already sees a GPU.
# Reference: the PyTorch original ran ~20-25 iterations/s at batch 32 on one RTX 4090 (~640-800
# samples/s; a code comment's figure, docs/v5_reference.md); the goal on one H100/H200-class GPU is
# at least twice that (1,280-1,600 samples/s).
set -euo pipefail
cd "$(dirname "$0")/.."
export KERAS_BACKEND=jax
export TF_FORCE_GPU_ALLOW_GROWTH=true  # TensorFlow (data utilities) must not take the GPU's memory from JAX

echo "== GPU"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

sees_gpu() { python -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" 2>/dev/null; }
if ! sees_gpu; then
    echo "== installing .[cuda12] (JAX's CUDA 12 wheels)"
    timeout 240 pip install --quiet -e ".[cuda12]"
fi
sees_gpu || { echo "JAX does not see the GPU after installing .[cuda12]; stopping" >&2; exit 1; }

echo "== v5 step, batch 32, float32 and mixed_bfloat16 (20 timed steps each)"
timeout 200 python benchmarks/model_step.py --backend jax --models v5_eeg_dual_effnet1d \
    --precision float32 mixed_bfloat16 --batch-size 32 --steps 20

echo "== quick recipe (fold 0 / seed 0, 3 epochs; synthetic data generated on the CPU first)"
workdir=$(mktemp -d)
started=$(date +%s)
timeout 240 python -m recipes.train --recipe v5_eeg_cutmix:quick --workdir "$workdir" | tail -4
echo "quick recipe wall time: $(( $(date +%s) - started )) s (python -m recipes.train --recipe v5_eeg_cutmix:quick)"
rm -rf "$workdir"

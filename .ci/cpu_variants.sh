#!/usr/bin/env bash
# The numerically sensitive tests under other CPUs' kernel paths and thread counts.
#
# Two float implementations (ovseg and a reference, a batch and a single call) agree to a few
# units in the last place, and which last place depends on the CPU: its SIMD width (AVX2 or
# AVX-512), MKL's and oneDNN's kernels, the number of threads. This script reruns the tests
# that compare such implementations with each of those switched, so a comparison that only
# passes on this machine's kernels shows up here. Not part of .ci/run (several minutes per
# variant); run it after touching a comparison or a numerical code path:
#
#   .ci/cpu_variants.sh                      # every variant, the default test files
#   .ci/cpu_variants.sh tests/test_sam2.py   # every variant, these tests (pytest arguments)
#   VARIANTS="avx2 threads1" .ci/cpu_variants.sh
#
# PYTHON overrides the interpreter (default: .venv/bin/python, else python3).
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"

FILES=(
    tests/test_conditioning.py
    tests/test_methods_proxyclip.py tests/test_methods_dense.py tests/test_methods_corrclip.py
    tests/test_methods_infra.py tests/test_trident.py tests/test_dino.py
    tests/test_sam2.py tests/test_grid.py tests/test_decoder.py tests/test_proposals.py
    tests/test_propagate.py tests/test_grounding.py tests/test_scoring.py tests/test_fusion.py
    tests/test_vocabulary.py tests/test_pipeline_methods.py tests/test_pipeline.py
    tests/test_eval_methods.py tests/test_video_stream.py
)
[ $# -gt 0 ] && FILES=("$@")

# name -> environment. "avx2" is what an AVX2-only x86 CPU runs (torch's ATen kernels, MKL's
# GEMM, oneDNN's convolutions, OpenBLAS and numpy's SIMD loops all capped at AVX2);
# "default" is ATen without SIMD kernels; "mkl-compatible" is MKL's reproducible SSE path.
declare -A ENVS=(
    [default]="ATEN_CPU_CAPABILITY=default"
    [avx2]="ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 DNNL_MAX_CPU_ISA=AVX2 OPENBLAS_CORETYPE=Haswell NPY_DISABLE_CPU_FEATURES=AVX512F,AVX512CD,AVX512_SKX,AVX512_CLX,AVX512_CNL,AVX512_ICL,AVX512_SPR"
    [mkl-compatible]="MKL_CBWR=COMPATIBLE"
    [threads1]="OMP_NUM_THREADS=1 MKL_NUM_THREADS=1"
    [threads3]="OMP_NUM_THREADS=3 MKL_NUM_THREADS=3"
)
VARIANTS="${VARIANTS:-default avx2 mkl-compatible threads1 threads3}"

failed=()
for name in $VARIANTS; do
    if [ -z "${ENVS[$name]+x}" ]; then
        echo "unknown variant $name (known: ${!ENVS[*]})" >&2
        exit 2
    fi
    # shellcheck disable=SC2086
    capability=$(env ${ENVS[$name]} "$PYTHON" -c \
        "import torch; print(torch.backends.cpu.get_cpu_capability(), torch.get_num_threads())" \
        2>/dev/null)
    echo "== $name: ${ENVS[$name]}  (torch kernels, threads: $capability)"
    # shellcheck disable=SC2086
    if ! env ${ENVS[$name]} "$PYTHON" -m pytest -q -p no:cacheprovider "${FILES[@]}"; then
        failed+=("$name")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "cpu variants: FAILED under ${failed[*]}" >&2
    exit 1
fi
echo "cpu variants: all passed ($VARIANTS)"

#!/usr/bin/env bash
# The GPU check: one command for a machine with an NVIDIA GPU and PyTorch but no network.
#
#   bash benchmarks/gpu_check.sh
#
# 1. installs the wheels of .whl/ (repo root; see benchmarks/README.md, "GPU check") into
#    /tmp/site with pip --no-index, and puts /tmp/site and the repository on PYTHONPATH;
# 2. checks CUDA and every module ovseg needs, naming what is missing;
# 3. runs the tests marked gpu (pytest -m gpu): CUDA equals the CPU on the tiny models, and
#    SAM's encoder keeps the memory-efficient attention kernel in float16 and bfloat16;
# 4. benchmarks/gpu_speed.py: the encoders (SAM ViT-B, SAM 2.1 hiera-tiny and -large, CLIP
#    ViT-B/16, DINO ViT-B/8) in float32, bfloat16 and float16 on batches of 8 (images/s, ratio
#    to float32, distance to float32, the attention kernels that ran), and images/s of every
#    preset and method at 480x360 with the labels' agreement with float32;
# 5. benchmarks/sam2_grid.py: SAM 2.1 hiera-tiny's 32x32 automatic masks, ovseg against Meta's
#    generator on the same weights (when Meta's sam2 package imports);
# 6. ovseg bench on CUDA with the tiny models and with the real architectures (SAM vit_b +
#    CLIP ViT-B-16, random weights, --images 1 --repeats 2), in float32, float16 (--half) and
#    bfloat16 (--dtype bfloat16);
# 7. ovseg segment on CUDA (tiny models) over the bundled images;
# 8. with GPU_CHECK_COMPILE=1 only: gpu_speed's encoders again with torch.compile (each
#    compilation takes minutes).
#
# Everything lands in benchmarks/results/gpu_check_<UTC time>/ (log, environment, pytest
# report, bench JSON/markdown, segment outputs), copied to $OUT when that is set. Every step
# runs even when an earlier one failed; the exit code is 1 if any failed (2: no GPU or a
# module missing, nothing run).
#
# Environment: PYTHON (default python3), OUT, GPU_CHECK_SITE (default /tmp/site),
# GPU_CHECK_DEVICE (default cuda; cpu rehearses the script here: float16 and the
# real-architecture runs are then skipped, gpu_speed and sam2_grid run on the tiny models),
# GPU_CHECK_STEP_TIMEOUT (seconds, default 1800), GPU_CHECK_COMPILE (1: step 8).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PYTHON:-python3}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
SITE=${GPU_CHECK_SITE:-/tmp/site}
STEP_TIMEOUT=${GPU_CHECK_STEP_TIMEOUT:-1800}
RESULTS=benchmarks/results/gpu_check_$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RESULTS"
exec > >(tee -a "$RESULTS/gpu_check.log") 2>&1

FAILED=()
step() {  # step NAME COMMAND...: run it with a timeout, log ok/FAILED, go on either way
    local name=$1 start rc
    shift
    echo
    echo "== $name: $*"
    start=$(date +%s)
    timeout "$STEP_TIMEOUT" "$@"
    rc=$?
    if [ "$rc" -eq 0 ]; then
        echo "== $name: ok ($(($(date +%s) - start)) s)"
    else
        echo "== $name: FAILED (exit $rc after $(($(date +%s) - start)) s)"
        FAILED+=("$name")
    fi
}

finish() {  # write the summary, copy the results to $OUT, exit
    local code=$1
    if [ "$code" -eq 0 ]; then
        echo "gpu check: all steps passed; results in $RESULTS" | tee "$RESULTS/summary.txt"
    else
        echo "gpu check: FAILED: ${FAILED[*]}; results in $RESULTS" | tee "$RESULTS/summary.txt"
    fi
    if [ -n "${OUT:-}" ]; then
        mkdir -p "$OUT" && cp -r "$RESULTS" "$OUT"/ && echo "results copied to $OUT/"
    fi
    exit "$code"
}

# 1. Wheels (no network: --no-index).
if compgen -G ".whl/*.whl" >/dev/null; then
    echo "installing $(ls .whl/*.whl | wc -l) wheels from .whl/ into $SITE"
    if ! "$PY" -m pip install -q --no-index --no-deps --upgrade --target "$SITE" .whl/*.whl; then
        FAILED+=("wheels")
        finish 2
    fi
else
    echo "no .whl/ folder: using the packages already installed for $PY"
fi
export PYTHONPATH="$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1

# 2. Environment and preflight: the GPU, and every module the steps below import.
{
    echo "date: $(date -u)"
    echo "git: $(git rev-parse HEAD 2>/dev/null || echo unknown) $(git status --porcelain 2>/dev/null | wc -l) changed file(s)"
    echo "device: $DEVICE"
    if command -v nvidia-smi >/dev/null; then nvidia-smi 2>&1; else echo "nvidia-smi: not found"; fi
} >"$RESULTS/environment.txt"
if ! "$PY" - "$DEVICE" >>"$RESULTS/environment.txt" <<'EOF'
import importlib
import sys

device = sys.argv[1]
modules = {  # module: the wheel that provides it
    "torch": "torch", "torchvision": "torchvision", "numpy": "numpy", "PIL": "pillow", "open_clip": "open_clip_torch",
    "timm": "timm", "ftfy": "ftfy", "regex": "regex", "segment_anything": "segment-anything",
    "transformers": "transformers", "tokenizers": "tokenizers",
    "huggingface_hub": "huggingface_hub", "safetensors": "safetensors", "yaml": "pyyaml",
    "tqdm": "tqdm", "pycocotools": "pycocotools", "cv2": "opencv-python-headless",
    "supervision": "supervision", "scipy": "scipy", "matplotlib": "matplotlib",
    "psutil": "psutil", "pytest": "pytest", "hypothesis": "hypothesis", "ovseg": "(repository)",
}
missing = []
for module, wheel in modules.items():
    try:
        importlib.import_module(module)
    except Exception as e:  # an import can fail on any missing dependency
        missing.append(f"{module} ({wheel}): {type(e).__name__}: {e}")
if missing:
    print("missing modules (add their wheels to .whl/):\n  " + "\n  ".join(missing),
          file=sys.stderr)
    sys.exit(2)
import torch

print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}")
if device.startswith("cuda"):
    if not torch.cuda.is_available():
        print("torch.cuda.is_available() is False: no usable NVIDIA GPU for this PyTorch",
              file=sys.stderr)
        sys.exit(2)
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        print(f"cuda:{i} {p.name}, {p.total_memory / 2**30:.1f} GiB, capability {p.major}.{p.minor}")
import ovseg

print(f"ovseg {ovseg.__version__} from {ovseg.__file__}")
EOF
then
    cat "$RESULTS/environment.txt"
    FAILED+=("preflight")
    finish 2
fi
cat "$RESULTS/environment.txt"

# 3. The tests marked gpu (they compare CUDA with the CPU; without CUDA they skip).
mapfile -t GPU_TESTS < <(grep -l "mark.gpu" tests/test_*.py)
step "pytest -m gpu" "$PY" -m pytest -q -p no:cacheprovider -m gpu \
    --junitxml="$RESULTS/pytest_gpu.xml" "${GPU_TESTS[@]}"
if [ "$DEVICE" = cuda ] && ! "$PY" - "$RESULTS/pytest_gpu.xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET

suites = ET.parse(sys.argv[1]).getroot().iter("testsuite")
ran = sum(int(s.get("tests", 0)) - int(s.get("skipped", 0)) for s in suites)
print(f"== pytest -m gpu: {ran} test(s) ran on the GPU (not skipped)")
sys.exit(0 if ran > 0 else 1)
EOF
then
    FAILED+=("gpu tests did not run")
fi

# 4. Precision and throughput (the goals: half precision at least 1.5x float32 for the
#    encoders; the fast preset above 30 images/s at 480x360 on an H100/H200).
if [ "$DEVICE" = cuda ]; then
    step "gpu_speed" "$PY" benchmarks/gpu_speed.py --device cuda -o "$RESULTS"
else
    step "gpu_speed (tiny models)" "$PY" benchmarks/gpu_speed.py --device "$DEVICE" --smoke \
        -o "$RESULTS"
fi

# 5. SAM 2's automatic masks against Meta's generator (needs Meta's sam2 package).
if "$PY" -c "import sam2.build_sam" >/dev/null 2>&1; then
    if [ "$DEVICE" = cuda ]; then
        step "sam2 grid" "$PY" benchmarks/sam2_grid.py --device cuda --repeats 3 -o "$RESULTS"
    else
        step "sam2 grid (tiny model)" "$PY" benchmarks/sam2_grid.py --device "$DEVICE" \
            --sam sam2-tiny-random --points-per-side 4 --repeats 1 -o "$RESULTS"
    fi
else
    echo "sam2 grid: skipped (Meta's sam2 package does not import: add its wheel and hydra-core)"
fi

# 6. The benchmark: tiny models, then the real architectures with random weights.
bench() {  # bench STEM ARGS...
    local stem=$1
    shift
    step "bench $stem" "$PY" -m ovseg bench --device "$DEVICE" -o "$RESULTS" --stem "$stem" "$@"
}
bench "tiny_${DEVICE}_fp32" --tiny
if [ "$DEVICE" = cuda ]; then
    bench "tiny_cuda_fp16" --tiny --half
    bench "vit_b_ViT-B-16_cuda_fp32" --sam vit_b --clip ViT-B-16 --images 1 --repeats 2
    bench "vit_b_ViT-B-16_cuda_fp16" --sam vit_b --clip ViT-B-16 --images 1 --repeats 2 --half
    bench "vit_b_ViT-B-16_cuda_bf16" --sam vit_b --clip ViT-B-16 --images 1 --repeats 2 \
        --dtype bfloat16
else
    echo "device $DEVICE: half precision and the real-architecture runs skipped (CUDA only)"
fi

# 7. The command line on the device, tiny models, the bundled images.
step "segment" "$PY" -m ovseg segment ovseg/assets --classes road car sky building tree \
    -o "$RESULTS/segment_$DEVICE" --sam tiny-random --clip tiny-random --device "$DEVICE" \
    --no-progress

# 8. torch.compile, opt-in (compiling each encoder per dtype takes minutes).
if [ "${GPU_CHECK_COMPILE:-0}" = 1 ]; then
    mkdir -p "$RESULTS/compile"
    step "gpu_speed --compile" "$PY" benchmarks/gpu_speed.py --device "$DEVICE" --compile \
        --sections encoders --dtypes float32,bfloat16 -o "$RESULTS/compile"
fi

if [ ${#FAILED[@]} -eq 0 ]; then finish 0; else finish 1; fi

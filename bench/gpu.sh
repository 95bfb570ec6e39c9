#!/usr/bin/env bash
# bench/gpu.sh: the training and evaluation benches on a GPU machine, in one go.
#
# Step 1, here (a machine that reaches PyPI, with the project's .venv):
#     bash bench/gpu.sh prepare
#   downloads the wheels the GPU image lacks (the versions constraints.txt pins,
#   built for its Python 3.12 on x86-64) into .whl/, and packs the Moonbirds shards
#   (train 8,000 and test 2,000 tokens, by tests.data.moonbird_shards, cached) into
#   .nft1000/bench/gpu-data.tar.gz. Both are git-ignored; about 53 MB together,
#   which with the repo (~8 MB) stays under the 64 MiB a device call carries.
#   The benches there read the unpacked folder as it is (--prepared): it needs no
#   SeaweedFS, whatever changed in the code since.
#
# Step 2, on the GPU machine (no network; the image's python3 has a CUDA torch):
#     bash bench/gpu.sh
#   (device run: command "bash bench/gpu.sh", carry [".whl", ".nft1000/bench/gpu-data.tar.gz"])
#   installs the wheels beside the image's torch, unpacks the shards and runs,
#   each under its own time limit, about 8 minutes in all:
#     train-eager.json     ViT-B-32, bf16, batch 512, random init: ours (dynamic-mask,
#                          plain) against open_clip_train on the same shards
#     train-compiled.json  the same with torch.compile (ours in dynamic-mask only)
#     evaluate.json        embedding (pipeline and towers) and retrieval throughput
#   into $OUT (./bench-out when unset), each with its stderr as <name>.log, and
#   env.txt (torch, CUDA, GPU). A failed or timed-out bench leaves its log and
#   the others still run.
#
# ARCH, PRECISION, BATCH, DEVICE, WORKERS, SAMPLES and PYTHON override the GPU
# defaults (e.g. a small CPU rehearsal: ARCH=local-dir:tasks/train/model_configs/tiny_clip
# PRECISION=fp32 BATCH=64 DEVICE=cpu WORKERS=2 SAMPLES=2000 PYTHON=.venv/bin/python
# NO_INSTALL=1 bash bench/gpu.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=.nft1000/bench/gpu-data.tar.gz
DATA_ARGS=(--tokens 10000 --test-share 0.2 --per-shard 500 --shortest-side 64)
PACKAGES=(open_clip_torch ftfy wcwidth webdataset braceexpand
          boto3 botocore s3transfer jmespath duckdb resvg_py)

prepare() {
    local pins=() name root
    for name in "${PACKAGES[@]}"; do
        pins+=("$(grep -i -m1 "^${name}==" constraints.txt)")
    done
    rm -rf .whl && mkdir -p .whl
    .venv/bin/python -m pip download -q --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux1_x86_64 -d .whl "${pins[@]}"
    root=$(.venv/bin/python -m tests.data.moonbird_shards "${DATA_ARGS[@]}" |
        .venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)["root"])')
    tar czf "$DATA" -C "$(dirname "$root")" "$(basename "$root")"
    du -ch .whl "$DATA" | tail -n 1
}

run() {
    local out=${OUT:-bench-out} python=${PYTHON:-python3}
    mkdir -p "$out" .nft1000/bench
    if [[ -z ${NO_INSTALL:-} ]]; then
        "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --upgrade --target /tmp/site .whl/*.whl
        export PYTHONPATH=/tmp/site:$PWD
    fi
    export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
    # Unpacked unless there already (a rehearsal here must not rewrite shards in use).
    local root
    root=$(tar tzf "$DATA" | sed -n '1s|/.*||p')
    [[ -f .nft1000/bench/$root/prepared.json ]] || tar xzf "$DATA" -C .nft1000/bench
    "$python" -c 'import torch; print(torch.__version__, torch.version.cuda,
torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")' | tee "$out/env.txt"

    local model=(--architecture "${ARCH:-ViT-B-32}" --precision "${PRECISION:-bf16}"
                 --batch-size "${BATCH:-512}" --device "${DEVICE:-cuda}"
                 --workers "${WORKERS:-8}" --prepared ".nft1000/bench/$root")
    local samples=${SAMPLES:-30000}
    bench() {  # name, seconds, module and its arguments
        local name=$1 limit=$2
        shift 2
        echo "== $name (at most $limit s)"
        # timeout signals the whole process group: open_clip_train and data workers too.
        if ! timeout --kill-after=15 "$limit" "$python" -m "$@" >"$out/$name.json" \
            2>"$out/$name.log"; then
            echo "$name failed or timed out; the end of $name.log:"
            tail -n 20 "$out/$name.log"
        fi
    }
    bench train-eager 190 bench.train "${model[@]}" --samples "$samples" --skip-steps 4
    bench train-compiled 210 bench.train "${model[@]}" --samples "$((samples * 2 / 3))" \
        --skip-steps 4 --compile --modes dynamic-mask
    bench evaluate 90 bench.evaluate "${model[@]}" --split train
    ls -l "$out"
}

case ${1:-run} in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: bash bench/gpu.sh [prepare|run]" >&2; exit 2 ;;
esac

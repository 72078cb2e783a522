#!/usr/bin/env bash
# On the GPU host (vLLM 0.25 installed into /tmp/site by the GPU wheel bundle's install.sh): the runs quoted in
# the closing notes. `bash bench/gpu_host.sh runs` (clean, planted and screened 4B diffs), `... serve` (clean and
# planted `tracer diff --serve`), `... bench` (overhead and detection limit), `... e2e` (whole-command wall
# times). Results go to $OUT (report trees as tarballs, without the large host.memray files).
set -u
export PYTHONPATH=/tmp/site:$PWD VLLM_USE_FLASHINFER_SAMPLER=0 PYTHONUNBUFFERED=1 TRACER_CACHE_DIR=/tmp/tracer-cache
OUT=${OUT:-/tmp/out}
mkdir -p /tmp/runs "$OUT"
pack() { tar czf "$OUT/$1.tar.gz" -C /tmp/runs --exclude=host.memray "$1"; }
diff_run() {  # name, extra tracer diff options...
  local name=$1; shift
  timeout ${RUN_TIMEOUT:-290} python -m tracer diff --rounds 8 --model qwen3-vl-4b --out "/tmp/runs/$name" "$@" >"/tmp/runs/$name.log" 2>&1
  echo "$name: exit $?"; tail -n 25 "/tmp/runs/$name.log" | grep -v WARNING
  cp "/tmp/runs/$name.log" "/tmp/runs/$name/" 2>/dev/null; pack "$name"
}
case ${1:-runs} in
  runs)
    nvidia-smi -L
    python -c "import vllm, torch, memray; print('vllm', vllm.__version__, 'torch', torch.__version__, 'memray', memray.__version__)"
    diff_run clean
    diff_run planted --preload tests/plants/gpu_encoder_outputs.py
    diff_run screened --screen
    ;;
  serve)
    diff_run serve-clean --serve --rounds 6
    diff_run serve-planted --serve --rounds 6 --preload tests/plants/gpu_encoder_outputs.py --preload-in engine-core
    ;;
  e2e)
    python bench/end_to_end.py --model qwen3-vl-4b --repeats 1 >"$OUT/e2e.md" 2>/tmp/runs/e2e.log
    echo "e2e: exit $?"; cat "$OUT/e2e.md"; tail -n 5 /tmp/runs/e2e.log
    ;;
  bench)
    python bench/overhead.py --model qwen3-vl-4b --rounds 5 --repeats 3 >"$OUT/overhead.md" 2>/tmp/runs/overhead.log
    echo "overhead: exit $?"; cat "$OUT/overhead.md"; tail -n 5 /tmp/runs/overhead.log
    python bench/detection_limit.py --model qwen3-vl-4b --sizes 16KiB,64KiB,256KiB,1MiB >"$OUT/limit.md" 2>/tmp/runs/limit.log
    echo "limit: exit $?"; cat "$OUT/limit.md"; tail -n 5 /tmp/runs/limit.log
    ;;
esac

"""Timings of tracer.analysis.snapshots: load + diff of the real stacks-all fixture pair and of a synthetic pair.

    .venv/bin/python bench/snapshot_diff.py [--blocks 200000] [--trace-entries 200000] [--repeat 3]

The synthetic snapshots have torch's shape: segments of ~100 blocks, frames as {name, filename, line} dicts
shared between blocks (as the pickle memo shares them in real files) in a per-block list, ~2,000 distinct stacks
of 20-70 frames; the final snapshot keeps 90% of the baseline blocks, frees 10%, reallocates 1% at the same address
and size from another stack, and adds 10% new ones. They are written as gzip'ed protocol-4 pickles (what
tracer.record.backends.torch_cuda writes) and timed from disk. Not a test: prints numbers only.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import pickle
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tracer.analysis.snapshots import diff_snapshots, growth_accounting, live_blocks, load_snapshot  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "gpu"
MiB = 1 << 20


def synthetic_pair(n_blocks: int, trace_entries: int, seed: int = 0) -> tuple[dict, dict]:
    rng = random.Random(seed)
    cpp = [{"name": f"at::native::op{i}(at::Tensor const&)", "filename": "??", "line": 0} for i in range(300)]
    alloc = [{"name": n, "filename": "??", "line": 0} for n in (
        "torch::unwind::unwind()", "torch::CapturedTraceback::gather(bool, bool, bool)",
        "c10::cuda::CUDACachingAllocator::Native::DeviceCachingAllocator::malloc(unsigned long, CUstream_st*)")]
    py = [{"name": f"fn{i}", "filename": f"/site-packages/vllm/mod{i % 97}.py", "line": i} for i in range(3000)]
    interp = [{"name": "_PyEval_EvalFrameDefault", "filename": "??", "line": 0}]

    def stack(mixed: bool) -> list[dict]:
        depth = rng.randint(20, 40)
        frames = [rng.choice(py) for _ in range(depth)]
        if not mixed:
            return frames
        out = alloc + rng.sample(cpp, 5)
        for f in frames:
            out += [f, interp[0]]
        return out

    stacks = [stack(mixed=i % 2 == 0) for i in range(2000)]
    new_stacks = [stack(mixed=False) for _ in range(50)]

    def segments(blocks: list[tuple[int, int, list]]) -> list[dict]:
        segs = []
        for i in range(0, len(blocks), 100):
            chunk = blocks[i:i + 100]
            bl = [{"address": a, "size": s, "requested_size": s - (s % 512), "state": "active_allocated",
                   "frames": list(fr)} for a, s, fr in chunk]
            bl.append({"address": chunk[-1][0] + chunk[-1][1], "size": 4096, "requested_size": 0,
                       "state": "inactive", "frames": []})
            size = sum(b["size"] for b in bl)
            segs.append({"device": 0, "address": chunk[0][0], "total_size": size, "allocated_size": size - 4096,
                         "active_size": size - 4096, "requested_size": sum(b["requested_size"] for b in bl),
                         "stream": 0, "segment_type": "large", "segment_pool_id": (0, 0), "is_expandable": False,
                         "frames": [], "blocks": bl})
        return segs

    def traces() -> list[list[dict]]:
        actions = ("alloc", "free_requested", "free_completed")
        return [[{"action": actions[i % 3], "addr": 1 << 40 | i * 512, "size": 512, "stream": 0,
                  "time_us": 1_700_000_000_000_000 + i, "compile_context": "N/A", "user_metadata": "",
                  "frames": list(stacks[i % len(stacks)])} for i in range(trace_entries)]]

    addr = 1 << 44
    base_blocks = []
    for _ in range(n_blocks):
        size = rng.choice((512, 4096, 1 << 20, 2 << 20, 19 << 20))
        base_blocks.append((addr, size, rng.choice(stacks)))
        addr += size + 4096
    final_blocks = []
    for a, s, fr in base_blocks:
        r = rng.random()
        if r < 0.10:
            continue  # freed
        if r < 0.11:
            fr = rng.choice(new_stacks)  # same address and size, another allocation
        final_blocks.append((a, s, fr))
    for _ in range(n_blocks // 10):
        size = rng.choice((512, 4096, 1 << 20))
        final_blocks.append((addr, size, rng.choice(new_stacks)))
        addr += size + 4096
    meta = {"allocator_settings": {}, "external_annotations": []}
    return ({"segments": segments(base_blocks), "device_traces": traces(), **meta},
            {"segments": segments(final_blocks), "device_traces": traces(), **meta})


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def bench_pair(label: str, base_path: Path, final_path: Path, repeat: int) -> None:
    print(f"{label}: {base_path.name} ({base_path.stat().st_size / MiB:.2f} MiB) -> "
          f"{final_path.name} ({final_path.stat().st_size / MiB:.2f} MiB)")
    for r in range(repeat):
        base, t_b = timed(load_snapshot, base_path)
        final, t_f = timed(load_snapshot, final_path)
        findings, t_d = timed(diff_snapshots, base, final)
        acc, t_a = timed(growth_accounting, base, final)
        blocks, t_l = timed(live_blocks, final)
        del base, final, blocks
        gc.collect()
        from_files, t_e = timed(diff_snapshots, base_path, final_path)
        del from_files
        gc.collect()
        print(f"  run {r}: load {t_b:.3f} + {t_f:.3f} s, diff {t_d:.3f} s -> {t_b + t_f + t_d:.3f} s | "
              f"diff_snapshots(paths) {t_e:.3f} s | growth_accounting {t_a:.3f} s | live_blocks {t_l:.3f} s")
    top = findings[0] if findings else None
    print(f"  {len(findings)} findings, {sum(f.bytes for f in findings) / MiB:.2f} MiB in "
          f"{sum(f.count for f in findings)} new blocks; freed {acc['freed_bytes'] / MiB:.2f} MiB; "
          f"allocated growth {acc['allocated_growth'] / MiB:.2f} MiB; residual {acc['residual']}"
          + (f"; top: {top.bytes / MiB:.2f} MiB {top.owner.short()}" if top else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=200_000)
    ap.add_argument("--trace-entries", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    real = ("qwen3vl-4b-dims_stacks-all_round0.pickle.gz", "qwen3vl-4b-dims_stacks-all_round8.pickle.gz")
    if all((FIXTURES / n).exists() for n in real):
        bench_pair("real stacks-all pair", FIXTURES / real[0], FIXTURES / real[1], args.repeat)

    with tempfile.TemporaryDirectory() as tmp:
        for trace_entries in sorted({0, args.trace_entries}):
            t = time.perf_counter()
            base, final = synthetic_pair(args.blocks, trace_entries)
            paths = []
            for name, s in (("base", base), ("final", final)):
                p = Path(tmp) / f"synthetic-{name}-{trace_entries}.pickle.gz"
                with gzip.open(p, "wb", compresslevel=3) as fh:
                    pickle.dump(s, fh, protocol=4)
                paths.append(p)
            del base, final
            gc.collect()
            print(f"(generated in {time.perf_counter() - t:.1f} s)")
            bench_pair(f"synthetic {args.blocks} blocks, {trace_entries} trace entries", *paths, repeat=args.repeat)


if __name__ == "__main__":
    main()

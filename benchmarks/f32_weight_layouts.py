"""The fp32 dense layers of BERT-base with their weights read as [K, N] or as the [N/NR, K, NR]
panels the compiler repacks them into, with the weights cold: the timed calls rotate over several
argument sets, more than L3 holds, as a model's layers do.

    python benchmarks/f32_weight_layouts.py [--copies 6 --threads 2]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

SHAPES = ((128, 768, 768), (128, 768, 3072), (128, 3072, 768))  # M, K, N: attention out/Q/K/V, FFN up, FFN down


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--copies", type=int, default=6, help="argument sets the timed calls rotate over")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--target", default="native")
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # before TVM's pool starts

    from sparsec.target import parse_target

    target = parse_target(args.target).to_tvm()
    for m, k, n in SHAPES:
        timings = {packed: cold_seconds(m, k, n, packed, args.copies, target) for packed in (False, True)}
        print(f"{m}x{k}x{n} + bias + residual: " + ", ".join(
            f"{'panels' if packed else '[K, N]'} {2 * m * k * n / s / 1e9:.0f} GFLOP/s ({s * 1e6:.0f} us)" for packed, s in timings.items()
        ))


def cold_seconds(m: int, k: int, n: int, packed: bool, copies: int, target) -> float:
    import tvm

    from sparsec.schedules.f32_matmul import F32Matmul, choose_tile
    from sparsec.schedules.common import vector_lanes

    panel = choose_tile(m, n, vector_lanes(target)).cols
    func = _matmul_bias_residual(m, k, n, panel if packed else None)
    sch = F32Matmul().apply_knobs(func, target, None)
    lib = tvm.tirx.build(tvm.IRModule({"main": sch.mod["main"].with_attr("global_symbol", "main")}), target=target)
    rng = np.random.default_rng(0)
    argument_sets = [[tvm.runtime.tensor(rng.standard_normal([int(d) for d in p.shape]).astype("float32")) for p in func.params] for _ in range(copies)]
    best = float("inf")
    for _ in range(10):
        start = time.perf_counter()
        for arguments in argument_sets * 3:
            lib["main"](*arguments)
        best = min(best, (time.perf_counter() - start) / (3 * copies))
    return best


def _matmul_bias_residual(m: int, k: int, n: int, panel: int | None):
    from tvm import te

    a = te.placeholder((m, k), "float32", "A")
    b = te.placeholder((n // panel, k, panel) if panel else (k, n), "float32", "B")
    bias, residual = te.placeholder((n,), "float32", "bias"), te.placeholder((m, n), "float32", "residual")
    r = te.reduce_axis((0, k), "k")
    product = te.compute((m, n), lambda i, j: te.sum(a[i, r] * (b[j // panel, r, j % panel] if panel else b[r, j]), axis=r), name="matmul")
    out = te.compute((m, n), lambda i, j: product[i, j] + bias[j] + residual[i, j], name="epilogue")
    return te.create_prim_func([a, b, bias, residual, out])


if __name__ == "__main__":
    main()

"""Measure the int8 kernels on BERT-base's layer shapes: GOP/s on the stored values of the VNNI BSR
kernel for each block height R (R x 4 blocks) and of the dense VNNI kernel, the data behind
passes/block_sparsity.py's INT8_BSR_COST.

    python benchmarks/int8_bsr_kernels.py [--sparsity 0.9] [--pruned-as 4x1] [--threads 2]

By default each R is measured on a weight pruned in R x 4 blocks; `--pruned-as 4x1` prunes in
another shape and lets every R regroup it (the density each R then stores is printed).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

SHAPES = ((768, 768), (768, 3072), (3072, 768))  # (K, N): attention, FFN up, FFN down
M = 128
BLOCK_ROWS = (1, 4, 16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--pruned-as", default=None, help="prune in RxC blocks for every kernel (default: each kernel's R x 4)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # before TVM's pool starts

    print(f"M={M} sparsity={args.sparsity} pruned as {args.pruned_as or 'R x 4'} threads={args.threads}")
    for k, n in SHAPES:
        kernels = {"dense": _dense(_pruned(k, n, (1, 1), 0.0))}
        for rows in BLOCK_ROWS:
            block = tuple(int(v) for v in args.pruned_as.split("x")) if args.pruned_as else (rows, 4)
            kernels[f"bsr {rows}x4"] = _bsr(_pruned(k, n, block, args.sparsity), rows)
        seconds = _fastest(kernels, args.repeats)
        cells = [f"{name}: {seconds[name] * 1e6:.0f} us, density {density:.2f}, {2 * M * k * n * density / seconds[name] / 1e9:.0f} GOP/s" for name, (_, _, density) in kernels.items()]
        print(f"K={k} N={n}: " + " | ".join(cells), flush=True)


def _pruned(k: int, n: int, block: tuple[int, int], sparsity: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    weight = rng.integers(-127, 128, (n, k)).astype(np.int8)
    rows, cols = block
    keep = rng.random((n // rows, k // cols)) >= sparsity
    return weight * np.repeat(np.repeat(keep, rows, 0), cols, 1)


def _compile(func):
    import tvm

    from sparsec.target import parse_target

    target = parse_target("native").to_tvm()
    return tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=target)["main"]


def _epilogue():
    from sparsec.schedules.u8s8_matmul import PostBias, Requantize

    return Requantize(0.05, 128, "uint8"), PostBias(Requantize(0.06, 120, "uint8"))  # as BERT's layers


def _bsr(weight_nk: np.ndarray, rows: int):
    import tvm

    from sparsec.schedules.u8_regroup import regrouped_shape
    from sparsec.schedules.u8s8_bsr_matmul import Int8BSRShape, pack_int8_bsr, u8s8_bsr_kernel

    n, k = weight_nk.shape
    data, indices, indptr = pack_int8_bsr(weight_nk, rows)
    requantize, post_bias = _epilogue()
    kernel = _compile(u8s8_bsr_kernel(Int8BSRShape(M, k, n, rows, data.shape[0]), None, requantize, post_bias=post_bias))
    x = np.random.default_rng(5).integers(0, 256, regrouped_shape(M, k)).astype(np.uint8)
    arrays = [x, data, indices, indptr, np.zeros(n, np.int32), np.full(n, 1e-3, np.float32), np.zeros(2 * n, np.float32), np.zeros((M, n), np.uint8)]
    return kernel, [tvm.runtime.tensor(a) for a in arrays], data.shape[0] * rows * 4 / (n * k)


def _dense(weight_nk: np.ndarray):
    import tvm

    from sparsec.schedules.u8s8_matmul import Int8MatmulShape, pack_weight, u8s8_matmul_kernel

    n, k = weight_nk.shape
    shape = Int8MatmulShape(M, k, n)
    requantize, post_bias = _epilogue()
    kernel = _compile(u8s8_matmul_kernel(shape, True, None, requantize, None, post_bias))
    padded = shape.padded_n
    x = np.random.default_rng(5).integers(0, 256, (M, shape.padded_k)).astype(np.uint8)
    arrays = [x, pack_weight(weight_nk, True), np.zeros(padded, np.int32), np.full(padded, 1e-3, np.float32), np.zeros(2 * padded, np.float32), np.zeros((M, n), np.uint8)]
    return kernel, [tvm.runtime.tensor(a) for a in arrays], 1.0


def _fastest(kernels: dict, repeats: int, calls: int = 20) -> dict[str, float]:
    """Kernels alternate, repeat after repeat; each keeps its fastest mean over `calls` calls."""
    best = dict.fromkeys(kernels, float("inf"))
    for _ in range(repeats):
        for name, (kernel, arrays, _) in kernels.items():
            kernel(*arrays)
            started = time.perf_counter()
            for _ in range(calls):
                kernel(*arrays)
            best[name] = min(best[name], (time.perf_counter() - started) / calls)
    return best


if __name__ == "__main__":
    main()

"""Measure the BSR kernel families on this machine: GFLOP/s on the stored values per (loop
order, block shape), the data behind passes/block_sparsity.py's BSR_THROUGHPUT, and the dense
kernel on the same layer (DENSE_THROUGHPUT).

    python benchmarks/bsr_kernels.py [--m 128 --k 768 --n 768 --density 0.1 --threads 2]
"""

from __future__ import annotations

import argparse
import os

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--m", type=int, default=128)
    parser.add_argument("--k", type=int, default=768)
    parser.add_argument("--n", type=int, default=768)
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--target", default="native")
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # before TVM's pool starts

    import tvm

    from sparsec.passes.block_sparsity import CANDIDATE_BLOCKS, pack_bsr
    from sparsec.schedules.f32_bsr_matmul import BSRShape, bsr_columns_kernel, bsr_rows_kernel
    from sparsec.target import parse_target

    target = parse_target(args.target).to_tvm()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.m, args.k)).astype(np.float32)
    print(f"M={args.m} K={args.k} N={args.n} density={args.density} threads={args.threads}")
    print(f"dense: {dense_gflops(x, args.n, target):.0f} GFLOP/s")
    for block in CANDIDATE_BLOCKS:
        rows, cols = block
        keep = rng.random((args.n // rows, args.k // cols)) < args.density
        weight_nk = rng.standard_normal((args.n, args.k)).astype(np.float32) * np.repeat(np.repeat(keep, rows, 0), cols, 1)
        for order, make in (("rows", bsr_rows_kernel), ("columns", bsr_columns_kernel)):
            data, indices, indptr = pack_bsr(weight_nk, block, order)
            shape = BSRShape(args.m, args.k, args.n, rows, cols, data.shape[0])
            lib = tvm.tirx.build(tvm.IRModule({"main": make(shape).with_attr("global_symbol", "main")}), target=target)
            activations = x if order == "rows" else np.ascontiguousarray(x.T)
            buffers = [tvm.runtime.tensor(a) for a in (activations, data, indices, indptr, np.zeros(args.n, np.float32), np.zeros((args.m, args.n), np.float32))]
            lib["main"](*buffers)
            np.testing.assert_allclose(buffers[-1].numpy(), x @ weight_nk.T, rtol=1e-3, atol=1e-3)
            seconds = lib.time_evaluator("main", tvm.cpu(), number=50, repeat=5)(*buffers).median
            stored_flops = 2.0 * args.m * data.shape[0] * rows * cols
            print(f'    ("{order}", {block}): {stored_flops / seconds / 1e9:.1f},  # {seconds * 1e6:.0f} us')


def dense_gflops(x: np.ndarray, n: int, target) -> float:
    import tvm
    from tvm import relax

    from sparsec.passes import optimization_pipeline

    weight = np.random.default_rng(1).standard_normal((x.shape[1], n)).astype(np.float32)
    builder = relax.BlockBuilder()
    var = relax.Var("x", relax.TensorType(x.shape, "float32"))
    with builder.function("main", [var]):
        with builder.dataflow():
            out = builder.emit_output(relax.op.matmul(var, relax.const(weight)))
        builder.emit_func_output(out)
    with target:
        mod = optimization_pipeline(target)(builder.get())
    vm = relax.VirtualMachine(tvm.compile(mod, target), tvm.cpu())
    seconds = vm.time_evaluator("main", tvm.cpu(), number=20, repeat=5)(tvm.runtime.tensor(x)).median
    return 2.0 * x.shape[0] * x.shape[1] * n / seconds / 1e9


if __name__ == "__main__":
    main()

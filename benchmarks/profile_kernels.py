"""Where an inference's time goes: per-kernel wall time of a compiled model, summed by kernel
(names that differ only in a numeric suffix count as one).

    python benchmarks/profile_kernels.py model.so [--runs 20] [--threads 2] [--top 25]

Loads the artifact with TVM's Relax VM (this needs the compiler package, unlike the slim
loader) and times every kernel call through the VM's instrument hook. The per-call overhead of
the hook is included in each figure; compare kernels with each other, not with `sparsec bench`.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from collections import defaultdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)

    import numpy as np
    import tvm
    from tvm import relax

    from sparsec.bench.runner import random_input
    from sparsec.runtime import load

    model = load(args.artifact, num_threads=args.threads)
    rng = np.random.default_rng(0)
    feeds = [random_input(spec, rng) for spec in model.inputs]

    vm = relax.VirtualMachine(tvm.runtime.load_module(args.artifact), tvm.cpu())
    totals: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    started = [0.0]  # kernel calls do not nest

    def instrument(_func, name, before_run, _ret, *_args):
        if before_run:
            started[0] = time.perf_counter()
        else:
            family = re.sub(r"\d+$", "", name)  # kernels that differ only in baked-in constants
            totals[family] += time.perf_counter() - started[0]
            calls[family] += 1

    tensors = [tvm.runtime.tensor(f) for f in feeds]
    vm["main"](*tensors)  # warm-up, outside the profile
    vm.set_instrument(instrument)
    wall = time.perf_counter()
    for _ in range(args.runs):
        vm["main"](*tensors)
    wall = (time.perf_counter() - wall) / args.runs
    ranked = sorted(totals.items(), key=lambda item: -item[1])
    print(f"{wall * 1e3:.2f} ms per inference (instrumented), {sum(totals.values()) / args.runs * 1e3:.2f} ms in kernels")
    for name, seconds in ranked[: args.top]:
        per_run = seconds / args.runs
        print(f"{per_run * 1e3:8.3f} ms  {calls[name] // args.runs:3d} calls  {name}")


if __name__ == "__main__":
    main()

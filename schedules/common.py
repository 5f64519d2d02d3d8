"""Helpers shared by the schedule rules: vector width, loop extents, generic loop shaping."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.ir.expr import TensorLoad  # what tirx.BufferLoad(...) builds in TVM 0.27
from tvm.target import Target
from tvm.target.codegen import llvm_get_vector_width

# Stack buffers above this size become heap workspaces in TVM's codegen (and lose register
# promotion), so register tiles are kept below it.
MAX_REGISTER_TILE_BYTES = 1024


def vector_lanes(target: Target, dtype_bits: int = 32) -> int:
    width = llvm_get_vector_width(target)
    if width <= 0:
        width = 128
    return max(width // dtype_bits, 1)


def loop_extent(sch: s_tir.Schedule, loop: s_tir.schedule.LoopRV) -> int | None:
    extent = sch.get(loop).extent
    return int(extent) if isinstance(extent, tirx.IntImm) else None


def block_iter_kinds(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> str:
    """'S' for a spatial iterator, 'R' for a reduction one, 'O' for anything else."""
    kinds = {tirx.IterVar.DataPar: "S", tirx.IterVar.CommReduce: "R"}
    return "".join(kinds.get(iv.iter_type, "O") for iv in sch.get(block).iter_vars)


def vectorize_innermost(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, lanes: int) -> bool:
    """Vectorize the innermost loop of a block in chunks of `lanes` (exact divisors only, so
    no predicate is left inside the vector loop). Returns whether a loop was vectorized."""
    loops = sch.get_loops(block)
    extent = loop_extent(sch, loops[-1]) if loops else None
    if extent is None or extent < 2:
        return False
    if extent < lanes and len(loops) > 1 and lanes % extent == 0 and (loop_extent(sch, loops[-2]) or 1) * extent % lanes == 0:
        # a short inner axis ([.., 4] bytes): fuse it with the next one so vectors are full width
        _, inner = sch.split(sch.fuse(loops[-2], loops[-1]), [None, lanes])
        sch.vectorize(inner)
        return True
    if extent <= lanes:
        sch.vectorize(loops[-1])
        return True
    width = largest_divisor_at_most(extent, lanes)
    if width < 4:
        return False
    _, inner = sch.split(loops[-1], [None, width])
    sch.vectorize(inner)
    return True


def largest_divisor_at_most(n: int, limit: int) -> int:
    for d in range(min(n, limit), 0, -1):
        if n % d == 0:
            return d
    return 1


def find_mac_block(sch: s_tir.Schedule) -> s_tir.schedule.SBlockRV | None:
    """The function's only reduction block, if it is a multiply-accumulate (C += A * B)."""
    found = None
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        if "R" not in block_iter_kinds(sch, block):
            continue
        if found is not None or not _is_multiply_accumulate(sch.get(block)):
            return None
        found = block
    return found


def _is_multiply_accumulate(block: tirx.stmt.SBlock) -> bool:
    store = block.body
    if not isinstance(store, tirx.BufferStore) or not isinstance(store.value, tirx.Add):
        return False
    acc, product = store.value.a, store.value.b
    loads_accumulator = isinstance(acc, TensorLoad) and acc.source.same_as(store.buffer)
    return loads_accumulator and isinstance(product, tirx.Mul)


def inline_epilogue(sch: s_tir.Schedule, producer, allowed_before: int = 0):
    """Inline the chain of element-wise consumers that follow `producer` into their last block
    and return that block: None without an epilogue, False when the function has another shape
    (a reduction after the producer, or more than `allowed_before` blocks before it)."""
    blocks = list(sch.get_child_blocks(sch.get_sblock("root")))
    names = [sch.get(b).name_hint for b in blocks]
    position = names.index(sch.get(producer).name_hint)
    if position > allowed_before:
        return False
    consumers = blocks[position + 1 :]
    if any("R" in block_iter_kinds(sch, b) for b in consumers):
        return False
    for block in consumers[:-1]:
        sch.compute_inline(block)
    return consumers[-1] if consumers else None


def without_param(func: tirx.PrimFunc, name: str) -> tirx.PrimFunc:
    """`func` minus a buffer parameter its body never touches (TVMScript cannot make one optional)."""
    return tirx.PrimFunc([p for p in func.params if p.name != name], func.body, func.ret_type, func.attrs)

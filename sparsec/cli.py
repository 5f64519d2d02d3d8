"""The `sparsec` command line: compile, inspect, run, bench, tune."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from sparsec import interrupts
from sparsec.errors import SparsecError

TARGET_HELP = (
    "CPU to compile for: 'llvm -mcpu=NAME [-mattr=+feat,...] [-num-cores=N]' "
    "(e.g. skylake-avx512, cascadelake, sapphirerapids, znver4) or 'native' for this host."
)
INPUT_SHAPE_HELP = "Fix an input's dynamic dimensions: NAME=DIMxDIM..., e.g. input_ids=1x128. Repeatable."


class SparsecCommand(click.Group):
    """Turns user errors into one line on stderr and exit code 2, and Ctrl-C into exit code 130,
    never a traceback."""

    def invoke(self, ctx):
        interrupts.install()
        try:
            return super().invoke(ctx)
        except SparsecError as err:
            if interrupts.interrupted():
                self._interrupted(ctx)
            click.echo(f"error: {err}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            self._interrupted(ctx)
        except Exception:
            if interrupts.interrupted():  # Ctrl-C that TVM turned into another error
                self._interrupted(ctx)
            raise

    @staticmethod
    def _interrupted(ctx):
        click.echo("interrupted", err=True)
        ctx.exit(130)


@click.group(cls=SparsecCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sparsec")
def main():
    """sparsec: compile pruned and quantized ONNX models into fast CPU code.

    \b
    sparsec inspect model.onnx                  per-layer weights, sparsity, MACs
    sparsec compile model.onnx -o model.so      compile to one self-contained .so
    sparsec run model.so --input x=x.npy        run it (numpy + TVM runtime only)
    sparsec bench model.onnx --compare onnxruntime   latency/throughput vs a peer
    sparsec bench tuned.so --compare untuned.so      two builds, alternating
    sparsec tune model.onnx --log model.json    tune kernels; compile --tuning-log uses the log
    """


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Where to write the .so (default: MODEL with .so).")
@click.option("--target", default="native", show_default=True, help=TARGET_HELP)
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=DIMS", help=INPUT_SHAPE_HELP)
@click.option(
    "--sparsity-threshold",
    type=click.FloatRange(0.0, 1.0),
    help="Make every matmul layer whose weight has at least this fraction of exact zeros block-sparse "
    "(default: decide per layer from the measured kernel speeds).",
)
@click.option("--block", metavar="RxC", help="BSR block shape for every sparse layer: R output channels x C reduction steps, e.g. 4x1 (default: chosen per layer).")
@click.option("--quantize", type=click.Choice(["int8"]), help="Quantize an fp32 model after training: int8 weights (symmetric, per channel), uint8 activations calibrated on --calibration-data; MatMul/Gemm layers only.")
@click.option("--calibration-data", type=click.Path(dir_okay=False, exists=True, path_type=Path), metavar="FILE.npz", help="With --quantize: one array per model input, samples along the first axis.")
@click.option("--calibration-method", type=click.Choice(["minmax", "percentile"]), default="minmax", show_default=True, help="With --quantize: how activation ranges come from the calibration data.")
@click.option("--exclude", multiple=True, metavar="NODE", help="With --quantize: keep this node (by ONNX node name) in fp32. Repeatable.")
@click.option("--smooth-alpha", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True, help="With --quantize: SmoothQuant strength, how much of the activations' outlier range moves into the weights (0: off).")
@click.option("--tuning-log", type=click.Path(dir_okay=False, exists=True, path_type=Path), metavar="LOG.json", help="Apply the best records `sparsec tune` wrote (for this target's ISA; records of another ISA are reported, not applied).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
def compile(model: Path, output: Path | None, target: str, input_shapes: tuple[str, ...], sparsity_threshold, block, quantize, calibration_data, calibration_method, exclude, smooth_alpha, tuning_log, quiet: bool):  # noqa: A001
    """Compile an ONNX MODEL into a shared library.

    Matmul/Gemm layers with pruned constant weights become block-sparse (BSR) kernels where that
    is estimated faster than dense; QDQ layers run on integer kernels; a per-layer summary is
    printed. With --quantize int8 an fp32 model is quantized first and each quantized layer's
    error on the calibration data is reported. The artifact holds the
    weights and its input/output metadata; `sparsec run` or `sparsec.runtime.load()` executes it
    without TVM's compiler. The file is written atomically: a failed or interrupted compile
    leaves nothing behind.
    """
    import sparsec

    if (calibration_data is not None or exclude) and quantize is None:
        raise SparsecError("--calibration-data and --exclude only apply with --quantize int8")
    output = output or model.with_suffix(".so")
    progress = None if quiet else (lambda line: click.echo(line, err=True))
    result = sparsec.compile(
        model,
        output,
        target=target,
        input_shapes=list(input_shapes),
        progress=progress,
        sparsity_threshold=sparsity_threshold,
        block=_parse_block(block) if block else None,
        quantize=quantize,
        calibration_data=calibration_data,
        calibration_method=calibration_method,
        exclude=exclude,
        smooth_alpha=smooth_alpha,
        tuning_log=tuning_log,
    )
    if not quiet:
        size_mb = result.output.stat().st_size / 1e6
        click.echo(f"wrote {result.output} ({size_mb:.1f} MB) for {result.target.describe()} in {result.seconds:.1f}s", err=True)


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=DIMS", help=INPUT_SHAPE_HELP + " MACs need static shapes.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--log", "tuning_log", type=click.Path(dir_okay=False, exists=True, path_type=Path), metavar="LOG.json", help="Instead: which of the model's tunable kernels this tuning log covers (for --target).")
@click.option("--target", default="native", show_default=True, help="With --log: " + TARGET_HELP)
def inspect(model: Path, input_shapes: tuple[str, ...], as_json: bool, tuning_log: Path | None, target: str):
    """Show the weighted layers of an ONNX MODEL: op, weight shape, sparsity (fraction of exact
    zeros), multiply-accumulates, and the kernel `compile` would choose (dense or BSR with its
    block shape and loop order) with its estimated speedup over dense. With --log: the model's
    tuning tasks and the log's best record for each."""
    import sparsec

    if tuning_log is not None:
        from sparsec.tuning_logs.coverage import log_coverage

        coverage = log_coverage(model, tuning_log, target, list(input_shapes))
        click.echo(json.dumps(coverage, indent=2) if as_json else coverage_table(coverage))
        return
    layers = sparsec.inspect(model, list(input_shapes))
    if as_json:
        click.echo(json.dumps({"model": str(model), "layers": [layer.to_json() for layer in layers]}, indent=2))
        return
    click.echo(_layer_table(layers))


def _layer_table(layers) -> str:
    header = ("layer", "op", "weight shape", "sparsity", "MMACs", "kernel", "est. speedup")
    rows = [
        (
            layer.name,
            layer.op,
            "x".join(str(d) for d in layer.weight_shape),
            f"{layer.sparsity:.1%}",
            "?" if layer.macs is None else f"{layer.macs / 1e6:.2f}",
            layer.kernel,
            "" if layer.estimated_speedup is None else f"{layer.estimated_speedup:.1f}x",
        )
        for layer in layers
    ]
    total_macs = sum(layer.macs or 0 for layer in layers)
    footer = f"{len(layers)} weighted layers, {total_macs / 1e6:.1f} MMACs"
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join([*lines, footer])


def coverage_table(coverage: dict) -> str:
    lines = [f"{coverage['log']} for {coverage['isa']}: {coverage['covered']} of {len(coverage['tasks'])} tasks covered"]
    for task in coverage["tasks"]:
        best = "not in the log" if task["best_us"] is None else f"best {task['best_us']:.1f} us ({task['records']} records) {task['candidate']}"
        lines.append(f"  {task['kernel']:<48} {task['family']:<16} x{task['call_sites']}  {best}")
    lines += [f"warning: {w}" for w in coverage["warnings"]]
    return "\n".join(lines)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--log", "log_path", type=click.Path(dir_okay=False, path_type=Path), help="The log to append records to (created if missing; an existing log is resumed).")
@click.option("--target", default="native", show_default=True, help=TARGET_HELP)
@click.option("--trials", type=click.IntRange(min=1), default=200, show_default=True, help="Measurements in all, shared evenly by the model's tasks.")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=DIMS", help=INPUT_SHAPE_HELP)
@click.option("--rpc-tracker", metavar="HOST:PORT", help="Measure on machines a TVM RPC tracker hands out, sparsec's and MetaSchedule's candidates alike (they are built here).")
@click.option("--rpc-key", metavar="KEY", help="With --rpc-tracker: the device key the RPC servers registered with.")
@click.option("--metaschedule/--no-metaschedule", default=True, show_default=True, help="Give half of each dense fp32 task's budget to MetaSchedule (its search costs ~15 s per task before the first trial).")
@click.option("--merge", is_flag=True, help="Instead of tuning: merge the logs PATHS into -o.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="With --merge: the merged log.")
def tune(paths, log_path, target, trials, input_shapes, rpc_tracker, rpc_key, metaschedule, merge, output):
    """Tune the kernels of an ONNX model (PATHS: the model) for a CPU and append the measurements
    to --log; `sparsec compile --tuning-log` applies the best ones.

    Every distinct tunable kernel is a task: sparse and integer kernels (BSR fp32/int8, int8 dense)
    search sparsec's own knobs (tiles, grouping), measured on the layer's real BSR arrays and ranked
    by an XGBoost model once there is data; dense fp32 matmuls search tile knobs and MetaSchedule.
    Each measurement is flushed to the log as it finishes: rerun the same command after an
    interruption and it resumes. With --merge, PATHS are logs merged into -o.
    """
    from sparsec.target import parse_target
    from sparsec.tuning_logs.measure import RPCSettings
    from sparsec.tuning_logs.progress import progress_for
    from sparsec.tuning_logs.records import merge_logs
    from sparsec.tuning_logs.tuner import tune_model

    if merge:
        if output is None:
            raise SparsecError("--merge needs -o OUTPUT.json")
        count, warnings = merge_logs(paths, output)
        for warning in warnings:
            click.echo(f"warning: {warning}", err=True)
        click.echo(f"wrote {output}: {count} records from {len(paths)} logs", err=True)
        return
    if len(paths) != 1:
        raise SparsecError("tune takes one model (or --merge LOG... -o OUT)")
    if log_path is None:
        raise SparsecError("tune needs --log FILE.json: where the records go")
    rpc = RPCSettings.parse(rpc_tracker, rpc_key) if rpc_tracker else None
    spec = parse_target(target)
    say = lambda line: click.echo(line, err=True)  # noqa: E731
    try:
        report = tune_model(paths[0], log_path, spec, trials, progress_for(), say, list(input_shapes), rpc, metaschedule)
    except KeyboardInterrupt:
        click.echo(f"the measurements so far are in {log_path}: the same command resumes", err=True)
        raise
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    for outcome in report.outcomes:
        gain = "" if not (outcome.default_us and outcome.best_us) else f"  {outcome.default_us / outcome.best_us:.2f}x over the default"
        best = "no successful candidate" if outcome.best_us is None else f"{outcome.default_us or float('nan'):.1f} -> {outcome.best_us:.1f} us"
        click.echo(f"{outcome.task.kernel}: {best}{gain}", err=True)
    click.echo(f"log: {log_path}", err=True)


@main.command()
@click.argument("artifact", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--input", "inputs", multiple=True, metavar="NAME=FILE.npy", help="An input from a .npy file. Repeatable.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write all outputs to this .npz (else print them).")
@click.option("--threads", type=click.IntRange(min=1), help="Worker threads (default: the usable cores).")
def run(artifact: Path, inputs: tuple[str, ...], output: Path | None, threads: int | None):
    """Run a compiled ARTIFACT on inputs from .npy files."""
    import numpy as np

    from sparsec.runtime import load

    model = load(artifact, num_threads=threads)
    feeds = dict(_read_input(spec) for spec in inputs)
    results = model.run(None, feeds)
    if output is not None:
        np.savez(output, **{info.name: value for info, value in zip(model.outputs, results)})
        click.echo(f"wrote {len(results)} output(s) to {output}", err=True)
        return
    with np.printoptions(threshold=20, edgeitems=3, precision=5):
        for info, value in zip(model.outputs, results):
            click.echo(f"{info.name}: {value.dtype} {tuple(value.shape)}\n{value}")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--compare", multiple=True, metavar="ENGINE", help="Also time a peer and check its outputs agree: onnxruntime or openvino (when installed) on the same ONNX file, or another sparsec artifact FILE.so (say, the untuned build). Repeatable.")
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False, path_type=Path), help="The ONNX file peers run when MODEL is a compiled .so.")
@click.option("--target", default="native", show_default=True, help="When MODEL is ONNX: " + TARGET_HELP)
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=DIMS", help="When MODEL is ONNX: " + INPUT_SHAPE_HELP)
@click.option("--batch", type=click.IntRange(min=1), help="When MODEL is ONNX: batch size for inputs whose first dimension is dynamic.")
@click.option("--threads", type=click.IntRange(min=1), help="Threads for every engine (default: the usable cores).")
@click.option("--seconds", type=click.FloatRange(min=0.0), default=10.0, show_default=True, help="Timing window per engine per round.")
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True, help="Rounds; engines alternate within each.")
@click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True, help="Untimed runs before each window.")
@click.option("--input", "inputs", multiple=True, metavar="NAME=FILE.npy", help="Use this input instead of random data. Repeatable.")
@click.option("--rtol", type=float, default=1e-3, show_default=True, help="Relative tolerance for outputs to agree.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, allow_dash=True), help="Write the figures as JSON to this file ('-': stdout).")
def bench(model, compare, onnx_path, target, input_shapes, batch, threads, seconds, rounds, warmup, inputs, rtol, json_path):
    """Measure latency (mean, median, p90, p99) and throughput of MODEL (.so, or .onnx compiled
    first) over a time window after a warm-up, optionally against peer engines.

    Each engine runs in a process of its own, engines alternating round by round, with the same
    inputs (random, token ids in range, unless --input), threads and batch. Exits 1 when a
    peer's outputs disagree.
    """
    from sparsec.bench import BenchConfig, run_benchmark
    from sparsec.bench.report import format_report
    from sparsec.runtime.tvm_runtime import default_num_threads

    config = BenchConfig(
        model=model,
        onnx=onnx_path,
        compare=tuple(compare),
        target=target,
        input_shapes=list(input_shapes),
        batch=batch,
        threads=threads or default_num_threads(),
        seconds=seconds,
        rounds=rounds,
        warmup=warmup,
        inputs={name: Path(file) for name, file in (_split_input(spec) for spec in inputs)},
        rtol=rtol,
    )
    report = run_benchmark(config, progress=lambda line: click.echo(line, err=True))
    if json_path == "-":
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(format_report(report))
        if json_path:
            Path(json_path).write_text(json.dumps(report, indent=2) + "\n")
    if not all(c["outputs_agree"] for c in report["comparisons"].values()):
        sys.exit(1)


def _parse_block(text: str) -> tuple[int, int]:
    rows, sep, cols = text.lower().partition("x")
    if not sep or not rows.isdigit() or not cols.isdigit() or int(rows) < 1 or int(cols) < 1:
        raise SparsecError(f"--block {text!r}: expected RxC with whole numbers, e.g. 4x1")
    return int(rows), int(cols)


def _split_input(spec: str) -> tuple[str, str]:
    name, sep, file = spec.partition("=")
    if not sep or not name or not file:
        raise SparsecError(f"--input {spec!r}: expected NAME=FILE.npy")
    return name, file


def _read_input(spec: str):
    import numpy as np

    name, file = _split_input(spec)
    try:
        return name, np.load(file, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise SparsecError(f"--input {spec}: cannot read {file}: {err}") from None


if __name__ == "__main__":
    sys.exit(main())

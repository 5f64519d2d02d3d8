"""Human-readable rendering of a benchmark report."""

from __future__ import annotations


def format_report(report: dict) -> str:
    lines = [
        f"{report['model']}: batch {report['batch']}, {report['threads']} thread(s), "
        f"{report['rounds']} round(s) x {report['seconds_per_round']:g} s per engine",
        f"machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, {' '.join(report['machine']['isa'])}",
    ]
    header = ("engine", "items/s", "mean ms", "median", "p90", "p99", "round medians min/med/max", "runs")
    rows = []
    for engine, stats in report["engines"].items():
        latency, spread = stats["latency_ms"], stats["round_median_ms"]
        rows.append(
            (
                engine,
                f"{stats['throughput_items_per_s']:.1f}",
                f"{latency['mean']:.3f}",
                f"{latency['median']:.3f}",
                f"{latency['p90']:.3f}",
                f"{latency['p99']:.3f}",
                f"{spread['min']:.3f} / {spread['median']:.3f} / {spread['max']:.3f}",
                str(stats["runs"]),
            )
        )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    for peer, comparison in report["comparisons"].items():
        lines.append(describe_comparison(peer, comparison))
    return "\n".join(lines)


def describe_comparison(peer: str, comparison: dict) -> str:
    error = comparison["max_relative_error"]
    if comparison["outputs_agree"]:
        agreement = f"outputs agree with {peer} (max relative error {error:.1e})"
    elif error is None:
        agreement = f"OUTPUTS DISAGREE with {peer}: {comparison.get('detail', '')}"
    else:
        agreement = f"OUTPUTS DISAGREE with {peer}: max relative error {error:.1e} > {comparison['rtol']:.0e}"
    return f"{agreement}; sparsec is {comparison['speedup']:.2f}x {peer}'s speed (median latency)"

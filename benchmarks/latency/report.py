"""The three reports of a latency run: results.json (everything), results.md (one table, with the
machine, versions, date and command line from benchmarks.common) and latency.png (call latency)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from benchmarks.common import facts_markdown
from benchmarks.latency.measure import Row
from benchmarks.latency.plan import VARIANTS
from vdm.atomic import atomic_path, atomic_write_text


def fmt(value, digits: int = 2) -> str:
    """`digits` decimals; None as a dash."""
    if value is None:
        return "–"
    return f"{value:.{digits}f}"


def sig(value, digits: int = 3) -> str:
    """`digits` significant digits (milliseconds to videos/s span several magnitudes); None as a dash."""
    if value is None:
        return "–"
    return f"{value:.{digits}g}" if abs(value) < 10 ** digits else f"{value:.0f}"


def row_line(row: Row) -> str:
    """One line of progress for a measured row."""
    if row.status != "ok":
        return f"{row.status}: {row.reason}"
    parity = "" if row.psnr_db is None else f", PSNR {row.psnr_db:.1f} dB"
    return (f"call {row.call_ms_median:.2f} ms (p90 {row.call_ms_p90:.2f}), video {row.video_s_median:.2f} s, "
            f"{row.tflops:.4f} TFLOP/s, set-up {row.setup_s:.1f} s, peak {row.peak_mem_mb:.0f} MB{parity}")


def headline(rows: list[Row]) -> str:
    """Per batch: the fastest row by call median, and its speedup over torch eager fp32 in this run."""
    parts = []
    for batch in sorted({r.batch for r in rows}):
        ok = [r for r in rows if r.batch == batch and r.status == "ok"]
        if not ok:
            parts.append(f"batch {batch}: no row ran")
            continue
        best = min(ok, key=lambda r: r.call_ms_median)
        versus = (f"{best.speedup_vs_torch_fp32:.2f}x torch eager fp32" if best.speedup_vs_torch_fp32
                  else "no torch fp32 row to compare")
        parts.append(f"batch {batch}: **{best.backend} {best.precision}** {sig(best.call_ms_median)} ms/call, "
                     f"{sig(best.videos_per_s)} videos/s ({versus})")
    return "; ".join(parts)


def table_line(r: Row) -> str:
    setup = "" if r.setup_s is None else (f"set-up: {'' if r.export_s is None else f'export {r.export_s:.1f} + '}"
                                          f"load {r.load_s:.2f} + first call {r.first_call_s:.2f} s")
    notes = "; ".join(n for n in (r.reason.replace("|", "/"), setup) if n)
    speedup = "" if r.speedup_vs_torch_fp32 is None else f"{r.speedup_vs_torch_fp32:.2f}x"
    return (f"| {r.backend} | {r.precision} | {r.computes or '–'} | {r.batch} | {r.status} | "
            f"{sig(r.call_ms_median)} | {sig(r.call_ms_p90)} | {sig(r.video_s_median)} | "
            f"{sig(r.videos_per_s)} | {sig(r.tflops)} | {fmt(r.peak_mem_mb, 0)} | {fmt(r.setup_s, 1)} | "
            f"{fmt(r.psnr_db, 1)} | {speedup or '–'} | {notes} |")


def notes(report: dict, rows: list[Row]) -> list[str]:
    """What each column measured, under the table."""
    s = report["settings"]
    gflop = sorted({(r.batch, r.gflop_per_call) for r in rows if r.gflop_per_call})
    lines = [
        "Notes:",
        "- call: one denoiser call (network forward) at the row's batch; median and p90 of the timed calls, "
        + ("CUDA events on the current stream." if s["device"] == "cuda" else "time.perf_counter."),
        "- video: one whole generation (all sampler steps, plus the sampling loop's own work); videos/s = batch / median.",
        "- TFLOP/s: FLOPs of one fp32 call counted by torch.utils.flop_counter (" +
        ", ".join(f"{g:.2f} GFLOP at batch {b}" for b, g in gflop) + ") / the median call time.",
        f"- peak MB: {'; '.join(sorted({r.mem_kind for r in rows if r.mem_kind}))}; over the row's load, calls "
        "and videos. Memory a previous row freed but the allocator kept is not counted again.",
        "- set-up: export of the bundle the row loads (shared by the rows that load it; TensorRT adds its engine "
        "build) + backend load + first call (where torch.compile compiles).",
        "- PSNR: final videos against torch eager fp32 from the same seed and sampler settings; 200 dB = identical.",
        "- speedup: torch eager fp32's call median / this row's, same batch, same run.",
    ]
    if report["model"]["kind"] == "preset" and any(r.precision == "int8" for r in rows):
        lines.append("- int8 of random weights: every inner convolution quantized, calibrated on 2 videos, "
                     "quality gate off (its videos say nothing), so its PSNR is not a quality figure.")
    if report["skipped"]:
        lines.append(f"- not measured (the backend does not compute that precision on this device): "
                     f"{', '.join(report['skipped'])}.")
    return lines


def markdown(report: dict, rows: list[Row]) -> str:
    s, model = report["settings"], report["model"]
    weights = model.get("weights") or f"from the checkpoint (training step {model.get('step')})"
    lines = [
        f"# Latency: {report['name']}",
        "",
        *facts_markdown(report),
        f"- model: {model['kind']} {model.get('path') or model.get('preset')}, {model['parameters']:,} parameters, "
        f"weights {weights}",
        f"- settings: device {s['device']}, {s['threads']} thread(s), T={report['frames']}, "
        f"{report['size']}x{report['size']}, {s['sampler']} {s['steps']} steps, seed {s['seed']}; "
        f"{s['warmup']} warm-up + {s['calls']} timed calls, {s['videos']} timed videos per row; "
        f"{s['exporter']} exporter" + ("; --quick" if s["quick"] else ""),
        "",
        f"**Headline** (measured in this run): {headline(rows)}",
        "",
        "| backend | precision | computes | batch | status | call ms median | call ms p90 | video s median "
        "| videos/s | TFLOP/s | peak MB | set-up s | PSNR dB | speedup vs torch fp32 | notes |",
        "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        *map(table_line, rows),
        "",
        *notes(report, rows),
    ]
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], path: Path, title: str, subtitle: str) -> None:
    """Horizontal bars of the median call per backend/precision, grouped by batch, with p90 whiskers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.status == "ok"]
    colors = {name: plt.cm.tab10(i) for i, name in enumerate(VARIANTS)}
    labels, positions, y = [], [], 0.0
    fig, ax = plt.subplots(figsize=(10, 1.8 + 0.42 * (len(ok) + 1.5 * len({r.batch for r in ok}))))
    for batch in sorted({r.batch for r in ok}):
        group = [r for r in ok if r.batch == batch]
        if labels:  # a rule between batch groups
            ax.axhline(y + 0.75, color="0.7", linewidth=0.8)
        labels.append(f"batch {batch}")
        positions.append(y)
        y -= 1
        for r in group:
            ax.barh(y, r.call_ms_median, xerr=[[0], [r.call_ms_p90 - r.call_ms_median]], capsize=4,
                    color=colors[r.backend], height=0.7)
            ax.text(r.call_ms_p90, y, f"  {sig(r.call_ms_median)} ms", va="center", fontsize=9)
            labels.append(f"{r.backend} {r.precision}" + (f" (computes {r.computes})" if r.computes != r.precision else ""))
            positions.append(y)
            y -= 1
        y -= 0.5
    ax.set_yticks(positions, labels)
    for tick, label in zip(ax.get_yticklabels(), labels):
        if label.startswith("batch "):
            tick.set_fontweight("bold")
    if ok:
        widest = max(r.call_ms_p90 for r in ok)
        if widest / min(r.call_ms_median for r in ok) > 50:
            ax.set_xscale("log")
        else:
            ax.set_xlim(0, widest * 1.25)
    ax.set_xlabel("one denoiser call, ms (bar: median; whisker: p90)")
    ax.set_ylabel("backend, precision")
    ax.set_title(f"{title}\n{subtitle}", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    missing = list(dict.fromkeys(f"{r.backend} {r.precision} ({r.status})" for r in rows if r.status != "ok"))
    if missing:
        fig.text(0.01, 0.005, "not shown: " + ", ".join(missing), fontsize=8)
    fig.tight_layout(rect=(0, 0.03 if missing else 0, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def write_reports(report: dict, rows: list[Row], out: Path) -> list[Path]:
    """results.json, results.md and latency.png in `out`; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "results.json", out / "results.md", out / "latency.png"]
    atomic_write_text(paths[0], json.dumps(report | {"results": [dataclasses.asdict(r) for r in rows]}, indent=2,
                                           default=str) + "\n")
    atomic_write_text(paths[1], markdown(report, rows))
    m = report["machine"]
    plot(rows, paths[2], f"{report['name']}: denoiser call latency, T={report['frames']}, "
         f"{report['size']}x{report['size']}, {report['settings']['device']}",
         f"{m['cpu']} ({report['settings']['threads']} thread(s)), torch {report['versions']['torch']}, "
         f"{report['date'][:10]}")
    return paths

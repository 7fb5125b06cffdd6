"""Steps vs accuracy: how close does each sampler get to the exact sampling ODE, per network call?

    python -m benchmarks.steps [CHECKPOINT] [--samplers ddim,dpm++2m,unipc] [--spacings default]
        [--steps 5,8,10,15,20,30,50] [--seeds 0,1,2,3] [--videos-per-seed 2] [--reference-steps 1000]
        [--threads 2] [--out benchmarks/results] [--name NAME]

CHECKPOINT defaults to the bundled demo model. For each seed, the reference is deterministic DDIM
(eta = 0) with --reference-steps steps from that seed's noise: the probability-flow ODE solution on
the training timesteps. Each (sampler, spacing, steps) decodes the same noise; the row reports:

  PSNR       of its final videos against the reference (peak-to-peak 2, over all videos of all seeds)
  s/video    seconds of one generation (torch backend) / videos in it, median over the seeds
  quality    vdm.metrics on its videos: pass rate and mean property scores

The baseline is vdm's former default, DDIM with 50 linspace steps. The report names, per sampler and
spacing, the fewest steps whose PSNR reaches the baseline's, and times `vdm-run`'s generation (4
videos) with the former default against the current one (vdm.samplers.DEFAULT_*), interleaved, in
this run. Writes steps.json, steps.md and steps.png into OUT/NAME/.
"""
from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click
import torch

from benchmarks.common import RESULTS_DIR, facts_markdown, run_facts, time_once
from vdm.atomic import atomic_path, atomic_write_text
from vdm.fidelity import video_psnr
from vdm.metrics import score_videos
from vdm.runtime.generator import VideoGenerator
from vdm.runtime.sampling import initial_noise, sample, sampler_for
from vdm.samplers import DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLERS, SPACINGS

BASELINE = ("ddim", "linspace", 50)  # vdm's default before the few-step samplers
VDM_RUN_VIDEOS = 4  # vdm-run's default --num-samples


@dataclass
class Row:
    sampler: str
    spacing: str
    steps: int  # network calls per video
    psnr_db: float  # against the reference, over all videos
    psnr_db_per_seed: list[float]
    seconds_per_video: float  # median over seeds
    pass_rate: float
    property_scores: dict[str, float]


def comma_list(cast=str):
    return lambda ctx, param, value: [cast(v) for v in value.split(",") if v]


def generate(generator: VideoGenerator, noise: torch.Tensor, sampler: str, steps: int,
             spacing: str) -> tuple[torch.Tensor, float]:
    """(videos (B, C, T, H, W), seconds) of one deterministic generation from `noise`."""
    plan = sampler_for(generator.backend, sampler, steps, spacing)
    videos: list[torch.Tensor] = []
    seconds = time_once(lambda: videos.append(sample(generator.backend, noise, plan)), generator.device)
    return videos[0], seconds


def measure_row(generator: VideoGenerator, noises: list[torch.Tensor], references: list[torch.Tensor],
                sampler: str, spacing: str, steps: int) -> Row:
    runs = [generate(generator, noise, sampler, steps, spacing) for noise in noises]
    videos = torch.cat([v for v, _ in runs])
    quality = score_videos(videos)
    return Row(sampler, spacing, steps,
               video_psnr(videos, torch.cat(references)),
               [video_psnr(v, r) for (v, _), r in zip(runs, references)],
               statistics.median(s / v.shape[0] for v, s in runs), quality.pass_rate, quality.property_scores)


def fewest_steps(rows: list[Row], target_db: float) -> dict[str, int | None]:
    """'sampler spacing' -> the fewest steps whose PSNR reaches target_db (None: none did)."""
    best: dict[str, int | None] = {}
    for r in rows:
        key = f"{r.sampler} {r.spacing}"
        best.setdefault(key, None)
        if r.psnr_db >= target_db and (best[key] is None or r.steps < best[key]):
            best[key] = r.steps
    return best


def time_vdm_run_defaults(generator: VideoGenerator, repeats: int) -> dict:
    """Seconds of vdm-run's generation (4 videos, seed 0) with the former and the current default, interleaved."""
    settings = {"former": dict(sampler=BASELINE[0], spacing=BASELINE[1], num_steps=BASELINE[2]),
                "current": dict(sampler=DEFAULT_SAMPLER, num_steps=DEFAULT_STEPS)}
    times: dict[str, list[float]] = {k: [] for k in settings}
    for _ in range(repeats):
        for name, request in settings.items():
            times[name].append(time_once(lambda: generator.generate(VDM_RUN_VIDEOS, seed=0, **request),
                                         generator.device))
    medians = {k: statistics.median(v) for k, v in times.items()}
    return {"videos": VDM_RUN_VIDEOS, "settings": settings, "seconds": times, "median_s": medians,
            "speedup": medians["former"] / medians["current"]}


def vdm_run_line(run: dict | None) -> list[str]:
    if run is None:
        return []
    current = run["settings"]["current"]
    return ["", f"**vdm-run's generation** ({run['videos']} videos, medians of {len(run['seconds']['former'])} "
            f"interleaved runs): former default {run['median_s']['former']:.2f} s, current default "
            f"({current['sampler']} {current['num_steps']}) {run['median_s']['current']:.2f} s: "
            f"**{run['speedup']:.2f}x** faster."]


def markdown(report: dict, rows: list[Row]) -> str:
    s, base, quality = report["settings"], report["baseline"], report["reference_quality"]
    shape = report["video_shape"]
    lines = [f"# Steps vs accuracy: {report['name']}", "", *facts_markdown(report["facts"]),
             f"- model: {report['model']} (T={shape[1]}, {shape[2]}x{shape[3]}); torch backend, "
             f"{s['threads']} thread(s), {report['wall_s']:.0f} s in all",
             f"- reference: deterministic DDIM, {s['reference_steps']} steps, from the same noise; seeds "
             f"{', '.join(map(str, s['seeds']))}, {s['videos_per_seed']} videos each",
             f"- reference quality (vdm.metrics): pass rate {quality['pass_rate']:.2f}, "
             + ", ".join(f"{k} {v:.2f}" for k, v in quality["property_scores"].items()),
             "", f"**Baseline** (vdm's former default, {base['sampler']} {base['steps']} {base['spacing']}): "
             f"{base['psnr_db']:.2f} dB.", "",
             "**Fewest steps reaching the baseline:** " + "; ".join(
                 f"{k}: {v if v is not None else 'none measured'}" for k, v in report["fewest_steps"].items()) + ".",
             *vdm_run_line(report["vdm_run"]),
             "", "| sampler | spacing | steps | PSNR dB | PSNR per seed | s/video | pass rate | "
             + " | ".join(rows[0].property_scores) + " |",
             "|---|---|---:|---:|---|---:|---:|" + "---:|" * len(rows[0].property_scores)]
    for r in rows:
        lines.append(f"| {r.sampler} | {r.spacing} | {r.steps} | {r.psnr_db:.2f} | "
                     f"{' / '.join(f'{p:.1f}' for p in r.psnr_db_per_seed)} | {r.seconds_per_video:.3f} | "
                     f"{r.pass_rate:.2f} | " + " | ".join(f"{v:.2f}" for v in r.property_scores.values()) + " |")
    lines += ["", "PSNR: 10 log10(4 / MSE) over all videos, videos in [-1, 1]. s/video: the sampling loop "
              "only (the model is loaded once), time.perf_counter on the CPU, CUDA events on a GPU."]
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], baseline_db: float, path: Path, title: str) -> None:
    """PSNR against network calls, one line per sampler and spacing, the baseline dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for key in dict.fromkeys((r.sampler, r.spacing) for r in rows):
        line = sorted((r.steps, r.psnr_db) for r in rows if (r.sampler, r.spacing) == key)
        ax.plot(*zip(*line), marker="o", label=f"{key[0]} ({key[1]})")
    ax.axhline(baseline_db, color="0.4", linestyle="--",
               label=f"{BASELINE[0]} {BASELINE[2]} {BASELINE[1]} (former default)")
    ax.set_xscale("log")
    steps = sorted({r.steps for r in rows})
    ax.set_xticks(steps, [str(s) for s in steps])
    ax.minorticks_off()
    ax.set_xlabel("network calls per video")
    ax.set_ylabel("PSNR against the reference, dB")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--samplers", default="ddim,dpm++2m,unipc", show_default=True, callback=comma_list())
@click.option("--spacings", default="default", show_default=True, callback=comma_list(),
              help=f"Comma list of {', '.join(SPACINGS)}; 'default' is each sampler's own.")
@click.option("--steps", "step_counts", default="5,8,10,15,20,30,50", show_default=True, callback=comma_list(int))
@click.option("--seeds", default="0,1,2,3", show_default=True, callback=comma_list(int))
@click.option("--videos-per-seed", default=2, show_default=True, type=int)
@click.option("--reference-steps", default=1000, show_default=True, type=int)
@click.option("--vdm-run-repeats", default=3, show_default=True, type=int, help="Timed runs of each default (0 skips).")
@click.option("--threads", default=2, show_default=True, type=int)
@click.option("--out", default=str(RESULTS_DIR), show_default=True, type=click.Path(file_okay=False))
@click.option("--name", help="Results folder name (default steps-<model>-<date>).")
def main(checkpoint, samplers, spacings, step_counts, seeds, videos_per_seed, reference_steps, vdm_run_repeats,
         threads, out, name):
    """Accuracy of each sampler against the ODE solution, per network call, on CHECKPOINT (default: the demo)."""
    from vdm.demo import DEMO_CHECKPOINT

    facts = run_facts("benchmarks.steps", sys.argv[1:])
    torch.set_num_threads(threads)
    start = time.perf_counter()
    model = Path(checkpoint or DEMO_CHECKPOINT)
    generator = VideoGenerator(model, backend="torch", device="cpu")
    cfg = generator.model_config
    shape = (videos_per_seed, cfg.in_channels, cfg.frames, cfg.size, cfg.size)
    correlation = generator.backend.diffusion_config.frame_noise_correlation
    noises = [initial_noise(shape, seed, generator.device, correlation) for seed in seeds]
    click.echo(f"reference: ddim {reference_steps} steps, {len(seeds)} seeds x {videos_per_seed} videos")
    references = [generate(generator, noise, "ddim", reference_steps, "linspace")[0] for noise in noises]
    combos = [(s, sp if sp != "default" else SAMPLERS[s].default_spacing, n)
              for s in samplers for sp in spacings for n in step_counts]
    rows = []
    for sampler, spacing, steps in [BASELINE] + [c for c in dict.fromkeys(combos) if c != BASELINE]:
        rows.append(measure_row(generator, noises, references, sampler, spacing, steps))
        r = rows[-1]
        click.echo(f"{r.sampler:8s} {r.spacing:9s} {r.steps:4d} steps: {r.psnr_db:6.2f} dB, "
                   f"{r.seconds_per_video:.3f} s/video, pass {r.pass_rate:.2f}")
    baseline = rows[0]
    rows = sorted(rows, key=lambda r: (samplers.index(r.sampler) if r.sampler in samplers else -1,
                                       SPACINGS.index(r.spacing), r.steps))
    reference_quality = score_videos(torch.cat(references))
    name = name or f"steps-{'demo' if checkpoint is None else model.stem}-{facts['date'][:10]}"
    report = {"name": name, "model": str(model) if checkpoint else "the bundled demo (vdm/demo/demo.safetensors)",
              "video_shape": list(shape[1:]), "facts": facts,
              "settings": {"samplers": samplers, "spacings": spacings, "steps": step_counts, "seeds": seeds,
                           "videos_per_seed": videos_per_seed, "reference_steps": reference_steps, "threads": threads},
              "baseline": dataclasses.asdict(baseline),
              "reference_quality": {"pass_rate": reference_quality.pass_rate,
                                    "property_scores": reference_quality.property_scores},
              "fewest_steps": fewest_steps(rows, baseline.psnr_db),
              "vdm_run": time_vdm_run_defaults(generator, vdm_run_repeats) if vdm_run_repeats else None}
    report["wall_s"] = time.perf_counter() - start
    folder = Path(out) / name
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "steps.json", json.dumps(report | {"rows": [dataclasses.asdict(r) for r in rows]},
                                                       indent=2) + "\n")
    atomic_write_text(folder / "steps.md", markdown(report, rows))
    plot(rows, baseline.psnr_db, folder / "steps.png",
         f"{name}: PSNR against DDIM-{reference_steps} from the same noise ({len(seeds) * videos_per_seed} videos)")
    click.echo(f"wrote {folder}/steps.json, steps.md, steps.png")


if __name__ == "__main__":
    main()

"""`vdm-eval`: score a model trained on the synthetic bouncing shapes (vdm.evaluate, vdm.metrics)."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import click

from vdm.cli.flags import (autoguide_flags, backend_flags, chosen_guidance, chosen_labels, chosen_restarts,
                           class_flags, guidance_note, load_generator, model_and_guide, pop_backend_options,
                           sampler_flags)
from vdm.errors import VdmError, cli_errors
from vdm.evaluate import (HELD_OUT_SEED, LOSS_BATCH_SIZE, finished_videos, held_out_loss, held_out_shape_counts,
                          one_step_videos, passes_by_shape_count)
from vdm.runtime.backend import synchronize
from vdm.samplers import SAMPLERS


def parse_snrs(text: str) -> list[float]:
    """--from-snr '0.01,0.1,1' -> [0.01, 0.1, 1.0], refusing anything that is not a positive number."""
    snrs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            snr = float(item)
        except ValueError:
            snr = math.nan
        if not (math.isfinite(snr) and snr > 0):
            raise VdmError(f"--from-snr: {item!r} is not a positive SNR (give a comma-separated list, e.g. 0.01,0.1,1)")
        snrs.append(snr)
    return snrs


def held_out_summary(report: dict) -> str:
    """One line for a QualityReport.to_dict() of videos made from held-out clips, with their
    `by_shapes` table: one shape is the easy case, several the one that touching edges fail."""
    videos = report["videos"]
    kept = sum(v["properties"]["count"]["passed"] for v in videos)
    by_shapes = ", ".join(f"{shapes} shape{'s' if int(shapes) > 1 else ''} {passing}/{total}"
                          for shapes, (passing, total) in report["by_shapes"].items())
    return (f"count passes {kept}/{len(videos)}, {report['colors_per_video']:.2f} colours per video, "
            f"pass rate {report['pass_rate']:.3f} (clips of {by_shapes})")


def scored_from_held_out(videos, shape_counts: list[int]) -> dict:
    """The metric's report on videos made from held-out clips, with passes by the clip's shape count."""
    from vdm.metrics import score_videos

    report = score_videos(videos).to_dict()
    report["by_shapes"] = passes_by_shape_count([v["passed"] for v in report["videos"]], shape_counts)
    return report


def own_network(backend):
    """The backend of the model itself: an autoguided one's main network (guidance is for sampling)."""
    from vdm.runtime.autoguidance import AutoguidedBackend

    return backend.main if isinstance(backend, AutoguidedBackend) else backend


def check_flags(num_samples: int, steps: int, loss_batches: int, one_step_snr: float, from_snrs: list[float],
                json_path: str | None) -> None:
    """Flag mistakes, before anything loads."""
    if not (math.isfinite(one_step_snr) and one_step_snr >= 0):
        raise VdmError(f"--one-step-snr must be 0 (skip the check) or a positive SNR, got {one_step_snr}")
    if num_samples < 1:
        raise VdmError(f"--num-samples must be at least 1, got {num_samples}")
    if steps < 1:
        raise VdmError(f"--steps must be at least 1, got {steps}")
    if loss_batches < 0:
        raise VdmError(f"--loss-batches must be 0 (skip the held-out loss) or more, got {loss_batches}")
    if from_snrs and not loss_batches:
        raise VdmError("--from-snr samples from the held-out clips of --loss-batches; give --loss-batches 1 or more")
    if json_path is not None and not Path(json_path).parent.is_dir():
        raise VdmError(f"--json {json_path}: directory {Path(json_path).parent} does not exist; create it first")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", required=False, type=click.Path())
@backend_flags
@autoguide_flags
@sampler_flags
@click.option("--num-samples", "-n", default=16, show_default=True, type=int, help="Videos to generate and score.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the sampled videos.")
@class_flags
@click.option("--loss-batches", default=4, show_default=True, type=int,
              help=f"Held-out batches of {LOSS_BATCH_SIZE} clips for the denoising loss; 0 skips it.")
@click.option("--one-step-snr", default=0.1, show_default=True, type=float,
              help="Also score the clean videos predicted in one call from held-out clips noised to this "
                   "SNR (a diagnosis: does the network keep a clip's content at that noise?); 0 skips it.")
@click.option("--from-snr", "from_snr", default="", metavar="SNRS",
              help="Also finish sampling (this sampler and step count) from the held-out clips noised to each "
                   "of these comma-separated SNRs, e.g. 0.01,0.1,1: at which noise levels are videos lost?")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the full report here.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@cli_errors
def main(model, backend, device, precision, autoguide, autoguide_weight, sampler, steps, spacing, restart, num_samples,
         seed, class_label, guidance, loss_batches, one_step_snr, from_snr, json_path, debug, **backend_options):
    """Score MODEL (a checkpoint .safetensors or an exported bundle directory) trained on the synthetic
    bouncing shapes: the pass rate of generated videos under vdm.metrics, and the held-out loss.

    Without MODEL, the bundled demo model is used, with classifier-free guidance (--guidance) and
    restarted once (--restart). With autoguidance, the held-out loss is the model's own; the videos
    are the guided sampler's. --from-snr finishes held-out clips without restarts.
    """
    from vdm.atomic import atomic_write_text
    from vdm.metrics import score_videos

    from_snrs = parse_snrs(from_snr)
    check_flags(num_samples, steps, loss_batches, one_step_snr, from_snrs, json_path)
    options = pop_backend_options(backend, backend_options)
    restarts = chosen_restarts(restart, demo=model is None)
    guidance = chosen_guidance(guidance, demo=model is None)
    model, autoguide, weight = model_and_guide(model, backend, autoguide, autoguide_weight)
    seconds = {}
    start = time.perf_counter()
    generator = load_generator(model, backend, device, precision, options, autoguide, weight)
    seconds["load"] = time.perf_counter() - start
    click.echo(f"backend: {generator.backend.describe()}, loaded in {seconds['load']:.2f} s")

    labels = chosen_labels(generator.model_config, class_label, num_samples, seed)
    _, plan = generator.check_request(num_samples, num_steps=steps, sampler=sampler, guidance=guidance,
                                      class_label=labels, spacing=spacing, restarts=restarts)
    start = time.perf_counter()
    videos = generator.generate(num_samples, num_steps=steps, sampler=sampler, spacing=spacing, seed=seed,
                                guidance=guidance, class_label=labels, restarts=restarts)  # (N, C, T, H, W)
    synchronize(generator.device)
    seconds["sample"] = time.perf_counter() - start
    guided = guidance_note(guidance, ", ")
    click.echo(f"sampled {num_samples} videos {tuple(videos.shape[1:])} ({plan.describe()}, seed {seed}{guided}) "
               f"in {seconds['sample']:.2f} s")

    start = time.perf_counter()
    report = score_videos(videos)
    seconds["score"] = time.perf_counter() - start
    click.echo(report.summary())

    loss = None
    if loss_batches:
        start = time.perf_counter()
        loss = held_out_loss(own_network(generator.backend), loss_batches)
        seconds["loss"] = time.perf_counter() - start
        click.echo(f"held-out loss {loss:.4f} ({loss_batches} x {LOSS_BATCH_SIZE} clips, data seed "
                   f"{HELD_OUT_SEED}) in {seconds['loss']:.2f} s")

    shape_counts = held_out_shape_counts(generator.backend, loss_batches)
    one_step = None
    if one_step_snr and loss_batches:
        start = time.perf_counter()
        predicted, timestep = one_step_videos(generator.backend, one_step_snr, loss_batches)
        one_step = {"snr": one_step_snr, "timestep": timestep, **scored_from_held_out(predicted, shape_counts)}
        seconds["one_step"] = time.perf_counter() - start
        click.echo(f"one step from held-out clips at SNR {one_step_snr:g} (t={timestep}): "
                   f"{held_out_summary(one_step)}, in {seconds['one_step']:.2f} s")

    finished = []
    for snr in from_snrs:
        start = time.perf_counter()
        videos_from, timesteps = finished_videos(generator.backend, snr, sampler, steps, spacing, loss_batches)
        finished.append({"snr": snr, "timesteps": timesteps, **scored_from_held_out(videos_from, shape_counts)})
        seconds[f"from_snr_{snr:g}"] = time.perf_counter() - start
        click.echo(f"from held-out clips at SNR {snr:g} (t={timesteps[0]}, {len(timesteps)} steps): "
                   f"{held_out_summary(finished[-1])}, in {seconds[f'from_snr_{snr:g}']:.2f} s")

    if json_path is not None:
        result = {
            "model": str(model), "autoguide": None if autoguide is None else str(autoguide),
            "autoguide_weight": weight, "backend": generator.backend.describe(), "num_samples": num_samples,
            "steps": steps, "sampler": sampler, "spacing": spacing or SAMPLERS[sampler].default_spacing,
            "restarts": [str(r) for r in restarts], "network_calls": plan.num_calls,
            "seed": seed, "class_labels": labels, "guidance": guidance, "video_shape": list(videos.shape[1:]),
            "held_out_loss": loss, "loss_batches": loss_batches, "loss_batch_size": LOSS_BATCH_SIZE,
            "held_out_seed": HELD_OUT_SEED, "one_step": one_step, "from_snr": finished, "seconds": seconds, **report.to_dict(),
        }
        atomic_write_text(json_path, json.dumps(result, indent=2) + "\n")
        click.echo(f"wrote {json_path}")


if __name__ == "__main__":
    main()

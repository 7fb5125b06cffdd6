"""`python -m benchmarks.latency`: the flags, their checks (before any work), and the run from the
model to the three reports. The package docstring says what each column measures."""
from __future__ import annotations

import dataclasses
import datetime
import os
import tempfile
import time
from pathlib import Path

import click
import torch

from benchmarks.common import PACKAGES, RESULTS_DIR, command_line, cpu_flags_text, machine_info, utc_date
from benchmarks.latency.measure import References, Row, Run, add_speedups, measure_row
from benchmarks.latency.model import Bundles, prepare_model
from benchmarks.latency.plan import DEFAULT_PRECISIONS, PRECISIONS, VARIANTS, Settings, plan_rows
from benchmarks.latency.report import headline, row_line, write_reports
from vdm.config import check_video_shape, presets, to_dict
from vdm.errors import VdmError
from vdm.machine import software_versions
from vdm.runtime.backend import resolve_device
from vdm.samplers import DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLERS

MODULE = "benchmarks.latency"
PRECISION_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")  # the CPU flags shown: they decide precision speed
THREADED = list(dict.fromkeys(v.backend for v in VARIANTS.values() if "threads" in v.declared_options()))
QUICK_SKIPS = ("torch-compile",)  # --quick leaves these out unless --backends names them (inductor's compile)


class KeepsArgv(click.Command):
    """A click command that keeps its arguments as given, for the report's command line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["argv"] = list(args)
        return super().parse_args(ctx, args)


def comma_list(choices: tuple[str, ...] | None = None, cast=str):
    """A click callback parsing 'a,b,c' into a list (None when the flag is not given)."""
    def parse(ctx, param, text: str | None) -> list | None:
        if text is None:
            return None
        try:
            items = [cast(s.strip()) for s in text.split(",") if s.strip()]
        except ValueError:
            raise click.BadParameter(f"{text!r}: give a comma-separated list of integers") from None
        bad = [i for i in items if choices is not None and i not in choices]
        if bad or not items:
            raise click.BadParameter(f"{text!r}: choose from {', '.join(choices)}" if choices
                                     else f"{text!r}: give a comma-separated list")
        return items
    return parse


def settings_from(flags: dict) -> Settings:
    """Fill the defaults (--quick's where it sets them) and check flag combinations before any work."""
    model, preset, quick = flags["model"], flags["preset"], flags["quick"]
    if (model is None) == (preset is None):
        raise click.UsageError("give MODEL (a checkpoint or bundle) or --preset NAME, not both and not neither")
    if model is not None and not model.exists():
        raise click.UsageError(f"MODEL {model} does not exist")

    def pick(name: str, normal, fast):
        """The flag's value when given, else the normal or --quick default."""
        return flags[name] if flags[name] is not None else (fast if quick else normal)

    counts = {"calls": pick("calls", 30, 5), "videos": pick("videos", 3, 2), "steps": pick("steps", DEFAULT_STEPS, 5)}
    if min(counts.values()) < 1:
        raise click.UsageError("--steps, --calls and --videos must be at least 1")
    counts["warmup"] = pick("warmup", 5, 3)
    if counts["warmup"] < 0:
        raise click.UsageError("--warmup must be 0 or more")
    batches = pick("batch", [1, 4], [1])
    if min(batches) < 1 or (flags["threads"] is not None and flags["threads"] < 1):
        raise click.UsageError("--batch and --threads take positive integers")
    try:
        device = resolve_device(flags["device"]).type
    except VdmError as e:
        raise click.UsageError(str(e)) from None
    backends = pick("backends", list(VARIANTS), [b for b in VARIANTS if b not in QUICK_SKIPS])
    stem = preset or (model.stem if model.is_file() else model.resolve().name)
    name = flags["name"] or f"{stem}-{device}-{datetime.date.today().isoformat()}"
    return Settings(model=model, preset=preset, backends=[b for b in VARIANTS if b in backends],
                    precisions=[q for q in PRECISIONS if q in pick("precisions", list(DEFAULT_PRECISIONS), ["fp32"])],
                    batches=sorted(set(batches)), frames=flags["frames"], size=flags["size"], sampler=flags["sampler"],
                    device=device, quick=quick, name=name, out=flags["out"] / name, threads=flags["threads"],
                    exporter=pick("exporter", "dynamo", "torchscript"), seed=flags["seed"], **counts)


def warn_if_busy(machine: dict, settings: Settings) -> None:
    """Say when the CPU threads asked for will compete with other processes for the cores."""
    busy = machine["load_average_at_start"][0]
    if settings.device == "cpu" and settings.threads > 1 and busy + settings.threads > machine["usable_cores"] + 0.5:
        # Measured here: torch's 2 threads on 2 cores, one busy with training, ran the tiny UNet 7x slower than 1.
        click.echo(f"warning: load average {busy} on {machine['usable_cores']} cores: {settings.threads} thread(s) "
                   "will compete with other processes and the timings will show it; consider --threads 1")


def measure_all(settings: Settings, work: Path) -> tuple[Run, list[Row], list[str]]:
    """(what the rows shared, every row measured, the n/a combinations skipped)."""
    try:
        model = prepare_model(settings, work)
        frames = settings.frames or model.model_config.frames
        size = settings.size or model.model_config.size
        check_video_shape(model.model_config, frames, size, size)
    except VdmError as e:
        raise click.UsageError(str(e)) from None
    log = lambda line: click.echo(f"    {line}")  # noqa: E731
    run = Run(settings, model, Bundles(model, settings, work, frames, size, log),
              References(model, settings.device, log), frames, size, log)
    jobs, skipped = plan_rows(settings.backends, settings.precisions, settings.batches, settings.device)
    rows = []
    for i, (variant, precision, batch) in enumerate(jobs, 1):
        click.echo(f"[{i}/{len(jobs)}] {variant.name} {precision} batch {batch}")
        rows.append(measure_row(variant, precision, batch, run))
        click.echo(f"    {row_line(rows[-1])}")
    return run, rows, skipped


@click.command(cls=KeepsArgv, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option("--preset", type=click.Choice(list(presets())),
              help="A seeded random model of this preset instead of MODEL.")
@click.option("--backends", callback=comma_list(tuple(VARIANTS)),
              help=f"Comma list of {', '.join(VARIANTS)} (default: all; quick: all but {', '.join(QUICK_SKIPS)}).")
@click.option("--precisions", callback=comma_list(PRECISIONS),
              help="Default: fp32,fp16,bf16 (quick: fp32); int8 on request (its export calibrates and gates).")
@click.option("--batch", callback=comma_list(cast=int), help="Default: 1,4 (quick: 1).")
@click.option("--frames", type=int, help="T (default: the model's).")
@click.option("--size", type=int, help="H = W (default: the model's).")
@click.option("--sampler", default=DEFAULT_SAMPLER, show_default=True, type=click.Choice(list(SAMPLERS)))
@click.option("--steps", type=int, help=f"Sampler steps per video (default {DEFAULT_STEPS}; quick: 5).")
@click.option("--device", default="auto", help="auto, cpu or cuda (default auto: cuda when there is one).")
@click.option("--quick", is_flag=True, help="A smoke run; see the package docstring.")
@click.option("--name", help="Results folder name (default <model>-<device>-<date>).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=RESULTS_DIR, show_default=True,
              help="Parent of the results folder.")
@click.option("--warmup", type=int, help="Warm-up calls per row (default 5; quick: 3).")
@click.option("--calls", type=int, help="Timed calls per row (default 30; quick: 5).")
@click.option("--videos", type=int, help="Timed videos per row (default 3; quick: 2).")
@click.option("--threads", type=int, help=f"CPU threads for every engine: torch, {', '.join(THREADED)}.")
@click.option("--exporter", type=click.Choice(["dynamo", "torchscript"]), help="Default dynamo (quick: torchscript).")
@click.option("--seed", type=int, default=0, show_default=True)
def main(**flags) -> None:
    """Latency of every backend on MODEL (a checkpoint or bundle directory): a denoiser call, a whole
    video, memory, TFLOP/s, set-up and parity. `python -m pydoc benchmarks.latency` explains each column."""
    ctx = click.get_current_context()
    settings = settings_from(flags)
    start = time.perf_counter()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    settings.threads = torch.get_num_threads()
    machine, date = machine_info(PRECISION_FLAGS), utc_date()
    click.echo(f"{machine['cpu']} ({cpu_flags_text(machine)}); GPU {machine['gpu'] or 'none'}; "
               f"{settings.threads} thread(s)")
    warn_if_busy(machine, settings)
    with tempfile.TemporaryDirectory(prefix="vdm-latency-") as tmp:
        run, rows, skipped = measure_all(settings, Path(tmp))
    add_speedups(rows)
    # Versions are read after the rows: importing openvino (or tensorrt) for its version first would take
    # that import out of its first row's peak memory.
    report = {"name": settings.name, "machine": machine, "versions": software_versions(PACKAGES), "date": date,
              "command": command_line(MODULE, ctx.meta["argv"]), "settings": dataclasses.asdict(settings),
              "model": run.model.info | {"config": to_dict(run.model.model_config)}, "frames": run.frames,
              "size": run.size, "skipped": skipped, "wall_s": time.perf_counter() - start,
              "load_average_at_end": [round(v, 2) for v in os.getloadavg()]}
    for path in write_reports(report, rows, settings.out):
        click.echo(f"wrote {path}")
    click.echo(f"headline: {headline(rows).replace('**', '')}")
    errors = [r for r in rows if r.status == "error"]
    if errors:
        click.echo(f"{len(errors)} row(s) failed: see 'error' rows in results.md", err=True)
    ctx.exit(1 if errors else 0)

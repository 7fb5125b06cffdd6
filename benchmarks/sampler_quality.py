"""Which sampler's videos pass the quality check? vdm.metrics for each sampler and step count.

    python -m benchmarks.sampler_quality [CHECKPOINT] [--plans unipc:6,ddim:50,dpm++2m-sde:10] [-n 64]
    python -m benchmarks.sampler_quality --plans unipc:6,unipc:6+0.01:6    # without and with a restart

`benchmarks/steps.py` measures how close each deterministic sampler comes to the probability-flow
ODE's video; this scores the videos themselves against the synthetic data's rules (`vdm.metrics`),
so stochastic samplers, which solve another equation, compare too. A plan may add restart passes
(`+SNR:STEPS`, vdm.samplers.Restart). Every plan starts from the same noise (`--seed`). Without
CHECKPOINT, the bundled demo, with each video's colour label and its guidance. Writes results.json
and results.md under
--out/NAME (default: benchmarks/results/sampler-quality-<model>-<date>).
"""
from __future__ import annotations

import datetime
import json
import re
from pathlib import Path

import click

from benchmarks.common import RESULTS_DIR, facts_markdown, run_facts
from vdm.errors import VdmError, cli_errors
from vdm.metrics import PROPERTIES
from vdm.samplers import Restart

DEFAULT_PLANS = "unipc:6,dpm++2m:10,ddim:50,ddpm:50,dpm++2m-sde:10,dpm++2m-sde:20"


def parse_plans(text: str) -> list[tuple[str, int, tuple[Restart, ...]]]:
    """'unipc:6,ddim:50+0.01:6' -> [('unipc', 6, ()), ('ddim', 50, (Restart(0.01, 6),))], refusing
    unknown samplers, bad counts and bad restarts."""
    from vdm.samplers import SAMPLERS, parse_restarts

    plans = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        # The sampler's name may hold '+' (dpm++2m): restarts start after its step count.
        match = re.fullmatch(r"(?P<name>[^:]+):(?P<steps>\d+)(?P<restarts>(\+[^+]*)*)", item)
        if match is None or match["name"] not in SAMPLERS or int(match["steps"]) < 1:
            raise VdmError(f"--plans: {item!r} is not SAMPLER:STEPS[+SNR:STEPS...] "
                           f"(samplers: {', '.join(SAMPLERS)})")
        name, steps, restarts = match["name"], match["steps"], match["restarts"].split("+")[1:]
        if any(not restart.strip() for restart in restarts):
            raise VdmError(f"--plans: {item!r} has an empty restart after '+'")
        try:
            plans.append((name, int(steps), parse_restarts(",".join(restarts))))
        except VdmError as error:
            raise VdmError(f"--plans: {error}") from None
    if not plans:
        raise VdmError("--plans names no sampler")
    return plans


def markdown(report: dict) -> str:
    lines = [f"# Sampler quality: {report['model']}", "",
             f"{report['num_samples']} videos per plan (torch, fp32) from seed {report['seed']} "
             "(the same noise for every plan"
             + (f"; each video the label of a synthetic clip, guidance {report['guidance']:g}"
                if report.get("guidance", 1) != 1 else "") + "), "
             "scored by `vdm.metrics`; count pass = the share of videos whose shapes keep their colours and "
             "number throughout; colours = palette colours found per video (the data has 1-3).", "",
             *facts_markdown(report["facts"]), "",
             "| sampler | steps | restarts | pass rate | count pass | " + " | ".join(PROPERTIES) + " | colours |",
             "|---|---:|---|---:|---:|" + "---:|" * len(PROPERTIES) + "---:|"]
    for row in report["rows"]:
        scores = " | ".join(f"{row['property_scores'][p]:.2f}" for p in PROPERTIES)
        restarts = ", ".join(row["restarts"]) or "-"
        lines.append(f"| {row['sampler']} | {row['steps']} | {restarts} | {row['pass_rate']:.3f} | "
                     f"{row['property_pass_rates']['count']:.3f} | {scores} | {row['colors_per_video']:.2f} |")
    return "\n".join(lines) + "\n"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", required=False, type=click.Path(dir_okay=False))
@click.option("--plans", default=DEFAULT_PLANS, show_default=True,
              help="SAMPLER:STEPS, comma-separated; +SNR:STEPS after one adds a restart pass.")
@click.option("--num-samples", "-n", default=64, show_default=True, type=click.IntRange(1), help="Videos per plan.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0), help="Seed of the noise.")
@click.option("--guidance", type=float,
              help="Classifier-free guidance scale for a class-conditional model, whose videos each get the label "
                   "of a synthetic clip, as vdm-eval gives them [default: 1; the bundled demo: its own].")
@click.option("--out", default=str(RESULTS_DIR), show_default=True, type=click.Path(file_okay=False),
              help="Where the results folder goes.")
@click.option("--name", help="Results folder under --out.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@cli_errors
def main(checkpoint, plans, num_samples, seed, guidance, out, name, debug):
    """Score CHECKPOINT's videos (default: the bundled demo) under each sampler plan."""
    import sys

    from vdm.atomic import atomic_write_text
    from vdm.cli.flags import chosen_guidance, chosen_labels
    from vdm.demo import DEMO_CHECKPOINT
    from vdm.metrics import score_videos
    from vdm.runtime.generator import VideoGenerator

    plan_list = parse_plans(plans)
    model = Path(checkpoint or DEMO_CHECKPOINT)
    folder = Path(out) / (name or f"sampler-quality-{model.stem}-{datetime.date.today().isoformat()}")
    folder.mkdir(parents=True, exist_ok=True)
    # fp32 whatever the CPU: auto computes bf16 where there are bf16 units, and scores must not
    # change with the machine they were measured on.
    generator = VideoGenerator(model, backend="torch", device="cpu", precision="fp32")
    guidance = chosen_guidance(guidance, demo=checkpoint is None)
    labels = chosen_labels(generator.model_config, None, num_samples, seed)
    label = str(model) if checkpoint else "the bundled demo (vdm/demo/demo.safetensors)"
    report = {"model": label, "num_samples": num_samples, "seed": seed, "guidance": guidance,
              "facts": run_facts("benchmarks.sampler_quality", sys.argv[1:]), "rows": []}
    for sampler, steps, restarts in plan_list:
        quality = score_videos(generator.generate(num_samples, num_steps=steps, sampler=sampler, seed=seed,
                                                  guidance=guidance, class_label=labels, restarts=restarts))
        row = {"sampler": sampler, "steps": steps, "restarts": [str(r) for r in restarts], **quality.to_dict()}
        del row["videos"]
        report["rows"].append(row)
        again = "".join(f"+{r}" for r in restarts)
        click.echo(f"{sampler} {steps} steps{again}: pass {quality.pass_rate:.3f}, count pass "
                   f"{quality.property_pass_rates['count']:.3f}, colours {quality.colors_per_video:.2f}")
    atomic_write_text(folder / "results.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(folder / "results.md", markdown(report))
    click.echo(f"wrote {folder}/results.md")


if __name__ == "__main__":
    main()

"""`vdm-run`: generate videos from a checkpoint or a bundle on any backend."""
from __future__ import annotations

import time
from pathlib import Path

import click
from tqdm import tqdm

from vdm.cli.flags import (autoguide_flags, backend_flags, chosen_guidance, chosen_labels, chosen_restarts,
                           class_flags, guidance_note, load_generator, model_and_guide, pop_backend_options,
                           sampler_flags)
from vdm.errors import VdmError, cli_errors
from vdm.runtime.backend import synchronize


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", required=False, type=click.Path())
@backend_flags
@autoguide_flags
@sampler_flags
@click.option("--eta", default=0.0, show_default=True, type=float, help="DDIM noise (0 = deterministic; ddim only).")
@click.option("--num-samples", "-n", default=4, show_default=True, type=int)
@click.option("--frames", type=int, help="Frames T (default: the model's).")
@click.option("--size", type=int, help="Frame size H = W (default: the model's).")
@click.option("--seed", default=0, show_default=True, type=int)
@class_flags
@click.option("--out", default="samples", show_default=True, type=click.Path(file_okay=False))
@click.option("--fps", default=8, show_default=True, type=int)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@cli_errors
def main(model, backend, device, precision, autoguide, autoguide_weight, sampler, steps, spacing, restart, eta,
         num_samples, frames, size, seed, guidance, class_label, out, fps, debug, **backend_options):
    """Generate videos from MODEL (a checkpoint .safetensors or an exported bundle directory).

    Without MODEL, the bundled demo model (bouncing shapes) is used: each video gets the shapes
    label of a synthetic clip (--class) and is sampled with classifier-free guidance (--guidance) and
    restarted once (--restart).
    """
    from vdm.video import write_videos

    check_counts(num_samples=num_samples, frames=frames, size=size, fps=fps)
    options = pop_backend_options(backend, backend_options)
    restarts = chosen_restarts(restart, demo=model is None)
    guidance = chosen_guidance(guidance, demo=model is None)
    model, autoguide, weight = model_and_guide(model, backend, autoguide, autoguide_weight)
    t0 = time.perf_counter()
    generator = load_generator(model, backend, device, precision, options, autoguide, weight)
    load_s = time.perf_counter() - t0
    click.echo(f"backend: {generator.backend.describe()}, loaded in {load_s:.2f} s")

    # A bad request fails before any work or progress bar.
    class_label = chosen_labels(generator.model_config, class_label, num_samples, seed)
    _, plan = generator.check_request(num_samples, frames, size, size, steps, sampler, guidance, class_label,
                                      spacing, eta, restarts)
    guided = guidance_note(guidance, "; ")
    click.echo(f"sampler: {plan.describe()}{guided}")
    if isinstance(class_label, list):
        click.echo(f"class labels {class_label} (each video's own, drawn by --seed from the data's mix; --class "
                   "sets one for all)")
    bar = tqdm(total=plan.num_calls, desc="sampling", unit="step", dynamic_ncols=True)
    step_times: list[float] = []
    last = [time.perf_counter()]

    def on_step(i: int, total: int) -> None:
        # Synchronizing here only affects the printed timing; the loop itself never waits on the host.
        synchronize(generator.device)
        now = time.perf_counter()
        step_times.append(now - last[0])
        last[0] = now
        bar.update(1)

    start = time.perf_counter()
    try:
        videos = generator.generate(num_samples, num_frames=frames, height=size, width=size, num_steps=steps,
                                    sampler=sampler, seed=seed, guidance=guidance, class_label=class_label,
                                    eta=eta, spacing=spacing, restarts=restarts, on_step=on_step)
        synchronize(generator.device)
    finally:
        bar.close()  # an error then starts on a line of its own
    total_s = time.perf_counter() - start
    paths, earlier = write_videos(Path(out), videos.cpu(), fps)
    median_ms = 1000 * sorted(step_times)[len(step_times) // 2]
    click.echo(f"{num_samples} videos {tuple(videos.shape[1:])}: {total_s:.2f} s total, "
               f"{median_ms:.1f} ms per step (median of {len(step_times)})")
    replaced = f" (replacing the {len(earlier)} sample files an earlier run left there)" if earlier else ""
    click.echo(f"wrote {len(paths) - 1} mp4 + {paths[-1]} to {out}{replaced}")


def check_counts(**counts: int | None) -> None:
    """Flags that count something must be positive when given (0 is not 'the default')."""
    for name, value in counts.items():
        if value is not None and value < 1:
            raise VdmError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")


if __name__ == "__main__":
    main()

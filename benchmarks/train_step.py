"""How fast does vdm's Trainer train, per device, process count, thread count, memory layout and precision?

    python benchmarks/train_step.py [--preset tiny] [--config TOML] [--batch-size N] [--device cpu|cuda]
        [--world-sizes 1,2] [--threads 1,2] [--layouts auto|contiguous,channels_last_3d]
        [--precisions auto|fp32,bf16] [--workers N] [--compile] [--steps 5] [--repeats 5] [--warmup 3]
        [--baseline DIR [--baseline-label LABEL]] [--name NAME] [--out benchmarks/results]

Each row runs `Trainer.train_step()` (data, noise, forward, backward, all-reduce, clipping, AdamW,
EMA) in fresh processes: one, or N started by torchrun (`python -m torch.distributed.run
--standalone`), gloo on the CPU and NCCL on CUDA, the batch split over them. After --warmup steps it
times --repeats blocks of --steps steps (the device synchronized at the end of each block) and
reports the median block (ONEDNN_MAX_CPU_ISA, when set, caps the instruction sets oneDNN uses, and
is reported):
  steps/s    optimizer steps per second; clips/s = steps/s x the global batch
  TFLOP/s    forward + backward FLOPs of the global batch per step (torch.utils.flop_counter on the
             fp32 model, counted on the meta device) x steps/s
  data       ms per step the step waited on the host for its batch (the trainer's own counter), and,
             for the synthetic data, the time to draw one rank's clips with the numpy reference
             renderer and with the batched torch renderer on the device
--baseline DIR adds one-process rows timed with another vdm source tree (a `git archive` of an older
commit), imported through PYTHONPATH; it uses only `Trainer(preset, out, device).train_step()`.

Threads (--threads) are per process; combinations needing more threads than the machine has cores
are skipped. Writes results.json and results.md into OUT/NAME/ (NAME: train-step-<device>-<date>).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


# ------------------------------------------------------------------------------- one measurement
# Runs in the measured process(es); imports vdm from whatever tree PYTHONPATH (or the install) gives.


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn, device: torch.device, runs: int = 5) -> float:
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def draw_times(trainer, device: torch.device, step: int) -> dict:
    """ms to draw one rank's clips of `step`: numpy reference renderer, and torch on the device."""
    from vdm.batches import step_indices  # this tree's: the caller asks only a Trainer that has batches
    from vdm.data import SyntheticShapes, render_scenes, scene_arrays, stack_scenes

    data = trainer.batches.dataset
    if not isinstance(data, SyntheticShapes):
        return {}
    indices = step_indices(step, trainer.train_cfg.batch_size, trainer.ranks)

    def numpy_draw():
        return torch.stack([data.clip(i) for i in indices])

    def torch_draw():
        scenes = stack_scenes([scene_arrays(data.tracks(i), data.max_shapes, data.frames) for i in indices])
        return render_scenes(scenes.to(device), data.height, data.width)

    return {"draw_numpy_ms": median_ms(numpy_draw, torch.device("cpu")),
            "draw_torch_ms": median_ms(torch_draw, device)}


def bench_preset(spec: dict):
    """The preset to time: --preset (overlaid by --config) at --batch-size, nothing saved or sampled;
    fields an older tree lacks are left out."""
    from vdm.config import Preset, TrainConfig, get_preset, load_config_file

    base = get_preset(spec["preset"])
    if spec["config"]:
        base = load_config_file(spec["config"], base)
    wanted = dict(batch_size=spec["batch_size"] or base.train.batch_size, steps=10**9, sample_every=0,
                  warmup_steps=1, workers=spec["workers"], compile=spec["compile"],
                  memory_format=spec["layout"], precision=spec["precision"])
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    dropped = {k: v for k, v in wanted.items() if k not in known and v not in (None, False, "auto")}
    if dropped:
        raise SystemExit(f"this vdm tree's TrainConfig has no {', '.join(dropped)}")
    train = dataclasses.replace(base.train, **{k: v for k, v in wanted.items() if k in known})
    return Preset(model=base.model, diffusion=base.diffusion, train=train)


def measure(spec: dict) -> None:
    """Time the spec's Trainer; rank 0 writes the numbers to spec['result'] as JSON."""
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    from vdm.train import Trainer

    import vdm

    # A tree from before multi-process training has no vdm/distributed.py: one process,
    # Trainer(preset, out, device). (Test the file: an import could find the installed vdm's.)
    if (Path(vdm.__file__).parent / "distributed.py").exists():
        from vdm import distributed
    else:
        distributed = None
    device = torch.device(spec["device"])
    ranks = distributed.ranks_from_env() if distributed else None
    extra = ()
    if distributed:
        device = distributed.rank_device(device, ranks)
        distributed.start(ranks, device)
        extra = (ranks,)
    is_main = ranks is None or ranks.is_main
    try:
        with tempfile.TemporaryDirectory(prefix="vdm-train-step-") as out:
            trainer = Trainer(bench_preset(spec), Path(out), device, *extra)
            result = time_steps(trainer, spec, device)
            if is_main and hasattr(trainer, "batches"):
                result |= draw_times(trainer, device, trainer.step)
            if hasattr(trainer, "batches"):
                trainer.batches.close()
        if is_main:
            Path(spec["result"]).write_text(json.dumps(result))
    finally:
        if distributed:
            distributed.stop()


def time_steps(trainer, spec: dict, device: torch.device) -> dict:
    """--warmup steps, then --repeats timed blocks of --steps steps."""
    for _ in range(spec["warmup"]):
        trainer.train_step()
    synchronize(device)
    waited = getattr(trainer, "data_seconds", None)  # absent from older trees
    blocks = []
    for _ in range(spec["repeats"]):
        begin = time.perf_counter()
        for _ in range(spec["steps"]):
            trainer.train_step()
        synchronize(device)
        blocks.append(time.perf_counter() - begin)
    result = {"block_s": blocks, "threads_per_process": torch.get_num_threads(),
              "memory_format": str(trainer.memory_format).removeprefix("torch."),
              "precision": getattr(trainer, "precision", "fp32" if device.type == "cpu" else "bf16"),
              "vdm_source": str(Path(sys.modules["vdm"].__file__).parent.parent)}
    if waited is not None:
        result["data_wait_ms"] = 1e3 * (trainer.data_seconds - waited) / (spec["repeats"] * spec["steps"])
        result["workers"] = trainer.batches.workers
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


# ------------------------------------------------------------------------------ the orchestrator


def train_flops_per_clip(preset: str, config: str | None) -> float:
    """FLOPs of one forward + backward of one clip (mean-square loss), counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    from vdm.train import build_preset
    from vdm.unet import Unet3D

    cfg = build_preset(preset, config, {}).model
    with torch.device("meta"):
        model = Unet3D(cfg)
        x = torch.zeros(1, cfg.network_channels, cfg.frames, cfg.size, cfg.size)  # (B, C, T, H, W)
        t = torch.ones(1, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        model(x, t).square().mean().backward()
    return float(counter.get_total_flops())


def run_row(spec: dict, world_size: int, pythonpath: str | None) -> dict:
    """Start the measured process(es) and read rank 0's numbers."""
    env = dict(os.environ)
    if spec["threads"]:
        env["OMP_NUM_THREADS"] = str(spec["threads"])
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    launcher = ([sys.executable] if world_size == 1 else
                [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world_size}"])
    command = [*launcher, str(Path(__file__).resolve()), "--measure", json.dumps(spec)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-12:]
        raise RuntimeError(f"row failed (exit {done.returncode}):\n" + "\n".join(tail))
    return json.loads(Path(spec["result"]).read_text())


def row_numbers(result: dict, spec: dict, flops_per_clip: float, global_batch: int) -> dict:
    block = statistics.median(result["block_s"])
    steps_per_s = spec["steps"] / block
    return {"steps_per_s": steps_per_s, "ms_per_step": 1e3 / steps_per_s, "clips_per_s": steps_per_s * global_batch,
            "tflops": flops_per_clip * global_batch * steps_per_s / 1e12,
            "block_s_min_max": [min(result["block_s"]), max(result["block_s"])]}


def plan(args) -> list[dict]:
    """The rows: per thread count, the baseline (if any) first, then this tree per world size, layout and precision."""
    cores = len(os.sched_getaffinity(0))
    rows = []
    for threads in args.threads:
        if args.baseline:
            rows.append(dict(code=args.baseline_label, world_size=1, threads=threads, layout="auto", precision="auto"))
        for world in args.world_sizes:
            if args.device == "cpu" and threads and threads * world > cores:
                print(f"skipped: {world} process(es) x {threads} thread(s) > {cores} cores", flush=True)
                continue
            rows += [dict(code="this tree", world_size=world, threads=threads, layout=layout, precision=precision)
                     for layout in args.layouts for precision in args.precisions]
    return rows


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def markdown(report: dict) -> str:
    m, s = report["machine"], report["settings"]
    lines = [f"# {report['name']}: vdm Trainer steps", "",
             f"- date: {report['date']}; command: `{report['command']}`",
             f"- machine: {m['cpu']}, {m['usable_cores']} usable cores; CPU flags: "
             + ", ".join(f"{f} {'yes' if on else 'no'}" for f, on in m["cpu_flags"].items())
             + (f"; oneDNN capped at {m['onednn_max_cpu_isa']}" if m.get("onednn_max_cpu_isa") else "")
             + f"; GPU: {m['gpu'] or 'none'}; load average at start {m['load_average_at_start']}",
             "- software: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
             f"- preset {s['preset']}" + (f" with {s['config']}" if s.get("config") else "")
             + f", global batch {report['global_batch']}, device {s['device']}; "
             f"{fmt(report['train_gflop_per_clip'], 4)} GFLOP per clip (forward + backward); median of "
             f"{s['repeats']} blocks of {s['steps']} steps after {s['warmup']} warm-up steps", "",
             "| code | processes | threads/process | layout | precision | workers | steps/s | clips/s | ms/step "
             "| TFLOP/s | data wait ms/step | draw numpy ms | draw torch ms |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        if r["status"] != "ok":
            lines.append(f"| {r['code']} | {r['world_size']} | {r['threads'] or '-'} | {r['layout']} | "
                         f"{r.get('precision', 'auto')} | | "
                         f"{r['status']}: {r['error'].splitlines()[0]} | | | | | | |")
            continue
        lines.append(f"| {r['code']} | {r['world_size']} | {r['threads_per_process']} | {r['memory_format']} | "
                     f"{r.get('precision', '-')} | {fmt(r.get('workers'))} | {fmt(r['steps_per_s'])} | "
                     f"{fmt(r['clips_per_s'])} | "
                     f"{fmt(r['ms_per_step'])} | {fmt(r['tflops'])} | {fmt(r.get('data_wait_ms'))} | "
                     f"{fmt(r.get('draw_numpy_ms'))} | {fmt(r.get('draw_torch_ms'))} |")
    lines += ["", "data wait: host time a step waited for its batch (the trainer's counter); draw: one "
              "process's clips of a step, numpy reference renderer vs batched torch renderer on the device."]
    if report["headlines"]:
        lines += ["", "**Headline**: " + "; ".join(report["headlines"])]
    return "\n".join(lines) + "\n"


def headlines(rows: list[dict], baseline_label: str | None) -> list[str]:
    """Per thread count, layout and precision: this tree vs the baseline (one process each), N processes
    vs one; and bf16 vs fp32 at the same processes, threads and layout."""
    ok = [r for r in rows if r["status"] == "ok"]
    out = []
    for r in ok:
        if r["code"] != "this tree":
            continue
        same = [o for o in ok if o["threads"] == r["threads"] and o["memory_format"] == r["memory_format"]
                and o["world_size"] == 1 and o["precision"] == r["precision"]]
        base = next((o for o in same if o["code"] == baseline_label), None)
        one = next((o for o in same if o["code"] == "this tree"), None)
        fp32 = next((o for o in ok if o["code"] == "this tree" and o["precision"] == "fp32"
                     and all(o[k] == r[k] for k in ("threads", "memory_format", "world_size"))), None)
        setting = f"{r['threads_per_process']} thread(s), {r['memory_format']}, {r['precision']}"
        if r["world_size"] == 1 and base:
            out.append(f"{setting}, 1 process: {fmt(r['steps_per_s'])} steps/s vs {fmt(base['steps_per_s'])} "
                       f"for {baseline_label} ({r['steps_per_s'] / base['steps_per_s']:.2f}x)")
        elif r["world_size"] > 1 and one:
            out.append(f"{setting}, {r['world_size']} processes: {fmt(r['steps_per_s'])} steps/s "
                       f"({r['steps_per_s'] / one['steps_per_s']:.2f}x one process)")
        if r["precision"] == "bf16" and fp32:
            out.append(f"{setting}, {r['world_size']} process(es): {fmt(r['ms_per_step'])} ms/step vs "
                       f"{fmt(fp32['ms_per_step'])} in fp32 ({fp32['ms_per_step'] / r['ms_per_step']:.2f}x the "
                       f"steps/s)")
    return out


def machine_info(device: str) -> dict:
    from vdm.machine import cpu_flags, cpu_model

    flags = cpu_flags()
    return {"cpu": cpu_model(), "cpu_flags": {f: f in flags for f in CPU_FLAGS},
            "usable_cores": len(os.sched_getaffinity(0)),
            "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
            "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
            "gpu": torch.cuda.get_device_name(0) if device == "cuda" and torch.cuda.is_available() else None}


def parser() -> argparse.ArgumentParser:
    ints = lambda text: [int(v) for v in text.split(",")]  # noqa: E731
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="tiny", choices=["tiny", "small", "base"])
    p.add_argument("--config", help="TOML/JSON overlaid on the preset, as vdm-train --config (e.g. vdm/demo/demo.toml)")
    p.add_argument("--batch-size", type=int, help="global batch (default: the preset's)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--world-sizes", type=ints, default=[1, 2], help="processes per row, e.g. 1,2")
    p.add_argument("--threads", type=ints, default=[0], help="torch threads per process, e.g. 1,2 (0: torch's default)")
    p.add_argument("--layouts", default=["auto"], type=lambda t: t.split(","),
                   help="auto, contiguous, channels_last_3d (comma-separated)")
    p.add_argument("--precisions", default=["auto"], type=lambda t: t.split(","),
                   help="auto, fp32, bf16 (comma-separated): the trainer's --precision")
    p.add_argument("--workers", type=int, help="data loader workers per process (default: the trainer's per device)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (warm-up includes compiling)")
    p.add_argument("--steps", type=int, default=5, help="steps per timed block")
    p.add_argument("--repeats", type=int, default=5, help="timed blocks (the median is reported)")
    p.add_argument("--warmup", type=int, default=3, help="steps before timing")
    p.add_argument("--baseline", help="another vdm source tree to time (one process), e.g. a git archive of main")
    p.add_argument("--baseline-label", default="baseline", help="its name in the report, e.g. main@0d41636")
    p.add_argument("--name", help="report folder name (default: train-step-<device>-<date>)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    p.add_argument("--measure", help=argparse.SUPPRESS)  # internal: one measured process's spec (JSON)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    if args.measure:
        measure(json.loads(args.measure))
        return 0
    from common import PACKAGES  # the sibling module: benchmarks/ is on sys.path when run as a script
    from vdm.machine import software_versions
    from vdm.atomic import atomic_write_text
    from vdm.config import get_preset

    started = datetime.datetime.now(datetime.timezone.utc)
    name = args.name or f"train-step-{args.device}-{started.date()}"
    global_batch = args.batch_size or get_preset(args.preset).train.batch_size
    flops = train_flops_per_clip(args.preset, args.config)
    machine = machine_info(args.device)
    print(f"{machine['cpu']}; GPU {machine['gpu'] or 'none'}; preset {args.preset}, batch {global_batch}, "
          f"{flops / 1e9:.3g} GFLOP per clip (forward + backward)", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="vdm-train-step-") as tmp:
        for i, row in enumerate(plan(args)):
            spec = dict(preset=args.preset, config=args.config, batch_size=global_batch, device=args.device,
                        threads=row["threads"], layout=row["layout"], precision=row["precision"], workers=args.workers,
                        compile=args.compile, steps=args.steps, repeats=args.repeats, warmup=args.warmup,
                        result=str(Path(tmp) / f"row{i}.json"))
            pythonpath = args.baseline if row["code"] == args.baseline_label and args.baseline else None
            print(f"[{i + 1}] {row['code']}: {row['world_size']} process(es), threads {row['threads'] or 'default'}, "
                  f"layout {row['layout']}, precision {row['precision']}", flush=True)
            try:
                result = run_row(spec, row["world_size"], pythonpath)
                rows.append(row | {"status": "ok"} | result
                            | row_numbers(result, spec, flops, global_batch))
                r = rows[-1]
                print(f"    {r['steps_per_s']:.3g} steps/s, {r['clips_per_s']:.3g} clips/s, {r['tflops']:.3g} TFLOP/s, "
                      f"data wait {fmt(r.get('data_wait_ms'))} ms/step", flush=True)
            except RuntimeError as e:
                rows.append(row | {"status": "error", "error": str(e)})
                print(f"    {e}", flush=True)
    report = {"name": name, "date": started.isoformat(timespec="seconds"), "machine": machine,
              "versions": software_versions(PACKAGES),
              "command": shlex.join(["python", "benchmarks/train_step.py", *argv]),
              "settings": vars(args) | {"out": str(args.out)}, "global_batch": global_batch,
              "train_gflop_per_clip": flops / 1e9, "rows": rows,
              "load_average_at_end": [round(v, 2) for v in os.getloadavg()]}
    report["headlines"] = headlines(rows, args.baseline_label if args.baseline else None)
    folder = args.out / name
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "results.json", json.dumps(report, indent=2, default=str) + "\n")
    atomic_write_text(folder / "results.md", markdown(report))
    print(f"wrote {folder}/results.json and results.md")
    for line in report["headlines"]:
        print(f"headline: {line}")
    return 1 if any(r["status"] != "ok" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

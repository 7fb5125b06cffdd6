"""Where OpenVINO spends a network call: per node type, from its own per-node counters (PERF_COUNT).

    python -m benchmarks.openvino_profile BUNDLE [BUNDLE ...] [--precisions fp32,int8] [--batch 4] [--threads 2]

Says what int8 can gain: it speeds up convolutions only, so the other node types' share of the fp32
call bounds the speed-up. Several bundles are profiled in one run, so two exports of one checkpoint
compare fairly (e.g. the default export, whose fp32 network writes GroupNorm as channel statistics,
against `vdm-export --exporter torchscript`, whose network keeps the reshaped GroupNorm). Prints
medians over --calls calls with the machine, versions and date (benchmarks.common).
"""
from __future__ import annotations

import statistics
import sys
from collections import defaultdict

import click
import torch

from benchmarks.common import facts_markdown, run_facts
from vdm.bundle import read_bundle
from vdm.errors import VdmError
from vdm.runtime.backend import network_feed
from vdm.runtime.openvino_backend import OpenVINOBackend, import_openvino


def node_type_ms(request, feed: dict, calls: int) -> dict[str, float]:
    """Node type (OpenVINO's, with its kernel family) -> median ms per call over `calls` calls."""
    times = defaultdict(lambda: [0.0] * calls)
    for call in range(calls):
        request.infer(feed)
        for node in request.profiling_info:
            kind = f"{node.node_type} ({node.exec_type.split('_')[0] or '-'})"
            times[kind][call] += node.real_time.total_seconds() * 1000
    return {kind: statistics.median(ms) for kind, ms in times.items()}


@click.command()
@click.argument("bundle_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--precisions", default="fp32,int8", show_default=True, help="Networks to profile, comma-separated.")
@click.option("--batch", default=4, show_default=True, type=click.IntRange(min=1))
@click.option("--threads", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--calls", default=10, show_default=True, type=click.IntRange(min=1), help="Timed calls, after 5 warm-up.")
@click.option("--top", default=8, show_default=True, type=click.IntRange(min=1), help="Node types listed per network.")
def main(bundle_dirs: tuple[str, ...], precisions: str, batch: int, threads: int, calls: int, top: int) -> None:
    facts = run_facts("benchmarks.openvino_profile", sys.argv[1:])
    ov = import_openvino()
    bundles = [read_bundle(folder) for folder in bundle_dirs]
    cfg = bundles[0].model_config
    x = torch.randn(batch, cfg.network_channels, cfg.frames, cfg.size, cfg.size, generator=torch.Generator().manual_seed(0))
    feed = {k: v.numpy() for k, v in network_feed(cfg, x, torch.full((batch,), 500), None).items()}
    lines = facts_markdown(facts) + [f"- network call at batch {batch} (T={cfg.frames}, {cfg.size}x{cfg.size}, t=500), "
                                     f"{threads} threads; median of {calls} calls per node type", ""]
    for bundle in bundles:
        if bundle.model_config != cfg:
            raise click.UsageError(f"{bundle.root} holds another model than {bundles[0].root}: profile them apart")
        for precision in precisions.split(","):
            network = OpenVINOBackend.network_for(precision)
            try:
                path = bundle.file(network)
            except VdmError as error:  # no such network, or a file that fails its checksum
                raise click.UsageError(str(error)) from None
            compiled = ov.Core().compile_model(str(path), "CPU", {
                "INFERENCE_NUM_THREADS": threads, "PERF_COUNT": True, "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_PRECISION_HINT": "f32"})
            request = compiled.create_infer_request()
            for _ in range(5):
                request.infer(feed)
            per_type = node_type_ms(request, feed, calls)
            total = sum(per_type.values())
            where = f"{bundle.root.name}/{path.name}" if len(bundles) > 1 else path.name
            norm = bundle.network(network).get("group_norm", "reshaped")
            lines += [f"**{precision}** ({where}; GroupNorm {norm}): {total:.1f} ms in nodes", "",
                      "| node type (kernel) | ms | share |", "|---|---:|---:|"]
            lines += [f"| {kind} | {ms:.1f} | {100 * ms / total:.0f} % |"
                      for kind, ms in sorted(per_type.items(), key=lambda item: -item[1])[:top]]
            lines.append("")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

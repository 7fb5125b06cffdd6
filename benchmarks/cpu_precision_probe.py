"""Which precision wins on this CPU? One Conv3d 3x3x3 timed in torch, ONNX Runtime and OpenVINO.

    python benchmarks/cpu_precision_probe.py [--threads 1] [--channels 64] [--frames 16] [--size 32]

Prints the CPU, its bf16-relevant flags, and for one Conv3d (C->C, kernel 3, padding 1, input
(1, C, T, H, W)): the median time after warm-up, GFLOP/s, and the output's relative error against
torch fp32. The error shows what really ran: bf16 leaves ~1e-3, an ignored bf16 hint ~1e-7.
"""
from __future__ import annotations

import copy
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import torch

from vdm.runtime.precision import cpu_flags, cpu_has_fast_bf16

BF16_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_fp16")


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def median_seconds(fn, runs: int = 9, budget_s: float = 20.0) -> float:
    """Median wall time of fn() after warm-up; fewer runs (at least 3) when one call is slow."""
    start = time.perf_counter()
    fn()  # warm-up: first-call allocations, kernel selection
    first = time.perf_counter() - start
    if first < 1.0:
        fn()
    runs = max(3, min(runs, int(budget_s / first)))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def conv_onnx(path: Path, weight: np.ndarray, bias: np.ndarray, shape: tuple[int, ...]) -> None:
    """A one-node ONNX graph: y = Conv(x, W, b), kernel 3x3x3, padding 1."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    node = helper.make_node("Conv", ["x", "W", "b"], ["y"], kernel_shape=[3, 3, 3], pads=[1] * 6)
    graph = helper.make_graph([node], "conv3d", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
                              [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))


def torch_runner(conv: torch.nn.Conv3d, x: torch.Tensor, dtype: torch.dtype, channels_last: bool):
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    conv = copy.deepcopy(conv).to(dtype=dtype, memory_format=fmt)  # Module.to() converts in place
    x = x.to(dtype=dtype).contiguous(memory_format=fmt)

    def run() -> np.ndarray:
        with torch.inference_mode():
            return conv(x).float().numpy()

    return run


def ort_runner(path: Path, x: np.ndarray, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda: session.run(["y"], {"x": x})[0]


def openvino_runner(path: Path, x: np.ndarray, threads: int, hint: str):
    """(run, the precision OpenVINO reports it compiled for)."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                          "PERFORMANCE_HINT": "LATENCY",
                                                          "INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()
    actual = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    return (lambda: request.infer({"x": x}, share_inputs=True)[0].copy()), actual


def onednn_bf16() -> str:
    """Whether torch has oneDNN bf16 kernels on this CPU (without them bf16 convs take a slow reference path)."""
    try:
        return "yes" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "no"
    except (AttributeError, RuntimeError):  # a private op: absent from some builds
        return "unknown"


def versions() -> str:
    parts = [f"python {platform.python_version()}", f"torch {torch.__version__}"]
    for name in ("onnxruntime", "openvino"):
        try:
            parts.append(f"{name} {__import__(name).__version__}")
        except ImportError:
            parts.append(f"{name} missing")
    return ", ".join(parts)


@click.command()
@click.option("--threads", default=1, show_default=True, help="Threads for every engine (1: steady on a shared box).")
@click.option("--channels", default=64, show_default=True)
@click.option("--frames", default=16, show_default=True)
@click.option("--size", default=32, show_default=True)
def main(threads: int, channels: int, frames: int, size: int) -> None:
    torch.set_num_threads(threads)
    flags = cpu_flags()
    print(f"cpu: {cpu_name()} ({os.cpu_count()} logical cores; load average "
          f"{', '.join(f'{v:.2f}' for v in os.getloadavg())})")
    print("flags: " + "  ".join(f"{f}={'yes' if f in flags else 'no'}" for f in BF16_FLAGS))
    print(f"vdm cpu_has_fast_bf16(): {cpu_has_fast_bf16(flags)}; torch oneDNN bf16 kernels: {onednn_bf16()}")
    try:
        import openvino as ov

        caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        print(f"openvino CPU capabilities: {', '.join(caps)}")
    except ImportError:
        pass
    print(f"versions: {versions()}")

    shape = (1, channels, frames, size, size)
    gflop = 2 * channels * channels * 27 * frames * size * size / 1e9  # multiply-adds x 2, bias ignored
    print(f"\nConv3d {channels}->{channels}, 3x3x3, padding 1, input {shape}: {gflop:.2f} GFLOP; "
          f"{threads} thread(s); median after warm-up\n")
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(channels, channels, 3, padding=1).eval()
    x = torch.randn(shape)
    with torch.inference_mode():
        reference = conv(x).numpy()
    weight, bias = conv.weight.detach().numpy().copy(), conv.bias.detach().numpy().copy()

    runners = {"torch fp32": (torch_runner(conv, x, torch.float32, False), "f32"),
               "torch bf16 channels_last_3d": (torch_runner(conv, x, torch.bfloat16, True), "bf16")}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "conv3d.onnx"
        conv_onnx(path, weight, bias, shape)
        try:
            runners["onnxruntime fp32"] = (ort_runner(path, x.numpy(), threads), "f32")
        except ImportError:
            print("onnxruntime missing: skipped")
        try:
            runners["openvino f32 hint"] = openvino_runner(path, x.numpy(), threads, "f32")
            runners["openvino bf16 hint"] = openvino_runner(path, x.numpy(), threads, "bf16")
        except ImportError:
            print("openvino missing: skipped")
        print(f"{'engine':30s} {'computes':>8s} {'median ms':>10s} {'GFLOP/s':>8s} {'rel err':>9s}")
        for name, (run, computes) in runners.items():
            out = run()
            error = np.linalg.norm(out - reference) / np.linalg.norm(reference)
            seconds = median_seconds(run)
            print(f"{name:30s} {computes:>8s} {1000 * seconds:10.1f} {gflop / seconds:8.1f} {error:9.1e}")


if __name__ == "__main__":
    main()

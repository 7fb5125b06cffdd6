"""The OpenVINO backend: a bundle's fp32 ONNX network compiled by OpenVINO for the CPU.

Precision. OpenVINO always reads the fp32 network and chooses the compute precision itself from the
INFERENCE_PRECISION_HINT property ('f32', 'bf16', 'f16'). Its CPU plugin honours bf16/f16 only where
the CPU has them (its OPTIMIZATION_CAPABILITIES list BF16/FP16) and otherwise computes f32 without a
word: on an AVX2-only EPYC (OpenVINO 2026.4) a bf16 or f16 hint compiles to an all-f32 graph. So the
backend reads the precision back from the compiled model and reports that one, with the reason.

Shapes. The network keeps its dynamic batch/frames axes: one compile and one cache blob serve every
shape. Reshaping to static shapes, one compiled model per new shape, measured within noise of dynamic
(median 263.9 vs 280.3 ms at B=1,T=8; 432.7 vs 448.0 at B=2; 518.9 vs 521.2 at T=16; 32x32 UNet, 1
thread, loaded 2-core EPYC) for 0.8-1.7 s of compile per new shape, so it is not worth it.

Memory. Inputs are numpy views of the torch tensors, and OpenVINO writes the output into a fresh
torch tensor set as the request's output tensor: nothing is copied, and the tensor handed to the
sampler is never reused by OpenVINO (its own output buffer is, from one infer to the next).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from vdm.bundle import Bundle
from vdm.errors import VdmError
from vdm.machine import cpu_has_fast_bf16, cpu_has_int8_dot_product
from vdm.runtime.backend import empty_output, network_feed
from vdm.runtime.bundle_backend import THREADS, BundleBackend
from vdm.runtime.precision import resolve_precision

CACHE_NAME = "openvino_cache"  # the compiled-model cache, inside the bundle
OV_ELEMENT = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}  # vdm precision -> OpenVINO element type
CAPABILITY = {"bf16": "BF16", "fp16": "FP16"}  # vdm precision -> the CPU plugin's capability name


def import_openvino():
    try:
        import openvino
    except ImportError:
        raise VdmError("the openvino backend needs openvino: pip install 'vdm[openvino]'") from None
    return openvino


def choose_precision(requested: str, capabilities: set[str], flags: set[str] | None = None) -> tuple[str, str]:
    """(the precision to hint, why): `requested` resolved by the one auto rule (runtime/precision.py),
    fp16 only where OpenVINO lists FP16 on this CPU."""
    resolved = resolve_precision(requested, "cpu", OpenVINOBackend.computes["cpu"], "the openvino backend",
                                 flags=flags)
    if resolved == "fp16" and CAPABILITY["fp16"] not in capabilities:
        raise VdmError("OpenVINO cannot compute fp16 on this CPU (its capabilities are "
                       f"{', '.join(sorted(capabilities))}; f16 needs native fp16 units such as AMX-FP16); "
                       "use --precision fp32 or auto")
    if resolved == "int8":
        return resolved, "the int8 network (vdm-export --int8), its other layers in fp32"
    if requested == "auto":
        if resolved == "bf16":
            return resolved, "auto: this CPU has bf16 matrix units"
        return resolved, "auto: no avx512_bf16/amx_bf16 on this CPU, so bf16 would not be faster"
    if resolved == "bf16" and not cpu_has_fast_bf16(flags):
        return resolved, "bf16 requested on a CPU without avx512_bf16/amx_bf16: emulated, slower than fp32"
    return resolved, f"{resolved} requested"


def saturation_warning(network: dict, flags: set[str] | None = None) -> str:
    """What to tell a user running 8-bit int8 weights on a CPU that sums int8 products in int16."""
    if network.get("quantization", {}).get("weight_bits") != 8 or cpu_has_int8_dot_product(flags):
        return ""
    return ("; WARNING: its 8-bit weights were gated on a CPU with VNNI/AMX, and this one has neither (or "
            "ONEDNN_MAX_CPU_ISA keeps them off), so its int16 sums may saturate: re-export here with "
            "`vdm-export --int8` (7-bit weights)")


def compiled_precision(compiled) -> str:
    """The precision OpenVINO actually computes in, read back from the compiled model."""
    element = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    return {v: k for k, v in OV_ELEMENT.items()}.get(element, element)


def enable_cache(core, cache_dir: Path) -> Path | None:
    """Cache compiled models in `cache_dir` (kept in the bundle); None when the bundle is read-only."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    if not os.access(cache_dir, os.W_OK):
        return None
    core.set_property({"CACHE_DIR": str(cache_dir)})
    return cache_dir


def cached_blobs(cache_dir: Path | None) -> set[str]:
    return {p.name for p in cache_dir.glob("*.blob")} if cache_dir else set()


class OpenVINOBackend(BundleBackend):
    name = "openvino"
    computes = {"cpu": ("fp32", "bf16", "fp16", "int8")}  # hints on the fp32 network; int8 runs the int8 one
    options = (THREADS,)

    def __init__(self, bundle: Bundle, precision: str = "auto", threads: int | None = None):
        ov = import_openvino()
        if threads is not None and threads < 1:
            raise VdmError(f"threads must be at least 1, got {threads}")
        network = self.network_for(precision)
        super().__init__(bundle, "cpu", network)
        self.device = torch.device("cpu")
        self.network = bundle.network(network)
        core = ov.Core()
        capabilities = set(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        self.requested_precision, self.reason = choose_precision(precision, capabilities)
        # One cache folder per requested precision: OpenVINO 2026.4's cache key ignores a bf16 hint on
        # an AVX-512 CPU without bf16 units, and loading the fp32 blob under that hint computed NaN.
        # And per network file content: OpenVINO keys its cache on the model's path, and a re-export
        # writes another network at the same path.
        content = self.network["files"][self.network["file"]]["sha256"][:16]
        self.cache_dir = enable_cache(core, bundle.root / CACHE_NAME / f"{self.requested_precision}-{content}")
        path = bundle.file(network)  # checked against the manifest's checksum
        self.compiled = self._compile(core, path, threads)
        computed = compiled_precision(self.compiled)
        self.precision = "int8" if self.requested_precision == "int8" and computed == "fp32" else computed
        if self.precision != self.requested_precision:  # OpenVINO ignored the hint (see the module docstring)
            missing = CAPABILITY.get(self.requested_precision, self.requested_precision)
            self.reason = (f"{self.requested_precision} requested, but OpenVINO lists no {missing} on this CPU, "
                           f"so it computes {self.precision}")
        if self.precision == "int8":
            self.reason += saturation_warning(self.network)
        self.threads = self.compiled.get_property("INFERENCE_NUM_THREADS")
        expected = [io["name"] for io in self.network["inputs"] + self.network["outputs"]]
        ports = [*self.compiled.inputs, *self.compiled.outputs]
        # A port may carry several tensor names: it matches when one of them is the manifest's.
        names = [next((e for e in expected if e in port.get_names()), sorted(port.get_names())[0]) for port in ports]
        dims = {name: [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
                for name, port in zip(names, ports)}
        self.check_io(names[:len(self.compiled.inputs)], dims, path.name)
        self.request = self.compiled.create_infer_request()  # reused by every predict
        self._ov = ov

    @classmethod
    def network_for(cls, precision: str) -> str:
        """OpenVINO lowers fp32/bf16/fp16 itself from the fp32 graph; int8 is a network of its own (QDQ)."""
        return "int8" if precision == "int8" else "fp32"

    def _compile(self, core, path: Path, threads: int | None):
        # int8: the quantized convolutions run in int8 whatever the hint; the rest stays f32.
        hint = "f32" if self.requested_precision == "int8" else OV_ELEMENT[self.requested_precision]
        config = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        before = cached_blobs(self.cache_dir)
        try:
            # From the path rather than a read_model() Model: on a cache hit OpenVINO then skips
            # parsing the ONNX file (0.38 s vs 0.72 s to load a 9 MB UNet here).
            compiled = core.compile_model(str(path), "CPU", config)
        except RuntimeError as e:  # OpenVINO raises RuntimeError for unreadable or unsupported graphs
            raise VdmError(f"OpenVINO cannot compile {path}: {str(e).strip().splitlines()[0]}") from None
        if self.cache_dir is None:
            self.cache_note = "not cached: the bundle is read-only"
        elif cached_blobs(self.cache_dir) - before:
            self.cache_note = f"compiled, cached in {self.cache_dir}"
        else:
            self.cache_note = f"loaded from the cache in {self.cache_dir}"
        return compiled

    @classmethod
    def load(cls, path: Path, device: str | None = None, precision: str = "auto",
             threads: int | None = None) -> "OpenVINOBackend":
        cls.device_type(device)
        bundle = cls.read(path)
        return cls(bundle, precision, threads)

    def describe(self) -> str:
        threads = f"{self.threads} thread{'s' if self.threads != 1 else ''}"
        return f"openvino CPU ({self.precision}, {threads}; {self.reason}; {self.cache_note})"

    def predict(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        feed = network_feed(self.model_config, x.detach(), t.detach(), None if y is None else y.detach())
        out = empty_output(self.model_config, feed["x"])  # (B, C, T, H, W), fresh each call: OpenVINO writes into it
        for name, tensor in feed.items():
            self.request.set_tensor(name, self._ov.Tensor(tensor.numpy(), shared_memory=True))
        self.request.set_output_tensor(0, self._ov.Tensor(out.numpy(), shared_memory=True))
        self.request.infer()
        return out

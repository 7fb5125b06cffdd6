"""The ONNX Runtime backend: runs a bundle's network with IO binding on torch tensors.

The latent never leaves the device between steps: inputs and the output are bound by address to
torch tensors on the backend's device. On CUDA, ONNX Runtime runs on torch's current stream, and the
CUDA EP's CUDA-graph mode replays the whole network for static shapes. The TensorRT EP is offered
too, with its engine cache kept inside the bundle.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vdm.bundle import Bundle
from vdm.errors import VdmError
from vdm.runtime.backend import BackendOption, empty_output, network_feed, resolve_device
from vdm.runtime.bundle_backend import CUDA_GRAPH, THREADS, BundleBackend, StaticInputs

NUMPY_DTYPES = {torch.float32: np.float32, torch.int64: np.int64}  # what the bound buffers hold


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise VdmError("the onnxruntime backend needs onnxruntime: pip install 'vdm[onnx]' "
                       "(or onnxruntime-gpu for CUDA)") from None
    return onnxruntime


def session_options(ort, threads: int | None):
    """Deliberate settings: full graph optimization, one op at a time using all cores."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL  # the UNet is a chain: parallel ops gain nothing
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.enable_mem_pattern = True
    options.log_severity_level = 3
    return options


def providers_for(ort, device: torch.device, provider: str | None, bundle: Bundle, precision: str,
                  cuda_graph: bool) -> list:
    """The execution-provider list for the requested device/provider, or a VdmError saying what to install."""
    available = ort.get_available_providers()
    provider = provider or ("cuda" if device.type == "cuda" else "cpu")
    if provider == "cpu":
        if device.type == "cuda":
            raise VdmError("--provider cpu with --device cuda: use --device cpu")
        return ["CPUExecutionProvider"]
    if device.type != "cuda":
        raise VdmError(f"--provider {provider} needs --device cuda")
    needed = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}.get(provider)
    if needed is None:
        raise VdmError(f"unknown provider {provider!r}; use cpu, cuda or tensorrt")
    if needed not in available:
        install = ("pip uninstall onnxruntime && pip install onnxruntime-gpu" if provider == "cuda" else
                   "onnxruntime-gpu with TensorRT's libraries on the library path")
        raise VdmError(f"--provider {provider} needs {needed}, and this onnxruntime has only "
                       f"{', '.join(available)}: {install}")
    cuda_options = {"device_id": device.index or 0,
                    "user_compute_stream": str(torch.cuda.current_stream(device).cuda_stream)}
    if cuda_graph:
        cuda_options["enable_cuda_graph"] = "1"
    if provider == "cuda":
        return [("CUDAExecutionProvider", cuda_options), "CPUExecutionProvider"]
    cache = bundle.root / "trt_cache"
    cache.mkdir(exist_ok=True)
    trt_options = {"device_id": device.index or 0, "trt_engine_cache_enable": True,
                   "trt_engine_cache_path": str(cache), "trt_timing_cache_enable": True,
                   "trt_fp16_enable": precision == "fp16",
                   "user_compute_stream": cuda_options["user_compute_stream"]}
    return [("TensorrtExecutionProvider", trt_options), ("CUDAExecutionProvider", cuda_options),
            "CPUExecutionProvider"]


class OnnxRuntimeBackend(BundleBackend):
    name = "onnxruntime"
    computes = {"cpu": ("fp32", "fp16"), "cuda": ("fp32", "fp16")}
    why_not = {"int8": "ONNX Runtime has no int8 kernel for 3D convolutions: it ran the int8 network's QDQ "
                       "Conv3d as fp32, no faster (188 vs 178 ms at batch 4 on the demo); use --backend openvino"}
    options = (
        BackendOption("provider", str, "ONNX Runtime execution provider (default: from --device).",
                      ("cpu", "cuda", "tensorrt")),
        CUDA_GRAPH,
        THREADS,
    )

    def __init__(self, bundle: Bundle, device: torch.device, precision: str = "auto", provider: str | None = None,
                 cuda_graph: bool = False, threads: int | None = None):
        super().__init__(bundle, device.type, precision)
        ort = import_onnxruntime()
        self.device = device
        self.network = bundle.network(self.precision)
        self.cuda_graph = cuda_graph
        if cuda_graph:
            self.require_static_shapes()
        path = bundle.file(self.precision)
        providers = providers_for(ort, device, provider, bundle, self.precision, cuda_graph)
        try:
            self.session = ort.InferenceSession(str(path), session_options(ort, threads), providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            raise VdmError(f"onnxruntime cannot load {path}: {str(e).splitlines()[0]}") from None
        self.provider = self.session.get_providers()[0]
        ports = self.session.get_inputs() + self.session.get_outputs()
        dims = {p.name: [d if isinstance(d, int) else None for d in p.shape] for p in ports}
        self.check_io([i.name for i in self.session.get_inputs()], dims, path.name)
        self.binding = self.session.io_binding()
        self.static = StaticInputs()
        self.static_out: torch.Tensor | None = None

    @classmethod
    def load(cls, path: Path, device: str | None = None, precision: str = "auto", **options) -> "OnnxRuntimeBackend":
        cls.device_type(device)
        bundle = cls.read(path)
        return cls(bundle, resolve_device(device), precision, **options)

    def describe(self) -> str:
        return f"onnxruntime {self.provider} ({self.precision}, {self.device})"

    def bind(self, name: str, tensor: torch.Tensor) -> None:
        device = self.device
        self.binding.bind_input(name, device.type, device.index or 0, NUMPY_DTYPES[tensor.dtype],
                                tuple(tensor.shape), tensor.data_ptr())

    def predict(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        feed = network_feed(self.model_config, x, t, y)
        if self.cuda_graph:
            # A CUDA graph replays fixed addresses: persistent buffers, bound once.
            if self.static.update(feed):
                self.static_out = empty_output(self.model_config, feed["x"])
                for name, tensor in self.static.buffers.items():
                    self.bind(name, tensor)
                self._bind_output(self.static_out)
            self.session.run_with_iobinding(self.binding)
            return self.static_out.clone()
        out = empty_output(self.model_config, feed["x"])
        for k, v in feed.items():
            self.bind(k, v)
        self._bind_output(out)
        self.session.run_with_iobinding(self.binding)
        return out

    def _bind_output(self, out: torch.Tensor) -> None:
        self.binding.bind_output("out", self.device.type, self.device.index or 0, np.float32,
                                 tuple(out.shape), out.data_ptr())

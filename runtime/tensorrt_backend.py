"""The TensorRT backend: runs the engine `vdm-export --tensorrt` built into a bundle, on torch CUDA tensors.

Inputs and the output are torch tensors bound by address (set_tensor_address) and the engine runs on
torch's current stream (execute_async_v3), so the latent never leaves the GPU and no step waits on
the host. The output buffer is allocated once per input shape and reused: `predict`'s result is
overwritten by the next call, which the shared sampling loop allows (it consumes each output first).

With --cuda-graph (static bundles only) the enqueue is captured once into a torch.cuda.CUDAGraph on
persistent input/output buffers and replayed every step. Written against TensorRT 10.x (valid for 11).
"""
from __future__ import annotations

from pathlib import Path

import torch

from vdm.bundle import Bundle, verify_file
from vdm.engine import check_engine_compatible, check_engine_shape, rebuild_command, require_tensorrt, trt_logger
from vdm.errors import VdmError
from vdm.runtime.backend import network_feed, resolve_device
from vdm.runtime.bundle_backend import CUDA_GRAPH, BundleBackend, StaticInputs


def built_engines(bundle: Bundle, precision: str) -> list[str]:
    """The precisions with an engine in the bundle; a VdmError saying how to build the one asked for."""
    built = [p for p in ("fp16", "fp32") if "tensorrt" in bundle.networks.get(p, {})]
    if precision == "auto" and not built:
        wanted = "fp16" if "fp16" in bundle.networks else "fp32"
        raise VdmError(f"bundle {bundle.root} has no TensorRT engine; build one on this GPU with "
                       f"{rebuild_command(wanted, out=bundle.root)}")
    if precision in ("fp16", "fp32"):
        bundle.network(precision)  # says how to export the ONNX when even that is missing
        if precision not in built:
            raise VdmError(f"bundle {bundle.root} has no {precision} TensorRT engine; build it on this GPU with "
                           f"{rebuild_command(precision, out=bundle.root)}")
    return built


def torch_dtype(trt, dtype) -> torch.dtype:
    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
             trt.DataType.BF16: torch.bfloat16, trt.DataType.INT32: torch.int32, trt.DataType.INT64: torch.int64}
    if dtype not in table:
        raise VdmError(f"the engine has an input/output of type {dtype}, which vdm does not feed; rebuild it")
    return table[dtype]


class TensorRTBackend(BundleBackend):
    name = "tensorrt"
    computes = {"cuda": ("fp32", "fp16")}
    options = (CUDA_GRAPH,)

    def __init__(self, bundle: Bundle, device: str | None = None, precision: str = "auto", cuda_graph: bool = False):
        # Every check that needs no GPU comes first, so a wrong flag fails in milliseconds.
        super().__init__(bundle, self.device_type(device), precision, built_engines(bundle, precision))
        self.network = bundle.network(self.precision)
        self.trt_info = self.network["tensorrt"]
        if cuda_graph:
            self.require_static_shapes(rebuild_command(self.precision, " --static", out=bundle.root))
        self.device = resolve_device(device or "cuda")
        self.cuda_graph = cuda_graph
        trt = require_tensorrt()
        self.trt_version = trt.__version__
        check_engine_compatible(self.trt_info, trt.__version__, torch.cuda.get_device_name(self.device),
                                torch.cuda.get_device_capability(self.device))
        with torch.cuda.device(self.device):  # TensorRT allocates on the current device
            self.runtime, self.engine = self._deserialize(trt)
            self.context = self.engine.create_execution_context()
        if self.context is None:
            raise VdmError("TensorRT could not create an execution context (out of GPU memory?); "
                           "free the GPU or rebuild with a smaller --max-shape")
        self.dtypes = self._io_dtypes(trt)
        self.out: torch.Tensor | None = None  # reused while the input shape stays the same
        self.shape: tuple[int, ...] | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static = StaticInputs()

    @classmethod
    def load(cls, path: Path, device: str | None = None, precision: str = "auto",
             cuda_graph: bool = False) -> "TensorRTBackend":
        cls.device_type(device)
        return cls(cls.read(path), device, precision, cuda_graph)

    def _deserialize(self, trt):
        path = self.bundle.root / self.trt_info["file"]
        verify_file(path, self.trt_info, rebuild_command(self.precision, out=self.bundle.root))
        runtime = trt.Runtime(trt_logger(trt))
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise VdmError(f"TensorRT could not load {path.name} (its messages above say why); rebuild it with "
                           f"{rebuild_command(self.precision, out=self.bundle.root)}")
        return runtime, engine  # the runtime must outlive its engine

    def _io_dtypes(self, trt) -> dict[str, torch.dtype]:
        """name -> torch dtype of every engine input/output, after checking the names match the manifest."""
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        dims = {n: [d if d >= 0 else None for d in self.engine.get_tensor_shape(n)] for n in names}
        self.check_io(inputs, dims, self.trt_info["file"])
        return {n: torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}

    def describe(self) -> str:
        graph = ", CUDA graph" if self.cuda_graph else ""
        return f"tensorrt {self.trt_version} ({self.precision}, {self.device}{graph})"

    def check_shape(self, batch: int, frames: int, height: int, width: int) -> None:
        super().check_shape(batch, frames, height, width)
        check_engine_shape(self.trt_info, batch, frames)

    def predict(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """As Backend.predict; the returned tensor is reused by the next call."""
        feed = network_feed(self.model_config, x, t, y)
        # The engine's own I/O types: x float32, t/y int64 (or int32 where TensorRT narrowed them).
        feed = {k: v.to(self.device, self.dtypes[k]).contiguous() for k, v in feed.items()}
        if self.cuda_graph:
            return self._replay(feed).float()
        self._bind(feed)
        self._enqueue()
        return self.out.float()

    def _bind(self, feed: dict[str, torch.Tensor]) -> None:
        """Point the engine at this call's inputs; set shapes and (re)allocate the output only on a new shape."""
        if feed["x"].shape != self.shape:
            for name, tensor in feed.items():
                if not self.context.set_input_shape(name, tuple(tensor.shape)):
                    fix = rebuild_command(self.precision, out=self.bundle.root)
                    raise VdmError(f"the engine refuses {name} of shape {tuple(tensor.shape)}; rebuild it with "
                                   f"{fix} and a profile that covers it")
            shape = tuple(self.context.get_tensor_shape("out"))
            self.out = torch.empty(shape, dtype=self.dtypes["out"], device=self.device)
            self.context.set_tensor_address("out", self.out.data_ptr())
            self.shape = feed["x"].shape
        for name, tensor in feed.items():
            self.context.set_tensor_address(name, tensor.data_ptr())

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed; TensorRT's messages above say why")

    def _replay(self, feed: dict[str, torch.Tensor]) -> torch.Tensor:
        """CUDA-graph path: the graph replays fixed addresses, so inputs are copied into persistent buffers."""
        if self.static.update(feed):
            self._bind(self.static.buffers)
            # TensorRT's docs: enqueue once before capturing, so the work it defers after a shape change
            # happens outside the graph. This run also produces the first call's output.
            self._enqueue()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):  # captures on a side stream, which torch makes current here
                self._enqueue()
            self.graph = graph
            return self.out
        self.graph.replay()
        return self.out

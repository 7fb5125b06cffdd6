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

from vdm.errors import VdmError
from vdm.export.tensorrt_build import check_engine_compatible, rebuild_command, require_tensorrt, trt_logger
from vdm.runtime.backend import Backend, network_feed, resolve_device
from vdm.runtime.bundle import Bundle, check_bundle_shape, read_bundle


def engine_precision(bundle: Bundle, precision: str) -> str:
    """The precision whose engine to run: 'auto' prefers fp16; the bundle must hold that engine."""
    if precision not in ("auto", "fp32", "fp16"):
        raise VdmError(f"the tensorrt backend runs fp32 or fp16 engines, not {precision}; "
                       "use --precision fp16, fp32 or auto")
    built = [p for p in ("fp16", "fp32") if "tensorrt" in bundle.networks.get(p, {})]
    if precision == "auto":
        if built:
            return built[0]
        wanted = "fp16" if "fp16" in bundle.networks else "fp32"
        raise VdmError(f"bundle {bundle.root} has no TensorRT engine; build one on this GPU with "
                       f"{rebuild_command(wanted, out=bundle.root)}")
    bundle.network(precision)  # says how to export the ONNX when even that is missing
    if precision not in built:
        raise VdmError(f"bundle {bundle.root} has no {precision} TensorRT engine; build it on this GPU with "
                       f"{rebuild_command(precision, out=bundle.root)}")
    return precision


def check_engine_shape(trt_info: dict, batch: int, frames: int) -> None:
    """Raise a VdmError when (batch, frames) is outside the engine's optimization profile."""
    lo, hi = trt_info["profile"]["x"]["min"], trt_info["profile"]["x"]["max"]  # (B, C, T, H, W) each
    for name, value, axis in (("batch", batch, 0), ("frames", frames, 2)):
        if not lo[axis] <= value <= hi[axis]:
            if value > hi[axis]:
                fix = f"--max-shape {max(batch, hi[0])}x{max(frames, hi[2])}"
            else:
                fix = f"--min-shape {min(batch, lo[0])}x{min(frames, lo[2])}"
            why = " (2 x the samples when guided)" if name == "batch" else ""
            raise VdmError(f"{name}={value}{why} is outside this TensorRT engine's profile ({lo[axis]}..{hi[axis]}); "
                           f"rebuild it with {rebuild_command(trt_info.get('precision'), ' ' + fix)}")


def torch_dtype(trt, dtype) -> torch.dtype:
    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
             trt.DataType.BF16: torch.bfloat16, trt.DataType.INT32: torch.int32, trt.DataType.INT64: torch.int64}
    if dtype not in table:
        raise VdmError(f"the engine has an input/output of type {dtype}, which vdm does not feed; rebuild it")
    return table[dtype]


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, bundle: Bundle, device: torch.device, precision: str = "auto", cuda_graph: bool = False):
        # Every check that needs no GPU comes first, so a wrong flag fails in milliseconds.
        self.bundle = bundle
        self.model_config = bundle.model_config
        self.diffusion_config = bundle.diffusion_config
        self.precision = engine_precision(bundle, precision)
        self.network = bundle.network(self.precision)
        self.trt_info = self.network["tensorrt"]
        if cuda_graph and not self.network["shapes"]["static"]:
            raise VdmError("--cuda-graph needs a bundle with static shapes: re-export with "
                           f"{rebuild_command(self.precision, ' --static', out=bundle.root)}")
        if device.type != "cuda":
            raise VdmError("the tensorrt backend runs on an NVIDIA GPU: use --device cuda "
                           "(or --backend onnxruntime on the CPU)")
        self.device = device
        self.cuda_graph = cuda_graph
        trt = require_tensorrt()
        self.trt_version = trt.__version__
        check_engine_compatible(self.trt_info, trt.__version__, torch.cuda.get_device_name(device),
                                torch.cuda.get_device_capability(device))
        with torch.cuda.device(device):  # TensorRT allocates on the current device
            self.runtime, self.engine = self._deserialize(trt)
            self.context = self.engine.create_execution_context()
        if self.context is None:
            raise VdmError("TensorRT could not create an execution context (out of GPU memory?); "
                           "free the GPU or rebuild with a smaller --max-shape")
        self.dtypes = self._io_dtypes(trt)
        self.out: torch.Tensor | None = None  # reused while the input shape stays the same
        self.shape: tuple[int, ...] | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_inputs: dict[str, torch.Tensor] = {}

    @classmethod
    def load(cls, path: Path, device: str | None = None, precision: str = "auto",
             cuda_graph: bool = False) -> "TensorRTBackend":
        return cls(read_bundle(path), resolve_device(device), precision, cuda_graph)

    def _deserialize(self, trt):
        path = self.bundle.root / self.trt_info["file"]
        if not path.is_file():
            raise VdmError(f"bundle {self.bundle.root}: {path.name} is missing; rebuild it with "
                           f"{rebuild_command(self.precision, out=self.bundle.root)}")
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
        expected = [io["name"] for io in self.network["inputs"]]
        if sorted(inputs) != sorted(expected) or "out" not in names:
            raise VdmError(f"{self.trt_info['file']} has inputs {inputs}, its manifest says {expected}; "
                           f"rebuild it with {rebuild_command(self.precision, out=self.bundle.root)}")
        return {n: torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}

    def describe(self) -> str:
        graph = ", CUDA graph" if self.cuda_graph else ""
        return f"tensorrt {self.trt_version} ({self.precision}, {self.device}{graph})"

    def check_shape(self, batch: int, frames: int, height: int, width: int) -> None:
        check_bundle_shape(self.network, self.model_config, batch, frames, height, width)
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
        if self.graph is None:
            self.static_inputs = {k: v.clone() for k, v in feed.items()}
            self._bind(self.static_inputs)
            # TensorRT's docs: enqueue once before capturing, so the work it defers after a shape change
            # happens outside the graph. This run also produces the first call's output.
            self._enqueue()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):  # captures on a side stream, which torch makes current here
                self._enqueue()
            self.graph = graph
            return self.out
        for name, tensor in feed.items():
            self.static_inputs[name].copy_(tensor)
        self.graph.replay()
        return self.out

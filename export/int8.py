"""fp32 ONNX -> INT8 QDQ ONNX: post-training quantization of the UNet's 3D convolutions with NNCF.

What is quantized, and why (measured on the demo model, 2026-11-28, benchmarks/results/int8-*):
- Only Conv nodes, weights per output channel and activations per tensor, both symmetric (NNCF's
  PERFORMANCE preset): zero points of 0 are what TensorRT's explicit quantization takes, so the same
  QDQ file serves OpenVINO here and a TensorRT build on a GPU.
- Never the first and last convolutions, the time/class embeddings (Gemm), attention (MatMul,
  Softmax), normalizations, or elementwise ops: NNCF's default also quantized the Gemm outputs and
  the norms' inputs, and the network's output was off by 25 % (rel. RMS) at t=500 and 690 % at t=999.
- `keep_fp32` names more convolutions to leave in float: the export's quality gate (vdm/int8.py)
  keeps whole UNet levels, full resolution first (the most sensitive ones), until the videos pass.
"""
from __future__ import annotations

import logging
from pathlib import Path

from vdm.errors import VdmError

KEPT_TYPES = ["MatMul", "Gemm", "Softmax", "Add", "Mul", "InstanceNormalization", "Resize", "Concat", "Sigmoid"]


def import_nncf():
    try:
        import nncf
    except ImportError:
        raise VdmError("vdm-export --int8 needs NNCF: pip install 'vdm[int8]'") from None
    return nncf


def conv_levels(model, feed: dict, size: int) -> dict[str, int]:
    """Conv node name -> its UNet level (0 = full resolution: output H == size, 1 = size/2, ...),
    read from one run of the network on `feed` with every Conv output exposed (static shape
    inference leaves some of them unknown, depending on the exporter)."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    convs = [node for node in probe.graph.node if node.op_type == "Conv"]
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(node.output[0]) for node in convs)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    results = session.run([node.output[0] for node in convs], feed)
    return {node.name: (size // out.shape[3]).bit_length() - 1 for node, out in zip(convs, results)}


def end_convs(model) -> list[str]:
    """The first convolution (it reads the input x) and the last (it writes the output)."""
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    return [convs[0].name, convs[-1].name]


def guard_outputs(model):
    """Give every graph output an Identity of its own. NNCF removes no-op Casts, and the TorchScript
    exporter ends in one that writes the output 'out': without the Identity, 'out' vanished."""
    import onnx

    outputs = {output.name for output in model.graph.output}
    producers = [(node, i) for node in model.graph.node for i, name in enumerate(node.output) if name in outputs]
    for node, i in producers:
        name = node.output[i]
        node.output[i] = f"{name}_before_identity"
        model.graph.node.append(onnx.helper.make_node("Identity", [node.output[i]], [name]))
    return onnx.shape_inference.infer_shapes(model)  # value_info for the renamed tensors too


def quantize_network(fp32_path: Path, out_path: Path, feeds: list[dict], keep_fp32: list[str]) -> dict:
    """Write the QDQ network for fp32_path to out_path, calibrated on `feeds` (input name -> array,
    one network call each); returns what was quantized and what kept float."""
    import onnx

    nncf = import_nncf()
    model = guard_outputs(onnx.load(str(fp32_path)))
    kept = end_convs(model) + [name for name in keep_fp32 if name not in end_convs(model)]
    previous = logging.getLogger("nncf").level
    nncf.set_log_level(logging.ERROR)  # NNCF logs a line per node it skips
    try:
        quantized = nncf.quantize(model, nncf.Dataset(feeds), preset=nncf.QuantizationPreset.PERFORMANCE,
                                  target_device=nncf.TargetDevice.ANY, subset_size=len(feeds),
                                  ignored_scope=nncf.IgnoredScope(names=kept, types=KEPT_TYPES))
    finally:
        nncf.set_log_level(previous)
    onnx.save(quantized, str(out_path))
    convs = [node.name for node in model.graph.node if node.op_type == "Conv"]
    return {"method": "nncf.quantize, PERFORMANCE preset (symmetric int8: TensorRT explicit quantization)",
            "nncf": nncf.__version__, "quantized_convs": len(convs) - len(kept), "fp32_convs": kept}

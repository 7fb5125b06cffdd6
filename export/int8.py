"""fp32 ONNX -> INT8 QDQ ONNX: post-training quantization of the UNet's 3D convolutions with NNCF,
and the surgery that puts chosen convolutions back in float.

What is quantized, and why (measured on the demo model, 2026-11-28, benchmarks/results/int8-*):
- Only Conv nodes, weights per output channel and activations per tensor, both symmetric (NNCF's
  PERFORMANCE preset): zero points of 0 are what TensorRT's explicit quantization takes, so the same
  QDQ file serves OpenVINO here and a TensorRT build on a GPU.
- Never the first and last convolutions, the time/class embeddings (Gemm), attention (MatMul,
  Softmax), normalizations (including the 1x1x1 convolutions that average a GroupNorm's per-channel
  statistics over its groups: `statistics_convs`), or elementwise ops: NNCF's default also quantized
  the Gemm outputs and the norms' inputs, and the network's output was off by 25 % (rel. RMS) at
  t=500 and 690 % at t=999. So every op type but Conv is in NNCF's ignored scope.
- No bias correction: NNCF's fast bias correction took the fully quantized demo from 26.0 to 24.8 dB
  (2026-11-29), and without it the gate kept one convolution fewer in float.
- A few convolutions cost most of the error (on the demo, 7 of 32 took the final videos from 24.9 to
  32.2 dB; each of the others alone costs less than 0.1 dB of it). `float_convs` takes chosen ones
  out of one quantized network instead of quantizing again, so the quality gate (vdm/int8.py) can try
  many choices cheaply.
"""
from __future__ import annotations

import functools
import logging

from vdm.errors import VdmError

FLOAT_SUFFIX = "__float"  # the fp32 weights and biases of a convolution taken out of int8


def import_nncf():
    try:
        import nncf
    except ImportError:
        raise VdmError("vdm-export --int8 needs NNCF: pip install 'vdm[int8]'") from None
    return nncf


ELEMENTWISE = {"Mul", "Div", "Add", "Sub", "Cast", "Identity"}


def statistics_convs(model) -> list[str]:
    """The Conv nodes that average a GroupNorm's per-channel statistics over its groups: their input
    is made from a reduction (ReduceMean, ReduceL2) by elementwise ops alone. Part of a
    normalization, not of the network's features (vdm.unet.group_statistics)."""
    producers = {out: node for node in model.graph.node for out in node.output}

    @functools.cache
    def from_reduction(name: str) -> bool:
        node = producers.get(name)
        if node is None:
            return False
        if node.op_type.startswith("Reduce"):
            return True
        return node.op_type in ELEMENTWISE and any(from_reduction(i) for i in node.input if i)

    return [node.name for node in model.graph.node if node.op_type == "Conv" and from_reduction(node.input[0])]


def end_convs(model) -> list[str]:
    """The first feature convolution (it reads the input x) and the last (it writes the output)."""
    statistics = set(statistics_convs(model))
    convs = [node for node in model.graph.node if node.op_type == "Conv" and node.name not in statistics]
    return [convs[0].name, convs[-1].name]


def quantized_convs(model) -> list[str]:
    """The Conv nodes whose weights come dequantized from int8, in graph order."""
    producers = {out: node for node in model.graph.node for out in node.output}
    return [node.name for node in model.graph.node if node.op_type == "Conv"
            and getattr(producers.get(node.input[1]), "op_type", None) == "DequantizeLinear"]


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


def other_types(model, *types: str) -> list[str]:
    """The graph's op types but `types`: what NNCF must leave alone when only `types` are quantized
    (its defaults also quantize the inputs of Add, Mul, ReduceMean, Sub, Sqrt and more)."""
    return sorted({node.op_type for node in model.graph.node} - set(types))


def quantize_network(fp32_model, feeds: list[dict]) -> tuple[object, dict]:
    """(the QDQ network, what was done): every convolution but the first and last quantized,
    calibrated on `feeds` (input name -> array, one network call each)."""
    nncf = import_nncf()
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

    model = guard_outputs(fp32_model)
    kept = end_convs(model) + statistics_convs(model)
    previous = logging.getLogger("nncf").level
    nncf.set_log_level(logging.ERROR)  # NNCF logs a line per node it skips
    try:
        quantized = nncf.quantize(model, nncf.Dataset(feeds), preset=nncf.QuantizationPreset.PERFORMANCE,
                                  target_device=nncf.TargetDevice.ANY, subset_size=len(feeds),
                                  ignored_scope=nncf.IgnoredScope(names=kept, types=other_types(model, "Conv")),
                                  advanced_parameters=AdvancedQuantizationParameters(disable_bias_correction=True))
    finally:
        nncf.set_log_level(previous)
    return quantized, {"method": "nncf.quantize, PERFORMANCE preset (symmetric int8: TensorRT explicit "
                                 "quantization), no bias correction", "nncf": nncf.__version__}


def float_convs(quantized, fp32_model, names: list[str]):
    """A copy of `quantized` where the convolutions `names` read their input before its quantizer and
    use fp32's weights and bias again (a quantized one reads int8 weights, and NNCF may have changed
    its bias); quantizers and int8 weights nothing reads any more are dropped."""
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(quantized)
    producers = {out: node for node in model.graph.node for out in node.output}
    fp32_nodes = {node.name: node for node in fp32_model.graph.node}
    fp32_constants = {init.name: init for init in fp32_model.graph.initializer}
    added = {init.name for init in model.graph.initializer}
    for node in (n for n in model.graph.node if n.name in names):
        dequantize = producers.get(node.input[0])
        quantize = producers.get(dequantize.input[0]) if getattr(dequantize, "op_type", None) == "DequantizeLinear" else None
        if getattr(quantize, "op_type", None) == "QuantizeLinear":
            node.input[0] = quantize.input[0]  # the float activation
        for i, name in enumerate(fp32_nodes[node.name].input[1:], start=1):
            if name not in fp32_constants:
                raise VdmError(f"{node.name}'s input {name} is not a constant of the fp32 network")
            node.input[i] = name + FLOAT_SUFFIX
            if node.input[i] not in added:
                constant = onnx.TensorProto()
                constant.CopyFrom(fp32_constants[name])
                constant.name = node.input[i]
                model.graph.initializer.append(constant)
                added.add(constant.name)
    return without_dead_nodes(model)


def without_dead_nodes(model):
    """Drop the nodes and initializers no graph output depends on (nodes are topologically sorted)."""
    needed = {output.name for output in model.graph.output}
    alive = []
    for node in reversed(model.graph.node):
        if needed.intersection(node.output):
            alive.append(node)
            needed.update(node.input)
    del model.graph.node[:]
    model.graph.node.extend(reversed(alive))
    constants = [init for init in model.graph.initializer if init.name in needed]
    del model.graph.initializer[:]
    model.graph.initializer.extend(constants)
    values = [info for info in model.graph.value_info if info.name in needed]
    del model.graph.value_info[:]
    model.graph.value_info.extend(values)
    return model

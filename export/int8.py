"""fp32 ONNX -> INT8 QDQ ONNX: post-training quantization of the UNet's 3D convolutions with NNCF,
and the surgery that puts chosen convolutions back in float.

What is quantized, and why (measured on the demo model, 2026-11-28/29, benchmarks/results/int8-*):
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
- Activations are smoothed first (SmoothQuant, Xiao et al. 2023, applied to convolutions): a per-tensor
  int8 scale fits badly where a few input channels are far larger than the rest (on the demo, the
  largest channel of a convolution's input is up to 38x its median channel). `smooth_activations`
  divides each input channel by s_c = max|x_c|^alpha / max|W[:, c]|^(1 - alpha) with a Mul before
  the convolution and multiplies the weights' input channel by s_c: the same fp32 network, with the
  activations' outliers moved into the weights (quantized per output channel). OpenVINO folds the Mul
  into the quantizer; TensorRT fuses it into the preceding pointwise kernel. On the demo (2026-11-29)
  it took the fully quantized network from 26.0 to 28.8 dB and the gate kept 3 convolutions in float
  instead of 7; alpha 0.3-0.5 did about as well, 0.7 gave 26.5 dB and 0.85 22.4 dB.
- Weights take 8 bits where the CPU sums int8 products in int32 (VNNI, AMX; and TensorRT's GPUs), 7
  where it does not: there oneDNN adds pairs of u8 x s8 products in int16, which saturates. NNCF's
  default fixes that only for the first convolutions after an input, but on a conditional UNet the
  timestep reaches nearly every convolution through its norm, so it gave 26 of the demo's 31 quantized
  convolutions 7-bit weights everywhere. Measured on the demo, smoothed, fully quantized (2026-11-29):
  8-bit weights 30.7 dB on AVX-512 VNNI and 26.8 dB with oneDNN capped to AVX2; 7-bit, 28.8 and 28.6 dB.
- A few convolutions cost most of the error (on the demo without smoothing, 7 of 32 took the final
  videos from 24.9 to 32.2 dB; each of the others alone costs less than 0.1 dB of it). `float_convs`
  takes chosen ones out of one quantized network instead of quantizing again, so the quality gate
  (vdm/int8.py) can try many choices cheaply.
"""
from __future__ import annotations

import functools
import logging

import numpy as np

from vdm.errors import VdmError

SMOOTHING_ALPHA = 0.5  # SmoothQuant's default; the fewest float convolutions on the demo (see above)
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


def copy_of(model):
    """A deep copy of an onnx.ModelProto: the graph surgery below never edits the network it is given."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def guard_outputs(model):
    """A copy of `model` where every graph output has an Identity of its own. NNCF removes no-op Casts,
    and the TorchScript exporter ends in one that writes the output 'out': without the Identity, 'out'
    vanished."""
    import onnx

    model = copy_of(model)  # not in place: guarding a network twice makes an Identity read its own output
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


def float_by_design(model) -> list[str]:
    """The Conv nodes never quantized: the first and last feature convolutions and the statistics ones."""
    return end_convs(model) + statistics_convs(model)


def inner_convs(model) -> list:
    """The Conv nodes `quantize_network` quantizes: feature convolutions but the first and last."""
    kept = set(float_by_design(model))
    return [node for node in model.graph.node if node.op_type == "Conv" and node.name not in kept]


def channel_maxima(model, feeds: list[dict], names: list[str]) -> dict:
    """tensor name -> max |value| per channel (C,) of that (B, C, T, H, W) tensor over `feeds`, read
    by ONNX Runtime from a copy of `model` that outputs the tensors too."""
    import onnx
    import onnxruntime as ort

    probe = copy_of(model)
    for name in names:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    maxima = {name: 0.0 for name in names}
    for feed in feeds:
        for name, value in zip(names, session.run(names, feed)):
            maxima[name] = np.maximum(maxima[name], np.abs(value).max(axis=(0, 2, 3, 4)))
    return maxima


def smoothing_scales(activation_max, weight, alpha: float):
    """s (C_in,): SmoothQuant's per-input-channel scale, max|x_c|^alpha / max|W[:, c]|^(1 - alpha);
    weight (C_out, C_in, kT, kH, kW). Floors keep dead channels finite."""
    weight_max = np.abs(weight).max(axis=(0, 2, 3, 4))
    return (np.maximum(activation_max, 1e-5) ** alpha / np.maximum(weight_max, 1e-5) ** (1 - alpha)).astype(np.float32)


def smooth_activations(fp32_model, feeds: list[dict], alpha: float = SMOOTHING_ALPHA) -> tuple[object, dict]:
    """(a copy of `fp32_model` computing the same function, what was done): each inner convolution
    reads its input divided per channel by `smoothing_scales` (a Mul) and has its weights multiplied by
    them, so the activations the quantizer sees have no channel far above the rest."""
    import onnx
    from onnx import numpy_helper

    model = copy_of(fp32_model)
    convs = inner_convs(model)
    maxima = channel_maxima(model, feeds, sorted({conv.input[0] for conv in convs}))
    constants = {init.name: init for init in model.graph.initializer}
    muls = {}
    for conv in convs:
        weight = numpy_helper.to_array(constants[conv.input[1]])
        scales = smoothing_scales(maxima[conv.input[0]], weight, alpha)
        constants[conv.input[1]].CopyFrom(numpy_helper.from_array(weight * scales[None, :, None, None, None],
                                                                  conv.input[1]))
        divisor = numpy_helper.from_array((1 / scales).reshape(1, -1, 1, 1, 1), f"{conv.name}_smoothing")
        model.graph.initializer.append(divisor)
        smoothed = f"{conv.input[0]}_smoothed_for_{conv.name}"
        muls[conv.name] = onnx.helper.make_node("Mul", [conv.input[0], divisor.name], [smoothed],
                                                name=f"{conv.name}_smoothing")
        conv.input[0] = smoothed
    nodes = [node for original in model.graph.node for node in (muls.get(original.name), original) if node]
    del model.graph.node[:]
    model.graph.node.extend(nodes)  # each Mul right before its convolution: still topologically sorted
    return model, {"smoothing": f"SmoothQuant alpha {alpha:g} on {len(convs)} convolutions"}


def quantize_network(fp32_model, feeds: list[dict], weight_bits: int | None = None) -> tuple[object, dict]:
    """(the QDQ network, what was done): every convolution but the first and last quantized,
    calibrated on `feeds` (input name -> array, one network call each). `fp32_model` may be smoothed
    first (`smooth_activations`). `weight_bits` 7 halves the weights' range (NNCF's overflow fix) for
    CPUs without VNNI/AMX; None: 8 where this CPU has them (vdm.machine.cpu_has_int8_dot_product),
    else 7."""
    nncf = import_nncf()
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    from vdm.machine import cpu_has_int8_dot_product

    if weight_bits is None:
        weight_bits = 8 if cpu_has_int8_dot_product() else 7

    overflow_fix = {8: OverflowFix.DISABLE, 7: OverflowFix.ENABLE}  # 7 bits: NNCF's overflow fix on every layer
    if weight_bits not in overflow_fix:
        raise VdmError(f"int8 weights take 7 or 8 bits, not {weight_bits}")

    model = guard_outputs(fp32_model)
    kept = float_by_design(model)
    previous = logging.getLogger("nncf").level
    nncf.set_log_level(logging.ERROR)  # NNCF logs a line per node it skips
    try:
        quantized = nncf.quantize(model, nncf.Dataset(feeds), preset=nncf.QuantizationPreset.PERFORMANCE,
                                  target_device=nncf.TargetDevice.ANY, subset_size=len(feeds),
                                  ignored_scope=nncf.IgnoredScope(names=kept, types=other_types(model, "Conv")),
                                  advanced_parameters=AdvancedQuantizationParameters(
                                      disable_bias_correction=True, overflow_fix=overflow_fix[weight_bits]))
    finally:
        nncf.set_log_level(previous)
    return quantized, {"method": "nncf.quantize, PERFORMANCE preset (symmetric int8: TensorRT explicit "
                                 "quantization), no bias correction", "nncf": nncf.__version__,
                       "weight_bits": weight_bits}


def float_convs(quantized, fp32_model, names: list[str]):
    """A copy of `quantized` where the convolutions `names` read their input before its quantizer and
    use fp32's weights and bias again (a quantized one reads int8 weights, and NNCF may have changed
    its bias); quantizers and int8 weights nothing reads any more are dropped."""
    import onnx

    model = copy_of(quantized)
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

"""Specification of the backend contract (vdm.runtime.backend): what each backend declares, the one
`auto` precision rule, device choice from the declarations, and options checked against them."""
from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from vdm.cli.run import main as run_main
from vdm.errors import VdmError
from vdm.runtime.backend import BACKENDS, Backend, all_options, backend_class, check_options
from vdm.runtime.precision import PRECISIONS, auto_order, resolve_precision

AMX = {"avx2", "amx_bf16", "amx_tile"}
AVX2 = {"avx2", "fma"}


@pytest.mark.parametrize("name", list(BACKENDS))
def test_every_backend_declares_its_source_devices_precisions_and_its_own_load(name):
    cls = backend_class(name)
    assert cls.name == name and cls.source in ("checkpoint", "bundle")
    assert set(cls.computes) <= {"cpu", "cuda"} and cls.computes
    assert all(set(p) <= set(PRECISIONS) - {"auto"} for p in cls.computes.values())
    assert cls.load.__func__ is not Backend.load.__func__


def test_backend_options_are_declared_once_and_shared_by_name():
    options = all_options()
    assert {name: users for name, (_, users) in options.items()} == {
        "compile": ["torch"], "provider": ["onnxruntime"], "cuda_graph": ["onnxruntime", "tensorrt"],
        "threads": ["onnxruntime", "openvino"]}


@pytest.mark.parametrize("device, flags, order", [("cuda", AVX2, ("fp16", "bf16", "fp32")),
                                                  ("cpu", AMX, ("bf16", "fp32", "fp16")),
                                                  ("cpu", AVX2, ("fp32", "bf16", "fp16"))])
def test_auto_prefers_fp16_on_cuda_and_bf16_only_on_cpus_with_bf16_units(device, flags, order):
    assert auto_order(device, flags) == order


@pytest.mark.parametrize("name, device, flags, available, expected", [
    ("torch", "cuda", AVX2, None, "fp16"),
    ("torch", "cpu", AMX, None, "bf16"),
    ("torch", "cpu", AVX2, None, "fp32"),
    ("onnxruntime", "cpu", AMX, {"fp32", "fp16"}, "fp32"),  # it computes no bf16
    ("onnxruntime", "cuda", AVX2, {"fp32", "fp16"}, "fp16"),
    ("onnxruntime", "cuda", AVX2, {"fp32"}, "fp32"),  # what the bundle holds
    ("onnxruntime", "cpu", AVX2, {"fp16"}, "fp16"),
    ("tensorrt", "cuda", AVX2, {"fp32"}, "fp32"),
    ("openvino", "cpu", AMX, None, "bf16"),
])
def test_one_function_decides_auto_for_every_backend(name, device, flags, available, expected):
    cls = backend_class(name)
    assert resolve_precision("auto", device, cls.computes[device], name, available, flags) == expected


@pytest.mark.parametrize("name, device, precision", [("torch", "cpu", "fp16"), ("onnxruntime", "cpu", "bf16"),
                                                     ("tensorrt", "cuda", "bf16")])
def test_a_precision_the_backend_does_not_compute_there_is_refused_saying_what_it_does(name, device, precision):
    cls = backend_class(name)
    computes = " or ".join(cls.computes[device])
    with pytest.raises(VdmError, match=f"{name} computes {computes} on {device}, not {precision}"):
        resolve_precision(precision, device, cls.computes[device], name)


@pytest.mark.parametrize("name, device, expected", [("openvino", None, "cpu"), ("openvino", "auto", "cpu"),
                                                    ("tensorrt", None, "cuda"), ("torch", "cpu", "cpu"),
                                                    ("onnxruntime", "cuda:1", "cuda")])
def test_the_device_type_comes_from_the_declaration_without_touching_a_gpu(name, device, expected):
    assert backend_class(name).device_type(device) == expected


def test_auto_device_is_the_cpu_for_a_backend_with_both_when_torch_sees_no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert backend_class("onnxruntime").device_type("auto") == "cpu"


@pytest.mark.parametrize("name, device, message", [
    ("openvino", "cuda", "the openvino backend runs on the CPU (--device cpu), not on an NVIDIA GPU"),
    ("tensorrt", "cpu", "the tensorrt backend runs on an NVIDIA GPU (--device cuda), not on the CPU"),
    ("torch", "tpu", "unknown device 'tpu'; use auto, cpu or cuda"),
])
def test_a_device_the_backend_does_not_run_on_is_refused(name, device, message):
    with pytest.raises(VdmError, match=message.replace("(", r"\(").replace(")", r"\)")):
        backend_class(name).device_type(device)


def test_options_of_another_backend_are_refused_naming_who_takes_them():
    with pytest.raises(VdmError, match="--cuda-graph only applies to --backend onnxruntime or tensorrt"):
        check_options("torch", {"cuda_graph": True})
    assert check_options("onnxruntime", {"cuda_graph": False, "threads": 2, "provider": None, "compile": False}) == {
        "cuda_graph": False, "threads": 2}


@pytest.mark.parametrize("option", [option for option, _ in all_options().values()], ids=lambda o: o.flag)
def test_vdm_run_offers_every_declared_option_as_a_flag(option):
    assert option.flag in CliRunner().invoke(run_main, ["--help"]).output


def test_vdm_run_refuses_a_flag_for_another_backend_before_loading(tmp_path):
    result = CliRunner().invoke(run_main, [str(tmp_path / "missing.safetensors"), "--threads", "2"])
    assert result.exit_code == 2 and "error: --threads only applies to --backend onnxruntime or openvino" in result.output

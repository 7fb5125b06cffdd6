"""Nothing lost, nothing half-checked: what each command does with damaged artifacts and odd options.

Each case pins the user-facing outcome: the exit code, one `error:` line naming the file and field
(or flag), and the files left exactly as they were.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import _make_tiny_unet, _tiny_model_config, quiet

import vdm.train
from vdm.atomic import atomic_write_text
from vdm.bundle import file_record
from vdm.checkpoint import FORMAT, FORMAT_VERSION, save_checkpoint
from vdm.cli.eval import main as eval_main
from vdm.cli.export import main as export_main
from vdm.cli.run import main as run_main
from vdm.config import DiffusionConfig, to_dict
from vdm.errors import VdmError
from test_train import TINY_TOML


def invoke(command, *args):
    return CliRunner().invoke(command, [str(a) for a in args])


def one_error_line(result, exit_code: int = 2) -> str:
    """The command exited with `exit_code` through a VdmError and said `error: ...` in one line."""
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def snapshot(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file below `folder`."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# 1. A run folder belongs to one run


@pytest.fixture
def trained_run(tmp_path) -> tuple[Path, Path]:
    """(a tiny config file, a run folder that holds a 1-step run)."""
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_TOML)
    out = tmp_path / "run"
    result = invoke(vdm.train.main, "--config", config, "--steps", 1, "--batch-size", 2, "--out", out,
                    "--device", "cpu")
    assert result.exit_code == 0, result.output
    return config, out


def test_a_new_run_refuses_a_folder_that_holds_a_run_and_leaves_it_as_it_was(trained_run):
    config, out = trained_run
    before = snapshot(out)
    result = invoke(vdm.train.main, "--config", config, "--steps", 1, "--batch-size", 2, "--out", out,
                    "--device", "cpu")
    line = one_error_line(result)
    assert "already holds a training run" in line and "--resume" in line and "--overwrite" in line
    assert snapshot(out) == before


def test_overwrite_moves_the_old_run_aside_before_starting_the_new_one(trained_run):
    config, out = trained_run
    before = snapshot(out)
    result = invoke(vdm.train.main, "--config", config, "--steps", 1, "--batch-size", 2, "--out", out,
                    "--device", "cpu", "--overwrite")
    assert result.exit_code == 0, result.output
    aside = [p for p in out.parent.iterdir() if p.name.startswith("run.replaced-")]
    assert len(aside) == 1 and snapshot(aside[0]) == before
    assert f"moved the earlier run in {out} to {aside[0]}" in result.output
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1  # a new run, not appended to


def test_resume_and_overwrite_together_are_refused(trained_run):
    config, out = trained_run
    line = one_error_line(invoke(vdm.train.main, "--config", config, "--out", out, "--resume", "--overwrite"))
    assert "pass one of them" in line


@pytest.mark.parametrize("damage, field", [
    (lambda s: s.pop("optimizer"), "field optimizer is missing"),
    (lambda s: s.update(step="three"), "field step is the text 'three'; expected an integer >= 0"),
    (lambda s: s.update(config=None), "field config is null"),
])
def test_a_damaged_training_state_is_one_line_naming_the_field(trained_run, damage, field):
    config, out = trained_run
    path = out / "checkpoints" / "train_state.pt"
    state = torch.load(path, weights_only=False)
    damage(state)
    torch.save(state, path)
    line = one_error_line(invoke(vdm.train.main, "--config", config, "--steps", 2, "--batch-size", 2,
                                 "--out", out, "--resume", "--device", "cpu"))
    assert str(path) in line and field in line


# ---------------------------------------------------------------------------------------------
# 2. Manifests are checked, field by field, before any work


@pytest.fixture
def bundle_copy(tmp_path, tiny_bundle) -> Path:
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


def edit_manifest(bundle: Path, change) -> None:
    manifest = json.loads((bundle / "vdm.json").read_text())
    change(manifest)
    (bundle / "vdm.json").write_text(json.dumps(manifest))


MANIFEST_DAMAGE = [
    (lambda m: m["networks"]["fp32"]["shapes"].pop("height"), "field networks.fp32.shapes.height is missing"),
    (lambda m: m["networks"]["fp32"].update(inputs=None), "field networks.fp32.inputs is null"),
    (lambda m: m["networks"]["fp32"]["shapes"].update(height="8"),
     "field networks.fp32.shapes.height is the text '8'; expected a positive integer"),
    (lambda m: m.update(source=[]), "field source is a list of 0; expected an object"),
    (lambda m: m["networks"]["fp32"].update(file="../unet.onnx"), "field networks.fp32.file"),
    (lambda m: m.update(networks={}), "field networks is an object of 0; expected a non-empty object"),
]


@pytest.mark.parametrize("damage, message", MANIFEST_DAMAGE)
@pytest.mark.parametrize("command", [run_main, eval_main], ids=["vdm-run", "vdm-eval"])
def test_a_damaged_manifest_is_one_line_naming_the_file_and_field(bundle_copy, tmp_path, command, damage, message):
    edit_manifest(bundle_copy, damage)
    line = one_error_line(invoke(command, bundle_copy, "--backend", "onnxruntime", "--device", "cpu"))
    assert f"{bundle_copy / 'vdm.json'}: {message}" in line


def test_exporting_again_repairs_a_damaged_manifest(bundle_copy, tiny_bundle_checkpoint):
    edit_manifest(bundle_copy, MANIFEST_DAMAGE[0][0])
    result = invoke(export_main, tiny_bundle_checkpoint, "--out", bundle_copy, "--exporter", "torchscript")
    assert result.exit_code == 0, result.output
    assert "the bundle's manifest will be replaced" in result.output
    assert invoke(run_main, bundle_copy, "--backend", "onnxruntime", "--steps", 1, "-n", 1,
                  "--out", bundle_copy.parent / "videos").exit_code == 0


# ---------------------------------------------------------------------------------------------
# 3. Networks are tied to their manifest


@pytest.fixture(scope="module")
def other_bundle(tmp_path_factory) -> Path:
    """A bundle of another tiny model with the same shapes (other weights)."""
    from vdm.export.pipeline import ExportOptions, export_bundle

    folder = tmp_path_factory.mktemp("other")
    cfg = _tiny_model_config()
    save_checkpoint(folder / "other.safetensors", _make_tiny_unet(cfg, seed=5).state_dict(), cfg, DiffusionConfig())
    export_bundle(folder / "other.safetensors", folder / "bundle", ExportOptions(exporter="torchscript"), log=quiet)
    return folder / "bundle"


def test_a_same_shape_network_with_other_weights_is_refused_at_load(bundle_copy, other_bundle, tmp_path):
    shutil.copy(other_bundle / "unet.onnx", bundle_copy / "unet.onnx")
    line = one_error_line(invoke(run_main, bundle_copy, "--backend", "onnxruntime", "--precision", "fp32",
                                 "--out", tmp_path / "videos"))
    assert "unet.onnx is not the file its manifest describes" in line and "vdm-export CHECKPOINT --out" in line
    assert not (tmp_path / "videos").exists()


def test_a_network_of_another_shape_is_refused_at_load_not_at_the_first_step(bundle_copy, tmp_path):
    edit_manifest(bundle_copy, lambda m: m["networks"]["fp32"]["outputs"][0]["shape"].__setitem__(1, 4))
    line = one_error_line(invoke(run_main, bundle_copy, "--backend", "onnxruntime", "--precision", "fp32",
                                 "--out", tmp_path / "videos"))
    assert "unet.onnx: out has shape" in line and "its manifest says ['batch', 4, 'frames', 8, 8]" in line


def test_a_verified_file_is_not_hashed_again_until_it_changes(bundle_copy):
    from vdm.bundle import VERIFIED_NAME, read_bundle

    read_bundle(bundle_copy).file("fp32")
    assert "unet.onnx" in json.loads((bundle_copy / VERIFIED_NAME).read_text())
    data = bytearray((bundle_copy / "unet.onnx").read_bytes())
    data[-1] ^= 1  # same size, one bit flipped: the stat fingerprint changes, so it is hashed again
    (bundle_copy / "unet.onnx").write_bytes(bytes(data))
    with pytest.raises(VdmError, match="its sha256 differs"):
        read_bundle(bundle_copy).file("fp32")


# ---------------------------------------------------------------------------------------------
# 4. Checkpoint metadata is checked before any work


def write_checkpoint_with(path: Path, **metadata: str) -> Path:
    from safetensors.torch import save_file

    cfg = _tiny_model_config()
    fields = {"format": FORMAT, "format_version": FORMAT_VERSION, "model_config": json.dumps(to_dict(cfg)),
              "diffusion_config": json.dumps(to_dict(DiffusionConfig())), "step": "0"}
    save_file(_make_tiny_unet(cfg).state_dict(), str(path), metadata={**fields, **metadata})
    return path


@pytest.mark.parametrize("metadata, message", [
    ({"model_config": "{not json"}, "field model_config is not JSON"),
    ({"model_config": "[1, 2]"}, "field model_config is a list of 2; expected an object"),
    ({"step": "three"}, "field step is the text 'three'; expected an integer >= 0"),
])
@pytest.mark.parametrize("command", [run_main, export_main], ids=["vdm-run", "vdm-export"])
def test_bad_checkpoint_metadata_is_one_line_before_any_work(tmp_path, command, metadata, message):
    checkpoint = write_checkpoint_with(tmp_path / "bad.safetensors", **metadata)
    args = ["--out", tmp_path / "out"] + (["--device", "cpu"] if command is run_main else [])
    line = one_error_line(invoke(command, checkpoint, *args))
    assert f"{checkpoint}: {message}" in line
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_with_nan_weights_is_refused_naming_the_tensor(tmp_path):
    cfg = _tiny_model_config()
    state = _make_tiny_unet(cfg).state_dict()
    state["conv_out.weight"][0, 0, 0, 0, 0] = float("nan")
    save_checkpoint(tmp_path / "nan.safetensors", state, cfg, DiffusionConfig())
    line = one_error_line(invoke(run_main, tmp_path / "nan.safetensors", "--out", tmp_path / "out"))
    assert "tensor conv_out.weight holds 1 NaN/inf value(s)" in line
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# 5. Options are checked up front; a NaN latent stops the run


@pytest.mark.parametrize("flag, value", [("--fps", 0), ("--frames", 0), ("--size", 0), ("--num-samples", 0),
                                         ("--fps", -3)])
def test_counts_must_be_positive(tiny_checkpoint, tmp_path, flag, value):
    line = one_error_line(invoke(run_main, tiny_checkpoint, flag, value, "--out", tmp_path / "out"))
    assert line == f"error: {flag} must be a positive integer, got {value}"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags, message", [
    (("--guidance", "nan", "--class", 0), "guidance must be a finite number, got nan"),
    (("--guidance", "inf", "--class", 0), "guidance must be a finite number, got inf"),
    (("--eta", "nan", "--sampler", "ddim"), "eta must be a finite number >= 0, got nan"),
])
def test_guidance_and_eta_must_be_finite(tiny_conditional_checkpoint, tmp_path, flags, message):
    line = one_error_line(invoke(run_main, tiny_conditional_checkpoint, *flags, "--out", tmp_path / "out"))
    assert message in line
    assert not (tmp_path / "out").exists()


def test_a_network_that_outputs_nan_stops_sampling_naming_the_step_and_writes_nothing(bundle_copy, tmp_path):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(bundle_copy / "unet.onnx"))
    weight = next(w for w in model.graph.initializer if w.data_type == onnx.TensorProto.FLOAT and w.name.endswith("weight"))
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * float("nan"), weight.name))
    onnx.save(model, str(bundle_copy / "unet.onnx"))
    edit_manifest(bundle_copy, lambda m: m["networks"]["fp32"]["files"].update(
        {"unet.onnx": file_record(bundle_copy / "unet.onnx")}))
    result = invoke(run_main, bundle_copy, "--backend", "onnxruntime", "--precision", "fp32", "--steps", 3,
                    "--out", tmp_path / "videos")
    line = one_error_line(result, exit_code=1)
    assert "the latent became NaN/inf at sampling step 1 of 3 (t=999)" in line and "no videos were written" in line
    assert not (tmp_path / "videos").exists()


# ---------------------------------------------------------------------------------------------
# 6. Interrupted writes leave nothing behind; an output folder holds one run


def test_the_next_write_removes_temporary_files_an_interrupted_writer_left(tmp_path):
    target = tmp_path / "latest.safetensors"
    dead = tmp_path / "latest.tmp-999999999-k2j4.safetensors"  # no such process
    untagged = tmp_path / "latest.tmp-k2j4.safetensors"  # from before writers were tagged
    alive = tmp_path / f"latest.tmp-{os.getpid()}-abcd.safetensors"  # a writer still at work
    other = tmp_path / "other.tmp-999999999-k2j4.safetensors"  # another target's
    for path in (dead, untagged, alive, other):
        path.write_bytes(b"x" * 1000)
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert not dead.exists() and not untagged.exists() and alive.exists() and other.exists()


def test_the_next_export_removes_a_staging_folder_an_interrupted_export_left(bundle_copy, tiny_bundle_checkpoint):
    stale = bundle_copy / ".export-999999999-abcd"
    stale.mkdir()
    (stale / "unet.onnx").write_bytes(b"half")
    result = invoke(export_main, tiny_bundle_checkpoint, "--out", bundle_copy, "--exporter", "torchscript")
    assert result.exit_code == 0, result.output
    assert "removed .export-999999999-abcd, left by an interrupted export" in result.output
    assert not stale.exists() and not list(bundle_copy.glob(".export-*"))


def test_vdm_run_replaces_an_earlier_runs_samples_and_says_so(tiny_checkpoint, tmp_path):
    out = tmp_path / "videos"
    assert invoke(run_main, tiny_checkpoint, "-n", 3, "--steps", 1, "--out", out).exit_code == 0
    (out / "notes.txt").write_text("mine")
    result = invoke(run_main, tiny_checkpoint, "-n", 2, "--steps", 1, "--out", out)
    assert result.exit_code == 0, result.output
    assert "replacing the 4 sample files an earlier run left there" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["grid.gif", "notes.txt", "sample_000.mp4", "sample_001.mp4"]


# ---------------------------------------------------------------------------------------------
# More of the same kinds, found by trying the CLIs


@pytest.mark.parametrize("exporter, opset", [("dynamo", 17), ("torchscript", 13), ("dynamo", 5), ("dynamo", 99)])
def test_vdm_export_refuses_an_opset_its_exporter_cannot_write_before_exporting(tmp_path, tiny_checkpoint,
                                                                                 exporter, opset):
    line = one_error_line(invoke(export_main, tiny_checkpoint, "--out", tmp_path / "b", "--exporter", exporter,
                                 "--opset", opset))
    assert f"--opset {opset}: the {exporter} exporter writes opsets" in line
    assert not (tmp_path / "b").exists()


def test_vdm_train_refuses_a_negative_seed(tmp_path):
    line = one_error_line(invoke(vdm.train.main, "--seed", -1, "--out", tmp_path / "run", "--device", "cpu"))
    assert line == "error: seed must be >= 0, got -1"
    assert not (tmp_path / "run").exists()


def test_a_file_system_refusal_is_one_line_not_a_traceback(tiny_checkpoint, tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    line = one_error_line(invoke(run_main, tiny_checkpoint, "--steps", 1, "-n", 1, "--out", tmp_path / "afile" / "v"))
    assert "afile" in line


def test_vdm_export_refuses_int8_with_static_shapes_or_a_small_max_batch_before_exporting(tiny_checkpoint, tmp_path):
    for flags in (("--static",), ("--max-batch", 4)):
        line = one_error_line(invoke(export_main, tiny_checkpoint, "--out", tmp_path / "b", "--int8", *flags))
        assert "--int8 calibrates at batch 1 and gates 8 videos in one batch" in line
    line = one_error_line(invoke(export_main, tiny_checkpoint, "--out", tmp_path / "b", "--calibration-videos", 4))
    assert "--calibration-videos only applies with --int8" in line
    line = one_error_line(invoke(export_main, tiny_checkpoint, "--out", tmp_path / "b", "--int8-weight-bits", 7))
    assert "--int8-weight-bits only applies with --int8" in line
    assert not (tmp_path / "b").exists()

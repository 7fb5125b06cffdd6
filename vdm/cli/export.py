"""`vdm-export`: checkpoint -> deployment bundle (ONNX + manifest, optionally a TensorRT engine)."""
from __future__ import annotations

from pathlib import Path

import click

from vdm.errors import VdmError, cli_errors


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", type=click.Path())
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Bundle directory.")
@click.option("--fp16", is_flag=True, help="Float16 weights and compute (norms, softmax, embeddings stay fp32).")
@click.option("--opset", default=18, show_default=True, type=int, help="ONNX opset.")
@click.option("--batch", default=1, show_default=True, type=int, help="Batch of the sample input (optimal batch).")
@click.option("--frames", type=int, help="Frames of the sample input (default: the model's).")
@click.option("--size", type=int, help="Frame size H = W, fixed in the graph (default: the model's).")
@click.option("--static", is_flag=True, help="Fix every shape (batch, frames) to the sample input's.")
@click.option("--max-batch", default=64, show_default=True, type=int, help="Largest batch of the dynamic axis.")
@click.option("--max-frames", default=128, show_default=True, type=int, help="Largest frames of the dynamic axis.")
@click.option("--exporter", default="dynamo", show_default=True, type=click.Choice(["dynamo", "torchscript"]),
              help="torch.export-based exporter, or the older (faster, deprecated) tracing one.")
@click.option("--external-data", is_flag=True, default=None,
              help="Keep weights in unet.onnx.data (automatic above protobuf's 2 GB limit).")
@click.option("--int8", is_flag=True,
              help="Also an int8 network (unet.int8.onnx), calibrated on sampling trajectories and published only "
                   "if its videos pass the quality gate (needs NNCF and OpenVINO).")
@click.option("--calibration-videos", type=int,
              help="Videos whose every sampling step calibrates --int8.  [default: 16]")
@click.option("--int8-weight-bits", type=click.Choice(["7", "8"]),
              help="Bits of --int8's weights.  [default: 8 where this CPU has VNNI or AMX, else 7 (without, "
                   "8-bit weights saturate)]")
@click.option("--tensorrt", is_flag=True, help="Also build a TensorRT engine (needs TensorRT and a GPU).")
@click.option("--min-shape", help="TensorRT profile minimum as BATCHxFRAMES, e.g. 1x8 (default: manifest).")
@click.option("--opt-shape", help="TensorRT profile optimum as BATCHxFRAMES (default: the sample input).")
@click.option("--max-shape", help="TensorRT profile maximum as BATCHxFRAMES (default: batch max(2 x opt, 8), opt frames).")
@click.option("--workspace-gb", default=8.0, show_default=True, type=float, help="TensorRT workspace limit.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@cli_errors
def main(checkpoint, out, fp16, opset, batch, frames, size, static, max_batch, max_frames, exporter,
         external_data, int8, calibration_videos, int8_weight_bits, tensorrt, min_shape, opt_shape, max_shape,
         workspace_gb, debug):
    """Export CHECKPOINT (.safetensors from vdm-train) to a bundle in --out: ONNX, manifest, parity."""
    from vdm.export.pipeline import ExportOptions, export_bundle

    if (min_shape or opt_shape or max_shape) and not tensorrt:
        raise VdmError("--min-shape/--opt-shape/--max-shape only apply with --tensorrt")
    precision = "fp16" if fp16 else "fp32"
    stray = [flag for flag, value in (("--calibration-videos", calibration_videos),
                                      ("--int8-weight-bits", int8_weight_bits)) if value is not None]
    if stray and not int8:
        raise VdmError(f"{' and '.join(stray)} only appl{'y' if len(stray) > 1 else 'ies'} with --int8")
    if int8:
        from vdm.export.int8 import import_nncf
        from vdm.int8 import Int8Options

        if fp16:
            raise VdmError("--int8 is made from the fp32 network: run `vdm-export --int8` and `vdm-export --fp16` "
                           "as two commands")
        chosen = {"calibration_videos": calibration_videos,
                  "weight_bits": int(int8_weight_bits) if int8_weight_bits else None}
        int8_options = Int8Options(**{k: v for k, v in chosen.items() if v is not None})
        if static or max_batch < int8_options.gate_videos:
            raise VdmError(f"--int8 calibrates at batch 1 and gates {int8_options.gate_videos} videos in one batch: "
                           f"export without --static, with --max-batch {int8_options.gate_videos} or more")
        import_nncf()  # fail before the (slow) ONNX export
    if tensorrt:
        from vdm.export.tensorrt_build import EngineOptions, require_tensorrt

        require_tensorrt()  # fail before the (slow) ONNX export
        engine_options = EngineOptions.from_cli(min_shape, opt_shape, max_shape, workspace_gb)
    options = ExportOptions(precision=precision, opset=opset, batch=batch, frames=frames, size=size,
                            static=static, max_batch=max_batch, max_frames=max_frames, exporter=exporter,
                            external_data=external_data)
    manifest = export_bundle(Path(checkpoint), Path(out), options, log=click.echo)
    if int8:
        from vdm.int8 import export_int8

        manifest["networks"]["int8"] = export_int8(Path(checkpoint), Path(out), int8_options, log=click.echo)
    if tensorrt:
        from vdm.export.tensorrt_build import build_engine_for_bundle

        build_engine_for_bundle(Path(out), precision, engine_options, log=click.echo)
    click.echo(f"bundle: {out} ({', '.join(manifest['networks'])})")


if __name__ == "__main__":
    main()

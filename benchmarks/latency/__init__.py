"""Latency of every backend on one model: a denoiser call, a whole video, memory, TFLOP/s, set-up and parity.

    python -m benchmarks.latency MODEL | --preset tiny|small|base
        [--backends torch,torch-compile,onnxruntime,onnxruntime-cudagraph,tensorrt,openvino]
        [--precisions fp32,fp16,bf16] [--batch 1,4] [--frames T] [--size S] [--sampler unipc] [--steps N]
        [--device cpu|cuda] [--quick] [--name NAME] [--out benchmarks/results] [--calls N] [--threads N]

MODEL is a checkpoint (.safetensors; it is copied first, so a training run that replaces it cannot
change the weights mid-benchmark) or a bundle directory (then the torch rows, and the torch fp32
reference the parity needs, are unavailable: pass the checkpoint instead). `--preset` builds a seeded
random model of that preset: weights are random, so only the timings mean anything. The bundles the
ONNX-based backends need are exported into a temporary work directory, and that export is timed as
set-up cost.

One row per (backend x precision x batch), all on the same inputs and seed:
  call      one denoiser call: median and p90 of --calls timed calls after --warmup warm-up calls
  video     one whole generation (every sampler step): median of --videos runs; videos/s = batch / that
  memory    CPU: the process's peak RSS during the row (load, calls, videos) minus its RSS before; the
            peak is reset per row through /proc/self/clear_refs. GPU: torch's allocator peak, which
            misses what onnxruntime and TensorRT allocate themselves (the row's mem_kind says which)
  TFLOP/s   FLOPs of one call, counted once per shape by torch.utils.flop_counter on the fp32 torch
            model, divided by the median call
  set-up    export (+ TensorRT engine build) + backend load + the first call (torch.compile compiles there)
  parity    PSNR (dB, peak-to-peak 2) of the final videos against torch fp32 from the same seed; 200 dB
            means identical (vdm.fidelity, the definition export parity uses too)
Timing: time.perf_counter around each call on the CPU; CUDA events on the current stream on a GPU.
Which precisions a backend computes on which device is its own declaration (Backend.computes):
combinations it does not compute (onnxruntime bf16, torch fp16 on the CPU...) are skipped and listed;
a backend that cannot run here (package missing, no GPU) is a row 'unavailable' with the reason; any
other failure is a row 'error' and the run goes on (exit code 1 at the end).

--quick is a smoke run (under 2 minutes for the tiny preset on 2 CPU cores): 3 warm-up + 5 timed
calls, 2 videos, 5 steps, batch 1, fp32 only, the torchscript exporter (~5 s instead of the dynamo
exporter's 24-44 s for the tiny preset on this CPU), and no torch-compile unless --backends names it
(inductor's first compile of the tiny UNet took ~90 s here). Flags given explicitly override these.
On a shared CPU pass --threads 1: torch with 2 threads on 2 cores, one busy, ran the tiny UNet 7x slower.

Writes results.json, results.md and latency.png into OUT/NAME/ (NAME: <preset-or-model>-<device>-<date>).

The package, one file per concern: plan.py (settings, the --backends variants, the rows to run),
model.py (the model and the bundles/engines exported from it), measure.py (one row's measurements),
report.py (the three reports), cli.py (the flags).
"""

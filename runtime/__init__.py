"""Inference: the sampling loop and its backends (torch, onnxruntime, tensorrt, openvino)."""
from vdm.runtime.backend import BACKENDS, Backend, load_backend
from vdm.runtime.generator import VideoGenerator
from vdm.runtime.sampling import sample, sample_plan, sampler_for, sampling_plan
from vdm.samplers import Restart

__all__ = ["BACKENDS", "Backend", "Restart", "VideoGenerator", "load_backend", "sample", "sample_plan", "sampler_for",
           "sampling_plan"]

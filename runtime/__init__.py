"""Inference: the sampling loop and its backends (torch, onnxruntime, tensorrt, openvino)."""
from vdm.runtime.backend import BACKENDS, Backend, load_backend
from vdm.runtime.generator import VideoGenerator
from vdm.runtime.sampling import sample, sampler_for

__all__ = ["BACKENDS", "Backend", "VideoGenerator", "load_backend", "sample", "sampler_for"]

"""Export: checkpoint -> deployment bundle (ONNX, optional TensorRT engine, manifest)."""

"""One sampling call of the demo alone and autoguided by its guide: median wall time of REPS calls each,
interleaved, batch 4, torch on the CPU, at fp32 and bf16 (run from the repository root):
    OMP_NUM_THREADS=2 python benchmarks/results/demo-autoguidance-cpu-2026-12-06/latency.py"""
import statistics, time

import torch

from vdm.demo import DEMO_CHECKPOINT, DEMO_GUIDE, DEMO_GUIDE_WEIGHT
from vdm.machine import cpu_flags, cpu_model
from vdm.runtime.autoguidance import AutoguidedBackend
from vdm.runtime.backend import load_backend

REPS, BATCH = 50, 4
WATCHED = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
print(f"{cpu_model()}, flags {' '.join(f for f in WATCHED if f in cpu_flags())}, torch {torch.__version__}, "
      f"{torch.get_num_threads()} threads")
for precision in ("fp32", "bf16"):
    alone = load_backend("torch", DEMO_CHECKPOINT, "cpu", precision)
    guide = load_backend("torch", DEMO_GUIDE, "cpu", precision)
    guided = AutoguidedBackend(alone, guide, DEMO_GUIDE_WEIGHT, DEMO_GUIDE)
    x = torch.randn(BATCH, 3, 8, 32, 32)
    t = torch.full((BATCH,), 500)
    times = {"demo alone": [], "guide alone": [], "autoguided": []}
    with torch.inference_mode():
        for _ in range(5):  # warm-up
            guided.predict(x, t, None)
        for _ in range(REPS):
            for name, backend in (("demo alone", alone), ("guide alone", guide), ("autoguided", guided)):
                start = time.perf_counter()
                backend.predict(x, t, None)
                times[name].append(time.perf_counter() - start)
    medians = {name: 1000 * statistics.median(v) for name, v in times.items()}
    print(f"{precision}: " + ", ".join(f"{name} {ms:.1f} ms" for name, ms in medians.items())
          + f"; autoguided / alone {medians['autoguided'] / medians['demo alone']:.2f}x")

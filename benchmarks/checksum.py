"""What a bundle's checksum check costs at load: vdm.bundle.verify_file on a file of --mib MiB.

    python -m benchmarks.checksum [--mib 2048] [--runs 3]

The first load of a file hashes it (sha256); later loads of the unchanged file compare its stat
fingerprint only. Prints medians with the machine, versions and date (benchmarks.common).
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import click

from benchmarks.common import facts_markdown, run_facts
from vdm.bundle import VERIFIED_NAME, file_record, verify_file


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@click.command()
@click.option("--mib", default=2048, show_default=True, type=int, help="Size of the network file.")
@click.option("--runs", default=3, show_default=True, type=int)
def main(mib: int, runs: int) -> None:
    facts = run_facts("benchmarks.checksum", sys.argv[1:])
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "unet.onnx"
        with open(path, "wb") as f:
            for _ in range(mib):
                f.write(os.urandom(1 << 20))
        record = file_record(path)  # also brings the file into the page cache, as a just-exported one is
        first, cached = [], []
        for _ in range(runs):
            (Path(folder) / VERIFIED_NAME).unlink(missing_ok=True)
            first.append(seconds(lambda: verify_file(path, record, "-")))
            cached.append(seconds(lambda: verify_file(path, record, "-")))
    print("\n".join(facts_markdown(facts)))
    first_s, cached_s = statistics.median(first), statistics.median(cached)
    print(f"- {mib} MiB network: first load {first_s:.2f} s ({mib / first_s:.0f} MiB/s), "
          f"later loads {cached_s * 1000:.2f} ms (medians of {runs})")


if __name__ == "__main__":
    main()

"""`python -m benchmarks.latency ...` (from the repository root): see the package docstring."""
from benchmarks.latency.cli import main

if __name__ == "__main__":
    main(prog_name="python -m benchmarks.latency")

"""Scratch: one table row per vdm-eval --json report: passes (count kept) from noise and from each
SNR, how many of 64 pass each property from SNR 0.1, 3-shape clips from SNR 1 and 3, the held-out loss.
usage: python tally.py REPORT.json[.gz]..."""
import gzip
import json
import sys


def cell(report):
    videos = report["videos"]
    passed = sum(v["passed"] for v in videos)
    kept = sum(v["properties"]["count"]["passed"] for v in videos)
    return f"{passed} ({kept})"


def main():
    print("| report | from noise | " + " | ".join(["SNR 0.01", "SNR 0.1", "SNR 1", "SNR 3"])
          + " | SNR 0.1: count / size / shape / motion | 3-shape SNR 1 / 3 | held-out loss |")
    for path in sys.argv[1:]:
        r = json.load(gzip.open(path) if path.endswith(".gz") else open(path))
        by_snr = {f["snr"]: f for f in r["from_snr"]}
        at_01 = by_snr.get(0.1)
        props = ("-" if at_01 is None else " / ".join(str(round(at_01["property_pass_rates"][p] * len(at_01["videos"])))
                                                       for p in ("count", "size", "shape", "motion")))
        three = " / ".join(str(by_snr[s]["by_shapes"]["3"][0]) if s in by_snr else "-" for s in (1.0, 3.0))
        print(f"| {path.rsplit('/', 1)[-1].removesuffix('.gz').removesuffix('.json')} | {cell(r)} | "
              + " | ".join(cell(by_snr[s]) if s in by_snr else "-" for s in (0.01, 0.1, 1.0, 3.0))
              + f" | {props} | {three} | {r['held_out_loss']:.4f} |")


if __name__ == "__main__":
    main()

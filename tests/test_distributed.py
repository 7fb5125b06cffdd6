"""Specification of multi-process training: vdm-train as torchrun starts it, two gloo ranks on the CPU.

Each rank is a process spawned with torch.multiprocessing that sets the variables torchrun sets
(RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) and calls `vdm.train.main` with vdm-train's
flags. The tiny model, a global batch of 4, 4 steps: a few seconds per run.
"""
from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import vdm.train
from vdm.checkpoint import load_torch
from vdm.distributed import Ranks, ranks_from_env
from vdm.errors import VdmError
from vdm.train import Trainer, build_preset

from test_train import TINY_TOML  # the tiny model as a vdm-train config (tests/ is on sys.path)

WORLD = 2
SPAWN_TIMEOUT_S = 180  # a hung collective fails the test instead of the suite


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def writes_under(root: Path, log: list[str]):
    """An audit hook recording every file this process opens for writing, creates, moves or deletes under root."""
    root = str(root.resolve())
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writing = any(c in (mode or "") for c in "wax+") or (mode is None and isinstance(flags, int) and flags & write_flags)
        elif event in ("os.rename", "os.mkdir", "os.remove", "os.rmdir", "os.chmod"):
            path, writing = args[0], True
        else:
            return
        if writing and isinstance(path, (str, os.PathLike)) and os.path.abspath(path).startswith(root):
            log.append(f"{event} {path}")

    return hook


def train_rank(rank: int, port: int, argv: list[str], report: str) -> None:
    """One rank: torchrun's environment, then vdm-train; saves its EMA weights and file writes to report."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    writes: list[str] = []
    sys.addaudithook(writes_under(Path(argv[argv.index("--out") + 1]), writes))
    trainer = vdm.train.main(argv, standalone_mode=False)
    torch.save({"ema": trainer.ema.state_dict(), "writes": writes}, f"{report}.rank{rank}.pt")


def spawn_run(argv: list[str], report: Path) -> list[dict]:
    """vdm-train on WORLD ranks; their reports (EMA state, writes) in rank order."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OMP_NUM_THREADS", "1")
        context = mp.start_processes(train_rank, args=(free_port(), argv, str(report)), nprocs=WORLD,
                                     join=False, start_method="spawn")
        deadline = time.monotonic() + SPAWN_TIMEOUT_S
        try:
            while not context.join(timeout=max(0.0, deadline - time.monotonic())):  # False: a rank still runs
                if time.monotonic() >= deadline:
                    pytest.fail(f"vdm-train on {WORLD} ranks did not finish in {SPAWN_TIMEOUT_S} s")
        finally:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
    return [torch.load(f"{report}.rank{r}.pt") for r in range(WORLD)]


def cli_args(config: Path, out: Path, steps: int, *extra: str) -> list[str]:
    """fp32: one process and two sum a batch's gradients in different orders, which bf16 would round apart."""
    return ["--config", str(config), "--steps", str(steps), "--batch-size", "4", "--sample-every", "0",
            "--out", str(out), "--device", "cpu", "--precision", "fp32", *extra]


def assert_states_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """One process for 4 steps; two ranks for 4 steps; two ranks for 2 steps, then resumed to 4."""
    tmp = tmp_path_factory.mktemp("distributed")
    config = tmp / "tiny.toml"
    config.write_text(TINY_TOML)
    one = vdm.train.main(cli_args(config, tmp / "one", 4), standalone_mode=False)
    two = spawn_run(cli_args(config, tmp / "two", 4), tmp / "two-report")
    spawn_run(cli_args(config, tmp / "resumed", 2), tmp / "half-report")
    resumed = spawn_run(cli_args(config, tmp / "resumed", 4, "--resume"), tmp / "resumed-report")
    return {"tmp": tmp, "config": config, "one": one, "two": two, "resumed": resumed}


def test_two_processes_train_the_ema_weights_one_process_trains_on_the_same_global_batch(runs):
    one = runs["one"].ema.state_dict()
    for name, tensor in runs["two"][0]["ema"].items():
        torch.testing.assert_close(tensor, one[name], rtol=1e-4, atol=1e-5, msg=name)


def test_every_rank_holds_the_same_ema_weights(runs):
    assert_states_equal(runs["two"][0]["ema"], runs["two"][1]["ema"])


def test_a_resumed_two_process_run_equals_an_uninterrupted_one(runs):
    tmp = runs["tmp"]
    straight = load_torch(tmp / "two" / "checkpoints" / "train_state.pt")
    resumed = load_torch(tmp / "resumed" / "checkpoints" / "train_state.pt")
    assert resumed["step"] == straight["step"] == 4
    assert_states_equal(straight["model"], resumed["model"])
    assert_states_equal(straight["ema"], resumed["ema"])


def test_only_rank_0_writes_files(runs):
    rank0, rank1 = runs["two"]
    assert any("train_state" in w for w in rank0["writes"])  # the audit hook sees writes
    assert any("metrics.jsonl" in w for w in rank0["writes"])
    assert rank1["writes"] == []


def test_a_two_process_run_directory_has_one_metrics_line_and_one_checkpoint(runs):
    out = runs["tmp"] / "two"
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1  # log_every 10: the last step
    assert load_torch(out / "checkpoints" / "train_state.pt")["world_size"] == WORLD
    assert (out / "samples" / "step_000004" / "grid.gif").is_file()


def test_resuming_with_another_number_of_processes_is_refused(runs):
    settings = build_preset("tiny", str(runs["config"]), dict(steps=8, batch_size=4))
    trainer = Trainer(settings, runs["tmp"] / "two", torch.device("cpu"))
    with pytest.raises(VdmError, match=r"trained by 2 process\(es\), this run has 1; resume with 2"):
        trainer.resume()


def test_torchruns_environment_gives_the_ranks():
    assert ranks_from_env({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4"}) == Ranks(3, 1, 4)
    assert ranks_from_env({}) == Ranks()


@pytest.mark.parametrize("env", [{"RANK": "2", "LOCAL_RANK": "0", "WORLD_SIZE": "2"},
                                 {"RANK": "x", "LOCAL_RANK": "0", "WORLD_SIZE": "2"}])
def test_an_inconsistent_torchrun_environment_is_refused(env):
    with pytest.raises(VdmError):
        ranks_from_env(env)

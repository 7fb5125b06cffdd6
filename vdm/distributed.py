"""Several training processes started by torchrun: which one this is, and the collectives training needs.

torchrun (`torchrun --nproc_per_node N -m vdm.train ...`) starts N copies of vdm-train and tells each
its place through the environment: RANK (0..WORLD_SIZE-1 over every node), LOCAL_RANK (0.. on this
node; it picks the GPU), WORLD_SIZE, and MASTER_ADDR/MASTER_PORT, where the ranks meet. Without
those variables vdm-train is one process, and every function here does nothing.

The process group speaks gloo on the CPU and NCCL on CUDA. Rank 0 writes every file; the others
wait for it at a barrier.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from vdm.errors import VdmError

TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes."""

    rank: int = 0  # 0..world_size-1 over every node; rank 0 writes the run directory
    local_rank: int = 0  # 0.. on this node: the GPU it trains on
    world_size: int = 1  # processes in all

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def ranks_from_env(environ: Mapping[str, str] = os.environ) -> Ranks:
    """The Ranks torchrun put in the environment; one process (Ranks()) when it put none."""
    present = [name for name in TORCHRUN_VARIABLES if name in environ]
    if not present:
        return Ranks()
    if len(present) < len(TORCHRUN_VARIABLES):
        missing = sorted(set(TORCHRUN_VARIABLES) - set(present))
        raise VdmError(f"the environment sets {', '.join(present)} but not {', '.join(missing)}; "
                       "start several processes with torchrun, or unset them for one")
    try:
        ranks = Ranks(*(int(environ[name]) for name in TORCHRUN_VARIABLES))
    except ValueError:
        raise VdmError(f"RANK, LOCAL_RANK and WORLD_SIZE must be integers, got "
                       f"{', '.join(environ[name] for name in TORCHRUN_VARIABLES)}") from None
    if not (0 <= ranks.rank < ranks.world_size and 0 <= ranks.local_rank <= ranks.rank):
        raise VdmError(f"inconsistent torchrun environment: RANK={ranks.rank} LOCAL_RANK={ranks.local_rank} "
                       f"WORLD_SIZE={ranks.world_size}")
    return ranks


def rank_device(device: torch.device, ranks: Ranks) -> torch.device:
    """The device this rank trains on: its own GPU (cuda:LOCAL_RANK) when several processes share CUDA."""
    if device.type != "cuda" or not ranks.distributed:
        return device
    if ranks.local_rank >= torch.cuda.device_count():
        raise VdmError(f"LOCAL_RANK {ranks.local_rank} has no GPU: this node has {torch.cuda.device_count()}; "
                       "start at most that many processes per node (torchrun --nproc_per_node)")
    return torch.device("cuda", ranks.local_rank)


def process_group_backend(device: torch.device) -> str:
    if device.type == "cuda":
        return "nccl"
    elif device.type == "cpu":
        return "gloo"
    else:
        raise VdmError(f"multi-process training runs on cpu or cuda, not {device.type}")


def start(ranks: Ranks, device: torch.device) -> None:
    """Join the process group (reads MASTER_ADDR/MASTER_PORT, which torchrun sets)."""
    if not ranks.distributed or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(process_group_backend(device), rank=ranks.rank, world_size=ranks.world_size,
                            device_id=device if device.type == "cuda" else None)


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(ranks: Ranks) -> None:
    """Wait until every rank gets here."""
    if ranks.distributed:
        dist.barrier()


def all_reduce(tensor: torch.Tensor, ranks: Ranks, op: str = "sum") -> torch.Tensor:
    """Reduce `tensor` in place over every rank ('sum', 'min' or 'max') and return it."""
    ops = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
    if op not in ops:
        raise ValueError(f"unknown reduction {op!r}")
    if ranks.distributed:
        dist.all_reduce(tensor, ops[op])
    return tensor

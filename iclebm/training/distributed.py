"""Data-parallel training across processes: `torchrun --nproc_per_node=N -m iclebm train ...`.

torchrun (or any launcher that sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT)
starts one process per device; `init_from_env` joins them into a process group (NCCL on CUDA,
Gloo on the CPU) and gives each its device. Each rank then draws its share of the global batch
(tasks are seeded by their global index, see `training.task_seed`), DistributedDataParallel
averages the gradients, and rank 0 alone logs and writes (atomic) checkpoints.

Without those variables (a plain `python -m iclebm train`) this is a single process, world size 1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from iclebm.devices import resolve_device
from iclebm.errors import IclebmError

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(IclebmError, ValueError):
    """A multi-process launch that cannot work: bad world size, missing variables, no rendezvous."""


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw)
    except ValueError:
        raise DistributedError(f"{name}={raw!r} is not an integer (check the launch)") from None


def launched_distributed() -> bool:
    """True when a launcher asked for more than one process (WORLD_SIZE > 1)."""
    return "WORLD_SIZE" in os.environ and os.environ.get("WORLD_SIZE", "1").strip() not in ("", "1")


def read_env() -> DistInfo:
    """Rank layout from the environment; validates it without touching the network."""
    if not launched_distributed():
        return DistInfo()
    missing = [v for v in ENV_VARS if not os.environ.get(v)]
    if missing:
        raise DistributedError(f"WORLD_SIZE is set but {', '.join(missing)} is not: launch with torchrun")
    world, rank, local = _env_int("WORLD_SIZE"), _env_int("RANK"), _env_int("LOCAL_RANK")
    local_world = _env_int("LOCAL_WORLD_SIZE") if os.environ.get("LOCAL_WORLD_SIZE") else world
    if world < 1:
        raise DistributedError(f"bad world size WORLD_SIZE={world}: it must be >= 1")
    if not 0 <= rank < world:
        raise DistributedError(f"RANK={rank} is outside the world of {world} processes")
    if not 0 <= local < local_world:
        raise DistributedError(f"LOCAL_RANK={local} is outside LOCAL_WORLD_SIZE={local_world}")
    return DistInfo(rank=rank, local_rank=local, world_size=world, local_world_size=local_world)


def check_batch_split(batch_size: int, world_size: int) -> int:
    """Tasks per rank; the global batch must split evenly so every rank's gradient has equal weight."""
    if world_size > batch_size:
        raise DistributedError(
            f"bad world size: {world_size} processes but a global batch of only {batch_size} tasks"
        )
    if batch_size % world_size:
        raise DistributedError(
            f"bad world size: the global batch of {batch_size} tasks does not split evenly across "
            f"{world_size} processes (use a world size that divides it)"
        )
    return batch_size // world_size


def init_from_env(device: str = "auto", timeout_s: float = 300.0) -> tuple[DistInfo, torch.device]:
    """Join the process group named by the environment (if any) and pick this rank's device.

    CUDA ranks use cuda:LOCAL_RANK and NCCL; CPU ranks use Gloo. Raises DistributedError with a
    one-line reason when the layout is bad or the rendezvous cannot be reached within timeout_s.
    """
    info = read_env()
    dev = resolve_device(device)
    if not info.distributed:
        return info, dev
    if dev.type == "cuda":
        count = torch.cuda.device_count()
        if info.local_rank >= count:
            raise DistributedError(
                f"bad world size: LOCAL_RANK={info.local_rank} but this node has {count} CUDA device(s); "
                f"use --nproc_per_node <= {count}"
            )
        dev = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(dev)
        backend = "nccl"
    elif dev.type == "cpu":
        backend = "gloo"
    else:
        raise DistributedError(f"multi-process training supports cuda (NCCL) and cpu (Gloo), not {dev.type}")
    if not dist.is_available():
        raise DistributedError("this torch build has no torch.distributed")
    addr, port = os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]
    try:
        dist.init_process_group(
            backend=backend, init_method="env://", rank=info.rank, world_size=info.world_size,
            timeout=timedelta(seconds=timeout_s),
        )
    except Exception as e:  # noqa: BLE001 - the store raises several types; report one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise DistributedError(
            f"cannot join the process group at {addr}:{port} as rank {info.rank} of {info.world_size} "
            f"({backend}): {first}"
        ) from None
    return info, dev


def all_true(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """Logical AND of a per-rank flag over all ranks (the flag itself in a single process)."""
    if not info.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0.5)


def any_true(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """Logical OR over all ranks, so every rank takes the same branch (e.g. stopping at a deadline)."""
    return not all_true(not flag, info, device)


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()

"""The process group of a training or evaluation run (device and backend from ``maggie.runtime``).

Works unchanged under ``torchrun`` (any number of processes and nodes) and as a plain single process.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from maggie.runtime import backend_for, pick_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    backend: str
    rank: int
    local_rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(requested_device: str = "auto") -> Runtime:
    """Initialise the process group when launched by torchrun; return the runtime description."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(requested_device, local_rank)
    backend = backend_for(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend=backend)
        log.info("process group: %s, rank %d/%d on %s", backend, rank, world, device)
    return Runtime(device, backend, rank, local_rank, world)


def torch_dist_ready() -> bool:
    return dist.is_available() and dist.is_initialized()


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()

"""Data-parallel training on torch.distributed: who this process is, and how a step is split.

Decisions:

* PyTorch's own stack, nothing home-made: processes are started by ``torchrun`` (or any launcher that
  sets its environment variables), talk through ``torch.distributed`` (gloo on CPU, NCCL on GPUs) and
  average gradients with :class:`~torch.nn.parallel.DistributedDataParallel`. A script that has called
  ``init_process_group`` itself gets the same behaviour from :func:`weightspace.train.train`: the
  trainer uses the default process group whenever one is initialized (:meth:`Ranks.current`).
* The same math for any number of processes. ``batch_size`` is the GLOBAL batch: every process draws
  the epoch's order, augmentations and MixUp partners for the whole batch from the run's generators
  (cheap, and it makes every draw a function of the global step and sample, never of the rank), then
  keeps its rows ``batch[rank::world]``: the interleaving of ``DistributedSampler``, whose own sampler
  is not used because it pads the last batch with repeated samples (another gradient) and shuffles
  with its own seed rule instead of the run's per-epoch stream. Each process's loss is the SUM of its
  rows' losses times ``world / len(batch)``, so DDP's average over processes is exactly the mean over
  the global batch, also for a last batch that does not divide evenly. A process left without rows
  (a last batch smaller than the number of processes) runs one row with weight 0 so that every
  process joins each gradient reduction.
* Dropout inside a model draws from torch's global generator, per process: with N processes a model
  with dropout is trained with other masks than with one (the same distribution, not the same bits).
  Weight-space augmentations are drawn per batch, as above, and are the same bits.
* Validation is split across processes and the predictions gathered, so every process computes the
  same metrics and takes the same early-stopping decision; only rank 0 writes files and prints.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..errors import UsageError

__all__ = ["Ranks", "init_from_environment", "launched_rank", "launched_world_size"]


def launched_world_size() -> int:
    """The number of processes a launcher (``torchrun``, SLURM ``srun`` via torchrun) started: its
    ``WORLD_SIZE`` variable, 1 when there is none."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError as e:
        raise UsageError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number", "WORLD_SIZE") from e


def launched_rank() -> int:
    """This process's ``RANK`` among those a launcher started (0 when there is none)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError as e:
        raise UsageError(f"RANK={os.environ['RANK']!r} is not a number", "RANK") from e


def init_from_environment(device: str = "cpu") -> bool:
    """Join the process group ``torchrun`` set up (gloo for ``cpu``, NCCL for ``cuda``) when launched
    with more than one process; True when this call created it (the caller destroys it at the end)."""
    import torch.distributed as dist

    if launched_world_size() <= 1 or (dist.is_available() and dist.is_initialized()):
        return False
    if not dist.is_available():
        raise UsageError("this PyTorch build has no torch.distributed; run one process", "torchrun")
    if str(device).startswith("cuda"):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return True


@dataclass(frozen=True)
class Ranks:
    """This process's place in a data-parallel run: ``rank`` of ``world`` processes; ``device`` its
    accelerator (``cuda:LOCAL_RANK``) or the CPU."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @classmethod
    def current(cls, device: str | torch.device | None = None) -> "Ranks":
        """From the default process group when one is initialized, else one process. ``device``:
        ``cpu`` (default), ``cuda`` (this process's GPU: ``cuda:LOCAL_RANK``) or ``cuda:i``."""
        import torch.distributed as dist

        dev = torch.device(device or "cpu")
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), dev)
        return cls(0, 1, dev)

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist
            dist.barrier()

    def rows(self, n: int) -> tuple[torch.Tensor, float]:
        """``(positions, weight)``: this process's rows of a global batch of ``n`` (``rank::world``)
        and the factor ``world / n`` that turns the sum of their losses into this process's share of
        the batch mean; a process without rows gets row 0 and weight 0."""
        if self.rank >= n:                  # a last batch smaller than the number of processes
            return torch.zeros(1, dtype=torch.long), 0.0
        mine = torch.arange(self.rank, n, self.world)
        return mine, self.world / n

    def mean_over_processes(self, value: torch.Tensor) -> float:
        """The average of a scalar over the processes (the global batch's loss from the shares)."""
        if self.world == 1:
            return float(value)
        import torch.distributed as dist
        t = value.detach().float().reshape(1).to(self.device).clone()
        dist.all_reduce(t)
        return float(t) / self.world

    def part(self, n: int) -> range:
        """This process's contiguous part of ``n`` items (validation): parts differ by at most one."""
        base, extra = divmod(n, self.world)
        start = self.rank * base + min(self.rank, extra)
        return range(start, start + base + (self.rank < extra))

    def gather_parts(self, local: torch.Tensor, n: int) -> torch.Tensor:
        """Concatenate every process's :meth:`part` (``local`` holds this process's rows, on the CPU)
        in rank order: ``[n, ...]`` on every process."""
        if self.world == 1:
            return local
        import torch.distributed as dist
        sizes = [len(Ranks(r, self.world).part(n)) for r in range(self.world)]
        pad = torch.zeros(max(sizes), *local.shape[1:], dtype=local.dtype)
        pad[:len(local)] = local
        pad = pad.to(self.device)
        bufs = [torch.empty_like(pad) for _ in sizes]
        dist.all_gather(bufs, pad)
        return torch.cat([b[:s].cpu() for b, s in zip(bufs, sizes)])

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` in DistributedDataParallel when there are several processes (gradients averaged
        over them in the backward pass); ``model`` itself otherwise."""
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def check_batch(self, batch_size: int) -> None:
        if batch_size < self.world:
            raise UsageError(f"the global batch of {batch_size} networks is smaller than the {self.world} "
                             f"processes; raise --batch-size to at least {self.world}", "--batch-size")

"""Running under ``torchrun``: ranks, the process group, sharding a list, gathering results.

Everything darknet-py does with several processes goes through this module; nothing here
starts processes (``torchrun``, or ``detector train -gpus 0,1`` which re-runs itself through
torchrun's launcher, does that).

* :func:`info` reads ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` from torchrun's environment
  (no variables = one process, rank 0 of 1);
* :func:`init` starts the process group once (``gloo`` on CPU, ``nccl`` when the process uses
  CUDA), and registers its teardown at exit (:func:`teardown`);
* :func:`shard` gives this rank's indices of a list: **contiguous** blocks, rank ``r`` of ``W``
  gets ``[r*n//W, (r+1)*n//W)`` (sizes differ by at most one). Contiguous, so the
  concatenation of the ranks' results in rank order *is* the original order: any
  per-rank list (detections per image, JSON lines, per-class result lines) is put back in the
  single-process order by :func:`gather_ordered`, without carrying indices;
* :func:`gather_ordered` collects one list per rank on rank 0 (concatenated in rank order);
  :func:`gather_concat` does it for several lists in one collective; :func:`map_sharded` is
  shard -> ``fn(my items)`` -> gather;
* :func:`broadcast`, :func:`all_reduce_sum`, :func:`any_rank`, :func:`barrier`,
  :func:`shared_seed`;
* :func:`main_only_output`: stdout/stderr of ranks other than 0 go to /dev/null (restored
  before an exception leaves the block, so a rank's error is still printed); :func:`command`
  wraps a CLI callback in :func:`init` + :func:`main_only_output`.

Evaluation and inference (``detector map``, ``valid``, ``test`` with a list) shard the list of
image paths, compute per-image results on each rank with the single-process code, gather them
on rank 0 in the original order and format/print them there with the single-process code, so
the printout and files are those of one process.

Training (``darknet_py.train.trainer``) uses the same pieces: Darknet's ``batch`` is the
*global* batch. Every rank draws the same permutation and multi-scale sizes (one seed, shared by
:func:`shared_seed`), takes its :func:`shard` of each mini-batch of ``batch/subdivisions``
images, and the augmentation of a sample is a function of (seed, iteration, subdivision, image
index) only (``darknet_py.data.dataset``), never of the rank or DataLoader worker. Each rank's
loss is the sum over its images, multiplied by the world size before ``backward`` so that DDP's
gradient *average* is the single-process gradient *sum*; the learning rate is the cfg's (no
``learning_rate *= ngpus``). The printed loss is the sum of the ranks' parts.

What differs from one process: batch normalisation in training mode normalises each rank's
images with that rank's batch statistics (``mini_batch / world`` images, as Darknet's GPUs each
normalise their own mini-batch) and each rank's rolling means/variances move with its own
images; rank 0's rolling statistics are the ones saved. With BN frozen (``eval()`` BN layers,
or a cfg without ``batch_normalize``) N processes make exactly the single-process update, up to
the float summation order of the gradient all-reduce. This deliberately differs from Darknet's
own ``-gpus`` (every GPU trains a full ``batch`` and the learning rate is multiplied by the
number of GPUs): the same cfg then means the same training whatever the number of processes.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, Sequence, TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")

_initialised_here = False


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def info() -> DistInfo:
    """Rank, world size and local rank: from the live process group when there is one, else
    from torchrun's environment variables, else a single process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return DistInfo(torch.distributed.get_rank(), torch.distributed.get_world_size(),
                        _env_int("LOCAL_RANK", 0))
    world = max(1, _env_int("WORLD_SIZE", 1))
    return DistInfo(_env_int("RANK", 0) if world > 1 else 0, world,
                    _env_int("LOCAL_RANK", 0) if world > 1 else 0)


def is_distributed() -> bool:
    return info().distributed


def is_main() -> bool:
    return info().is_main


def backend_for(device: Optional[torch.device | str] = None) -> str:
    """``nccl`` for a CUDA device (or, without one named, when CUDA is available), else gloo."""
    if device is None:
        cuda = torch.cuda.is_available()
    else:
        cuda = torch.device(device).type == "cuda"
    return "nccl" if cuda and torch.distributed.is_nccl_available() else "gloo"


def init(device: Optional[torch.device | str] = None) -> DistInfo:
    """Join torchrun's process group (idempotent; a no-op for one process). ``device``: the
    device this rank computes on (picks the backend; a CUDA device is made current first)."""
    global _initialised_here
    d = info()
    if not d.distributed or torch.distributed.is_initialized():
        return d
    backend = backend_for(device)
    if backend == "nccl":
        dev = torch.device(device) if device is not None else \
            torch.device("cuda", d.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    torch.distributed.init_process_group(backend)
    _initialised_here = True
    atexit.register(teardown)
    return info()


def teardown() -> None:
    """Destroy the process group this module started (after a last barrier)."""
    global _initialised_here
    if _initialised_here and torch.distributed.is_initialized():
        try:
            torch.distributed.destroy_process_group()
        finally:
            _initialised_here = False


def barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized() and \
            torch.distributed.get_world_size() > 1:
        torch.distributed.barrier()


# ----------------------------------------------------------------------------- sharding
def shard_bounds(n: int, rank: Optional[int] = None, world: Optional[int] = None) -> range:
    """This rank's contiguous block of ``range(n)``: ``[rank*n//world, (rank+1)*n//world)``."""
    if rank is None or world is None:
        d = info()
        rank = d.rank if rank is None else rank
        world = d.world if world is None else world
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} of world {world}")
    return range(rank * n // world, (rank + 1) * n // world)


def shard(items: Sequence[T], rank: Optional[int] = None, world: Optional[int] = None
          ) -> List[T]:
    """This rank's items of ``items`` (contiguous block, see :func:`shard_bounds`)."""
    r = shard_bounds(len(items), rank, world)
    return list(items[r.start:r.stop])


def _group_ready() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() and \
        torch.distributed.get_world_size() > 1


def gather_ordered(local: Sequence[T]) -> Optional[List[T]]:
    """Every rank passes its list (its shard's results in shard order); rank 0 gets the
    concatenation in rank order, which for :func:`shard`'s contiguous blocks is the
    single-process order; other ranks get ``None``. One process: ``list(local)``."""
    if not _group_ready():
        return list(local)
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    parts: Optional[List[Any]] = [None] * world if rank == 0 else None
    torch.distributed.gather_object(list(local), parts, dst=0)
    if rank != 0:
        return None
    out: List[T] = []
    for p in parts:
        out.extend(p)
    return out


def gather_concat(*lists: Sequence[Any]) -> Optional[List[List[Any]]]:
    """Several per-rank lists at once (one collective): rank 0 gets, for each argument, the
    concatenation over ranks in rank order; other ranks ``None``."""
    parts = gather_ordered([tuple(list(x) for x in lists)])
    if parts is None:
        return None
    return [[v for part in parts for v in part[i]] for i in range(len(lists))]


def map_sharded(items: Sequence[T], fn: Callable[[List[T]], Sequence[R]]) -> Optional[List[R]]:
    """``fn`` over this rank's shard of ``items`` (it returns one result per item, in order);
    rank 0 gets all results in the order of ``items``, other ranks ``None``."""
    mine = shard(items) if _group_ready() else list(items)
    res = list(fn(mine))
    if len(res) != len(mine):
        raise ValueError(f"map_sharded: {len(res)} results for {len(mine)} items")
    return gather_ordered(res)


def broadcast(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (any picklable object)."""
    if not _group_ready():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(values: Sequence[float], device: Optional[torch.device] = None
                   ) -> List[float]:
    """Element-wise sum over ranks (float64 on ``device``; the backend's device for nccl)."""
    if not _group_ready():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return [float(v) for v in t.cpu()]


def any_rank(flag: bool, device: Optional[torch.device] = None) -> bool:
    """True on every rank when ``flag`` is true on any rank (e.g. a stop signal one rank got)."""
    return all_reduce_sum([1.0 if flag else 0.0], device)[0] > 0


def shared_seed(seed: Optional[int]) -> int:
    """``seed``, or (``None``) rank 0's clock-based seed, the same on every rank."""
    import time
    value = int(seed) if seed is not None else int(time.time())
    return int(broadcast(value))


def command(fn: Callable[..., R]) -> Callable[..., Optional[R]]:
    """Decorator for a command callback that can run under torchrun: joins the process group
    (:func:`init`) and runs the callback inside :func:`main_only_output`. One process: ``fn``."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not info().distributed:
            return fn(*args, **kwargs)
        init()
        with main_only_output():
            return fn(*args, **kwargs)
    return wrapper


@contextlib.contextmanager
def main_only_output() -> Iterator[bool]:
    """Inside the block, stdout and stderr of ranks other than 0 are discarded (they are
    restored before an exception propagates, so errors still show). Yields ``is_main()``."""
    if info().is_main:
        yield True
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = sys.stdout, sys.stderr
    with open(os.devnull, "w") as null:
        sys.stdout = sys.stderr = null
        try:
            yield False
        finally:
            sys.stdout, sys.stderr = saved

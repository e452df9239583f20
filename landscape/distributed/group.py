r"""The process group of a ``torchrun`` launch, its collectives, and the failure protocol.

``torchrun --nproc_per_node N ...`` starts ``N`` processes whose environment names their
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. :func:`init` sets
the default process group up from it (gloo on CPU, NCCL on CUDA, with ``LOCAL_RANK``'s GPU);
without that environment (or with ``WORLD_SIZE=1``) nothing is set up and every function here
is the single-process identity: :func:`world_size` is 1, :func:`rank` 0, :func:`is_root` True,
and no collective runs, so the same code runs everywhere.

Failure protocol (no rank may hang on a peer that stopped). A rank leaving a
:func:`session` with an exception writes its one-line message to the rendezvous store (the
``TCPStore`` at ``MASTER_ADDR:MASTER_PORT``, hosted by torchrun's agent; key
``landscape/error/<rank>``) before it tears down. The others learn of it at their next
collective: every collective here is started asynchronously and waited for by polling, and
the store is read while it waits (every :data:`POLL_SECONDS`) and when it fails (a peer that
closed its connection makes gloo raise). They then raise one :class:`RankFailedError` naming
the rank and its message. A rank that stops without raising (killed) is caught by gloo's
closed connection or, at worst, by the process group's timeout (:data:`TIMEOUT_ENV`,
default :data:`DEFAULT_TIMEOUT` seconds).

Every collective is counted in :data:`STATS` (``collectives``, ``bytes``: payload sent by one
rank, ``seconds`` spent in them), for the benchmarks.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import time

import torch
import torch.distributed as dist

__all__ = [
    "DistributedError", "RankFailedError", "ReplicaDriftError", "init", "shutdown", "session",
    "launched", "is_initialized", "world_size", "rank", "local_rank", "is_root", "backend",
    "all_reduce", "barrier", "check_peers", "report_failure", "STATS", "writes_here",
    "every_rank_writes",
]  # fmt: skip

TIMEOUT_ENV = "LANDSCAPE_DIST_TIMEOUT"
"""Environment variable: seconds a collective may wait for a peer before it fails."""
DEFAULT_TIMEOUT = 600.0
POLL_SECONDS = 0.2
"""How often a rank waiting in a collective reads the store for a peer's error."""
ERROR_KEY = "landscape/error/"
STATS = {"collectives": 0, "bytes": 0, "seconds": 0.0}
"""Collectives run by this process, the bytes of their payloads and the seconds spent in
them, waiting for peers included (reset freely)."""

_state: dict = {"store": None, "every_rank_writes": 0}


class DistributedError(Exception):
    """A distributed run cannot go on (not a ``RuntimeError``, so that code retrying after a
    ``RuntimeError`` never swallows it)."""


class RankFailedError(DistributedError):
    """Another rank raised: ``rank`` and its one-line ``message``."""

    def __init__(self, failed_rank: int, message: str):
        super().__init__(f"rank {failed_rank} failed: {message}")
        self.rank, self.message = failed_rank, message


class ReplicaDriftError(DistributedError):
    """Replicated state (an eigensolver's vectors, a surface's directions) differs across
    ranks: every rank must hold the same values and they do not."""


# ----------------------------------------------------------------------- who am I


def launched() -> bool:
    """Whether the environment describes a launch of several processes (torchrun's)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of ranks (1 without a process group)."""
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_initialized() else 0


def local_rank() -> int:
    """This process's rank on its machine (torchrun's ``LOCAL_RANK``; 0 by default)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_root() -> bool:
    """Whether this is rank 0, the one that writes results and prints."""
    return rank() == 0


def backend() -> str | None:
    """``"gloo"``, ``"nccl"`` or ``None`` (single process)."""
    return str(dist.get_backend()) if is_initialized() else None


def _timeout() -> float:
    text = os.environ.get(TIMEOUT_ENV)
    try:
        value = float(text) if text else DEFAULT_TIMEOUT
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV}={text!r} is not a number of seconds; e.g. 600") from None
    if not value > 0:
        raise ValueError(f"{TIMEOUT_ENV} must be > 0 seconds, got {value:g}")
    return value


# ----------------------------------------------------------------------- set up, tear down


def init(device: str | torch.device | None = None) -> bool:
    """Set up the default process group from torchrun's environment; ``True`` if one runs.

    Args:
        device: where the computation runs: a CUDA device selects NCCL (and the GPU
            ``LOCAL_RANK``), anything else gloo.

    A no-op (``False``) without a multi-process environment; idempotent.
    """
    if is_initialized():
        return True
    if not launched():
        return False
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ValueError(
            f"WORLD_SIZE is set but {', '.join(missing)} is not; launch with torchrun "
            "--nproc_per_node N -m landscape ..."
        )
    cuda = device is not None and torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(local_rank())
    timeout = datetime.timedelta(seconds=_timeout())
    dist.init_process_group("nccl" if cuda else "gloo", init_method="env://", timeout=timeout)
    _state["store"] = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
        timeout=timeout, wait_for_workers=False,
    )  # fmt: skip
    return True


def shutdown() -> None:
    """Tear the process group down (a no-op without one)."""
    if is_initialized():
        dist.destroy_process_group()
    _state["store"] = None


@contextlib.contextmanager
def session(device: str | torch.device | None = None):
    """:func:`init`, then run the block; a rank raising in it reports its error to the
    others (:func:`report_failure`) before the group is torn down."""
    started = init(device)
    try:
        yield
    except BaseException as err:
        if started and not isinstance(err, RankFailedError):
            report_failure(err)
        raise
    finally:
        if started:
            shutdown()


# ----------------------------------------------------------------------- the failure protocol


def report_failure(err: BaseException) -> None:
    """Write this rank's one-line error to the store, for the others to raise."""
    store = _state["store"]
    if store is None:
        return
    line = f"{type(err).__name__}: {err}".strip().splitlines()
    message = line[0] if line else type(err).__name__
    with contextlib.suppress(Exception):  # the store may be gone already
        store.set(f"{ERROR_KEY}{rank()}", message)


def check_peers() -> None:
    """Raise :class:`RankFailedError` if another rank has reported an error."""
    store = _state["store"]
    if store is None:
        return
    me = rank()
    for r in range(world_size()):
        key = f"{ERROR_KEY}{r}"
        if r != me and store.check([key]):
            raise RankFailedError(r, store.get(key).decode())


def _after_failure(err: BaseException, grace: float = 5.0):
    """A collective failed (a peer closed its connection, or the timeout): the error of the
    rank that reported one, waiting ``grace`` seconds for its report to arrive."""
    deadline = time.monotonic() + grace
    while True:
        try:
            check_peers()
        except RankFailedError as failed:
            return failed
        except Exception:  # the store is gone with the failed rank
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return DistributedError(
        f"rank {rank()}: a collective failed ({str(err).splitlines()[0] if str(err) else err!r})"
        "; another rank stopped without reporting an error (see its output)"
    )


def _wait(work) -> None:
    """Wait for an asynchronous collective, reading the store for peers' errors meanwhile
    (gloo); NCCL waits with its own timeout."""
    try:
        if backend() != "gloo":
            work.wait()
            return
        pause, last_check = 1e-5, time.monotonic()
        while not work.is_completed():
            time.sleep(pause)
            pause = min(2 * pause, 1e-3)
            if time.monotonic() - last_check > POLL_SECONDS:
                check_peers()
                last_check = time.monotonic()
        work.wait()
    except (RankFailedError, KeyboardInterrupt):
        raise
    except Exception as err:
        raise _after_failure(err) from None


# ----------------------------------------------------------------------- collectives


def all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over the ranks, in place, and return it (identity on one rank).

    A CUDA tensor under gloo goes through the CPU. The result is the same, bit for bit, on
    every rank (the collective hands every rank the same reduced bytes).
    """
    if world_size() == 1:
        return tensor
    buffer = tensor
    if backend() == "gloo" and tensor.device.type != "cpu":
        buffer = tensor.cpu()
    buffer = buffer.contiguous()
    STATS["collectives"] += 1
    STATS["bytes"] += buffer.numel() * buffer.element_size()
    start = time.perf_counter()
    _wait(dist.all_reduce(buffer, async_op=True))
    STATS["seconds"] += time.perf_counter() - start
    if buffer is not tensor:
        tensor.copy_(buffer)
    return tensor


def barrier() -> None:
    """Wait for every rank (one tiny all-reduce, so peers' errors surface here too)."""
    all_reduce(torch.zeros(1))


# ----------------------------------------------------------------------- who writes


def writes_here() -> bool:
    """Whether this process writes files: rank 0, or any rank inside
    :func:`every_rank_writes` (per-rank partial results)."""
    return is_root() or _state["every_rank_writes"] > 0


@contextlib.contextmanager
def every_rank_writes():
    """Let every rank write inside the block (each its own files: e.g. a surface's rows)."""
    _state["every_rank_writes"] += 1
    try:
        yield
    finally:
        _state["every_rank_writes"] -= 1

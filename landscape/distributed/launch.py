"""Start ``W`` local processes the way ``torchrun`` does, from Python (tests, benchmarks,
notebooks): this process hosts the rendezvous store (as torchrun's agent does), each child
gets torchrun's environment and runs ``fn(*args)`` inside a
:func:`~landscape.distributed.group.session`, with one thread."""

from __future__ import annotations

import contextlib
import datetime
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from landscape.distributed.group import session

__all__ = ["run_ranks"]

OUTCOME_KEY = "landscape/outcome/"


def _child(index, fn, args, env, threads):
    os.environ.update({**env, "RANK": str(index), "LOCAL_RANK": str(index)})
    torch.set_num_threads(threads)
    store = dist.TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), is_master=False)
    outcome = "ok"
    try:
        with session():
            fn(*args)
    except BaseException as err:  # reported to the parent, which raises or returns it
        outcome = f"{type(err).__name__}: {err}".splitlines()[0]
    store.set(f"{OUTCOME_KEY}{index}", outcome)


def run_ranks(fn, world_size: int, *args, threads: int = 1, timeout: float = 120.0) -> list:
    """Run ``fn(*args)`` on ``world_size`` ranks (gloo, CPU) and return each rank's outcome:
    ``None`` where it returned, else its one-line error ``"Type: message"``.

    ``fn`` must be importable by the children (a module-level function). Results travel
    through files that ``fn`` writes (e.g. one per rank, named by
    :func:`~landscape.distributed.group.rank`).

    Raises:
        TimeoutError: the ranks did not all finish within ``timeout`` seconds.
    """
    store = dist.TCPStore(
        "127.0.0.1", 0, world_size + 1, is_master=True,
        timeout=datetime.timedelta(seconds=timeout), wait_for_workers=False,
    )  # fmt: skip
    env = {
        "WORLD_SIZE": str(world_size), "LOCAL_WORLD_SIZE": str(world_size),
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(store.port),
        "TORCHELASTIC_USE_AGENT_STORE": "True", "OMP_NUM_THREADS": str(threads),
        "LANDSCAPE_DIST_TIMEOUT": os.environ.get("LANDSCAPE_DIST_TIMEOUT", str(timeout)),
    }  # fmt: skip
    ctx = mp.start_processes(
        _child, args=(fn, args, env, threads), nprocs=world_size, join=False,
        start_method="spawn",
    )  # fmt: skip
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=timeout)
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: [p.kill() for p in ctx.processes if p.is_alive()])
        while not all(not p.is_alive() for p in ctx.processes):
            if datetime.datetime.now() > deadline:
                raise TimeoutError(f"the {world_size} ranks did not finish in {timeout:g} s")
            for p in ctx.processes:
                p.join(0.05)
    outcomes = []
    for r in range(world_size):
        key = f"{OUTCOME_KEY}{r}"
        text = store.get(key).decode() if store.check([key]) else "killed (no outcome)"
        outcomes.append(None if text == "ok" else text)
    return outcomes

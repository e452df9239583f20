"""Several (algorithm, restart) pairs of a run trained at once, one worker process each.

:func:`landscape.training.train` with ``jobs > 1`` hands its pairs to a pool of ``jobs``
spawned processes. Each worker limits its torch and BLAS threads to its share of the
parent's, keeps freed memory (:func:`landscape.device.keep_freed_memory`), builds its
restart's data (:class:`~landscape.training.loop.RestartData`, the same draws as in one
process) and trains the pair into the run folder with
:func:`~landscape.training.loop.train_pair`: the same files, resumable the same way (the
parent holds the folder's lock). The workers report every step through a queue, so the
parent's progress bar counts down the whole job; the first error raised in a worker stops
the pool and is raised again in the parent, with its one-line message.
"""

from __future__ import annotations

import multiprocessing
import queue as queue_module

import torch

#: The progress queue of a worker process (set by :func:`_start_worker`).
_PROGRESS = None


class _QueueBar:
    """The part of a tqdm bar that :func:`~landscape.training.loop.train_pair` uses,
    forwarding to the parent's bar through a queue."""

    def __init__(self, queue):
        self.queue = queue

    def update(self, n: int = 1) -> None:
        self.queue.put(("update", n))

    def set_postfix(self, **values) -> None:
        self.queue.put(("postfix", values))


def _start_worker(progress, threads: int) -> None:
    global _PROGRESS
    from landscape.device import keep_freed_memory, set_threads

    _PROGRESS = progress
    set_threads(threads)  # kept for the worker's life (the context is never exited)
    keep_freed_memory()


def _train_pair(config_dict, root, algo, k, data_dir, resume):
    from landscape.runs import RunFolder
    from landscape.training.config import TrainConfig
    from landscape.training.loop import RestartData, train_pair

    config = TrainConfig.from_dict(config_dict)
    data = RestartData.build(config, k, data_dir, torch.device("cpu"))
    bar = _QueueBar(_PROGRESS)
    return train_pair(config, RunFolder(root), algo, k, data, resume=resume, bar=bar)


def train_in_workers(config, folder, pairs, data_dir, *, resume, jobs, bar) -> dict:
    """``{(algorithm, restart): PairResult}`` of ``pairs`` trained by ``jobs`` processes at
    once (at most one per pair), on the CPU; ``bar`` (tqdm) advances by every worker's
    steps."""
    jobs = min(jobs, len(pairs))
    threads = max(1, torch.get_num_threads() // jobs)
    context = multiprocessing.get_context("spawn")
    progress = context.Queue()
    pool = context.Pool(jobs, initializer=_start_worker, initargs=(progress, threads))
    try:
        pending = {
            pair: pool.apply_async(
                _train_pair, (config.to_dict(), str(folder.root), *pair, data_dir, resume)
            )  # fmt: skip
            for pair in pairs
        }
        outcomes = {}
        while pending:
            _show(progress, bar)
            for pair in [p for p, result in pending.items() if result.ready()]:
                outcomes[pair] = pending.pop(pair).get()  # a worker's error is raised here
        _show(progress, bar, wait=0.0)
        bar.update(bar.total - bar.n)  # every step is done (messages may still be in flight)
        pool.close()
        return outcomes
    finally:
        pool.terminate()
        pool.join()


def _show(progress, bar, wait: float = 0.2) -> None:
    """Apply the workers' progress messages to ``bar``, waiting up to ``wait`` s for one."""
    try:
        while True:
            kind, value = progress.get(timeout=wait) if wait else progress.get_nowait()
            wait = 0.0
            if kind == "update":
                bar.update(value)
            else:
                bar.set_postfix(**value)
    except queue_module.Empty:
        return

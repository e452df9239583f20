"""Several (algorithm, restart) pairs of a run trained at once, one worker process each.

:func:`landscape.training.train` with ``jobs > 1`` hands the pairs left to train to at most
``jobs`` spawned processes at a time. Each worker limits its torch and BLAS threads to its
share of the parent's, keeps freed memory (:func:`landscape.device.keep_freed_memory`),
builds its restart's data (:class:`~landscape.training.loop.RestartData`, the same draws as
in one process) and trains the pair into the run folder with
:func:`~landscape.training.loop.train_pair`: the same files, resumable the same way (the
parent holds the folder's lock). Everything a worker says goes through one queue: a message
per step (so the parent's progress bar counts down the whole job), then its result or its
error. The first error stops the other workers and is raised again in the parent with its
one-line message; a worker that dies without a word (killed, out of memory) is reported as
such. A worker applies the parent's warning filters and sends every warning it would show to
the parent, which shows it as its own (the CLI's one-line ``landscape: note:``). Interrupted
pairs resume from their last saved state on the next run.
"""

from __future__ import annotations

import multiprocessing
import pickle
import queue as queue_module
import warnings

import torch


class _QueueBar:
    """The part of a tqdm bar that :func:`~landscape.training.loop.train_pair` uses,
    forwarding to the parent's bar through a queue."""

    def __init__(self, messages):
        self.messages = messages

    def update(self, n: int = 1) -> None:
        self.messages.put(("update", n))

    def set_postfix(self, **values) -> None:
        self.messages.put(("postfix", values))


def warning_filters() -> list[tuple]:
    """This process's warning filters as picklable tuples (patterns as text), for
    :func:`forward_warnings` in a worker; filters whose category does not pickle are left out."""
    entries = [
        (action, getattr(message, "pattern", ""), category, getattr(module, "pattern", ""), lineno)
        for action, message, category, module, lineno in warnings.filters
    ]
    return [entry for entry in entries if _pickles(entry)]


def forward_warnings(messages, filters: list[tuple]) -> None:
    """In a worker: apply ``filters`` (:func:`warning_filters` of the parent) and send every
    warning they let through to the parent as ``("warning", (text, category, file, line))``."""
    warnings.resetwarnings()
    for action, message, category, module, lineno in reversed(filters):
        warnings.filterwarnings(action, message, category, module, lineno)

    def send(message, category, filename, lineno, file=None, line=None):
        category = category if _pickles(category) else UserWarning
        messages.put(("warning", (str(message), category, filename, lineno)))

    warnings.showwarning = send


def _work(pair, config_dict, root, data_dir, resume, threads, filters, messages) -> None:
    """A worker process: train ``pair`` and send ``("done", pair, PairResult)`` or
    ``("error", pair, exception)``."""
    try:
        forward_warnings(messages, filters)
        from landscape.device import keep_freed_memory, set_threads
        from landscape.runs import RunFolder
        from landscape.training.config import TrainConfig
        from landscape.training.loop import RestartData, train_pair

        set_threads(threads)  # for the worker's life
        keep_freed_memory()
        config = TrainConfig.from_dict(config_dict)
        data = RestartData.build(config, pair[1], data_dir, torch.device("cpu"))
        result = train_pair(config, RunFolder(root), *pair, data, resume=resume,
                            bar=_QueueBar(messages))  # fmt: skip
        messages.put(("done", pair, result))
    except BaseException as err:  # noqa: BLE001 - every failure goes to the parent
        messages.put(("error", pair, _picklable(err)))


def _pickles(value) -> bool:
    """Whether ``value`` survives the trip to the parent (pickled and unpickled again: an
    exception may pickle and fail to rebuild; a class defined where the parent cannot
    import it does not pickle)."""
    try:
        pickle.loads(pickle.dumps(value))
        return True
    except Exception:  # noqa: BLE001
        return False


def _picklable(err: BaseException) -> BaseException:
    """``err`` itself when it survives pickling, else a ``RuntimeError`` with its text."""
    return err if _pickles(err) else RuntimeError(f"{type(err).__name__}: {err}")


def train_in_workers(config, folder, pairs, data_dir, *, resume, jobs, bar) -> dict:
    """``{(algorithm, restart): PairResult}`` of ``pairs`` trained by at most ``jobs``
    processes at once, on the CPU; ``bar`` (tqdm) advances by every worker's steps."""
    jobs = min(jobs, len(pairs))
    threads = max(1, torch.get_num_threads() // jobs)
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    waiting, running, outcomes = list(pairs), {}, {}
    shared = (config.to_dict(), str(folder.root), data_dir, resume, threads, warning_filters(),
              messages)  # fmt: skip
    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                pair = waiting.pop(0)
                running[pair] = context.Process(target=_work, args=(pair, *shared), daemon=True)
                running[pair].start()
            for pair in _receive(messages, bar, outcomes, running):
                running.pop(pair).join()
        bar.update(bar.total - bar.n)  # every step is done (some messages may be in flight)
        return outcomes
    finally:
        for process in running.values():  # after an error or an interrupt: stop the others
            process.terminate()
        for process in running.values():
            process.join()


def _receive(messages, bar, outcomes, running) -> list:
    """Handle the workers' messages; return the pairs that finished. Raises a worker's
    error, or ``RuntimeError`` for a worker that exited without a result."""
    finished = _read(messages, bar, outcomes, wait=0.2)
    silent = [p for p, process in running.items() if p not in finished and not process.is_alive()]
    if silent:  # its result may have reached the pipe just before it exited: read once more
        finished += _read(messages, bar, outcomes, wait=1.0)
        silent = [p for p in silent if p not in finished]
    if silent:
        (algo, k), code = silent[0], running[silent[0]].exitcode
        raise RuntimeError(
            f"the worker training {algo} restart {k} exited with code {code} without a "
            "result (killed? out of memory?); run again to resume, with fewer --jobs"
        )
    return finished


def _read(messages, bar, outcomes, wait: float) -> list:
    """Apply the queued messages to ``bar`` and ``outcomes`` (waiting up to ``wait`` s for
    the first); return the pairs whose result came. Raises a worker's error."""
    finished = []
    try:
        while True:
            kind, *body = messages.get(timeout=wait)
            wait = 0.01
            if kind == "update":
                bar.update(body[0])
            elif kind == "postfix":
                bar.set_postfix(**body[0])
            elif kind == "warning":  # shown by this process's display (the CLI's notes)
                warnings.showwarning(*body[0])
            elif kind == "done":
                outcomes[body[0]] = body[1]
                finished.append(body[0])
            else:
                raise body[1]
    except queue_module.Empty:
        return finished

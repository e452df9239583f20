"""Launching a sweep's jobs: local processes in parallel, or Slurm through submitit.

Each job runs ``landscape train --dataset ... --out <job folder>`` (:func:`train_command`) in
its own process, its standard output and error appended to ``out.txt`` / ``err.txt`` in the
job's folder (as DomainBed's ``train.py`` tees them). A job is finished when its process
exits with status 0 **and** it left the file ``done``; an incomplete job launched again
resumes from its last checkpoint (the training command does that itself).

* :class:`LocalLauncher`: ``N`` processes at a time on this machine, each with
  ``OMP_NUM_THREADS = max(1, cores // N)`` (:func:`landscape.device.available_cores`) unless
  a thread count is given; one status line per finished job, a failed job does not stop the
  others, Ctrl-C stops the running jobs (they resume when launched again).
* :func:`submit_slurm`: one Slurm job array through ``submitit`` (an optional dependency:
  ``pip install submitit``), each task running the same logged command.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from landscape.sweeps.jobs import DONE_FILE, Job

#: Longest error line quoted in a failed job's status line.
ERROR_CHARS = 160


def train_command(job: Job) -> list[str]:
    """The command that trains ``job``: ``python -m landscape train --dataset ... --out DIR``.

    Every DomainBed argument of the job is passed (``task`` is DomainBed's constant and is
    not an option of ours); ``--steps``, ``--data-dir``, ``--checkpoint-freq`` and
    ``--hparams`` only when the sweep was given them.
    """
    a = job.args
    command = [sys.executable, "-m", "landscape", "train", "--dataset", a["dataset"]]
    command += ["--algorithm", a["algorithm"], "--test-envs", *map(str, a["test_envs"])]
    command += ["--hparams-seed", str(a["hparams_seed"]), "--trial-seed", str(a["trial_seed"])]
    command += ["--seed", str(a["seed"])]
    if a.get("steps") is not None:
        command += ["--steps", str(a["steps"])]
    command += ["--out", str(job.folder)]
    if a.get("data_dir") is not None:
        command += ["--data-dir", str(a["data_dir"])]
    command += ["--holdout-fraction", str(a["holdout_fraction"])]
    if a.get("checkpoint_freq") is not None:
        command += ["--checkpoint-freq", str(a["checkpoint_freq"])]
    if a.get("hparams") is not None:
        command += ["--hparams", a["hparams"]]
    return command


def threads_per_job(parallel: int, threads: int | None = None) -> int:
    """``threads`` when given, else ``max(1, available cores // parallel)``."""
    if threads is not None:
        return threads
    from landscape.device import available_cores

    return max(1, available_cores() // parallel)


def job_environment(threads: int | None) -> dict[str, str]:
    """This process's environment, with ``OMP_NUM_THREADS = threads`` when given."""
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def run_logged(
    command: Sequence[str],
    folder: str | os.PathLike,
    threads: int | None = None,
    started: Callable[[subprocess.Popen], None] | None = None,
) -> int:
    """Run ``command`` with its output appended to ``folder/out.txt`` and ``folder/err.txt``.

    Args:
        command: the program and its arguments (no shell).
        folder: the job's folder (created if missing).
        threads: ``OMP_NUM_THREADS`` of the process (``None``: inherited).
        started: called with the process once it runs (the launcher keeps it to stop it).

    Returns:
        The process's exit status.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "out.txt", "ab") as out, open(folder / "err.txt", "ab") as err:
        process = subprocess.Popen(
            list(command),
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=job_environment(threads),
        )
        if started is not None:
            started(process)
        return process.wait()


def last_error_line(folder: Path) -> str:
    """The last non-empty line of ``folder/err.txt`` (shortened), or ``""``."""
    try:
        with open(folder / "err.txt", "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    lines = [line.strip() for line in lines if line.strip()]
    if not lines:
        return ""
    line = lines[-1]
    return line if len(line) <= ERROR_CHARS else line[: ERROR_CHARS - 1] + "…"


@dataclass
class Outcome:
    """How one launched job ended: ``ok``, its exit status, seconds, and why when it failed."""

    job: Job
    ok: bool
    returncode: int | None
    seconds: float
    reason: str = ""


@dataclass
class LaunchSummary:
    """The jobs of one launch: finished now, failed, skipped (finished before)."""

    done: list[Job] = field(default_factory=list)
    failed: list[Outcome] = field(default_factory=list)
    skipped: list[Job] = field(default_factory=list)

    def line(self) -> str:
        n = len(self.done) + len(self.failed) + len(self.skipped)
        return (
            f"{n} jobs: {len(self.done)} done, {len(self.failed)} failed, "
            f"{len(self.skipped)} skipped (already done)"
        )


class LocalLauncher:
    """Run jobs as local processes, ``parallel`` at a time.

    Args:
        parallel: processes at once (``--jobs``).
        threads: ``OMP_NUM_THREADS`` of each job; ``None``: ``max(1, cores // parallel)``.
        command: ``job -> argv``; ``None``: :func:`train_command` (looked up at launch).
        echo: where the status lines go (``print``).
    """

    def __init__(
        self,
        parallel: int = 1,
        threads: int | None = None,
        command: Callable[[Job], list[str]] | None = None,
        echo: Callable[[str], Any] = print,
    ):
        if parallel < 1:
            raise ValueError(f"--jobs must be >= 1, got {parallel}")
        self.parallel = parallel
        self.threads = threads_per_job(parallel, threads)
        self.command = command
        self.echo = echo
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen] = set()
        self._stopping = threading.Event()

    def _run(self, job: Job) -> Outcome:
        start = time.perf_counter()
        build = self.command or train_command
        try:
            with self._lock:
                if self._stopping.is_set():
                    return Outcome(job, False, None, 0.0, "not started (interrupted)")
            code = run_logged(build(job), job.folder, self.threads, self._started)
        except OSError as err:
            return Outcome(job, False, None, time.perf_counter() - start, f"cannot start: {err}")
        seconds = time.perf_counter() - start
        if code != 0:
            tail = last_error_line(job.folder)
            reason = f"exit status {code}" + (f": {tail}" if tail else "")
            return Outcome(job, False, code, seconds, reason)
        if not (job.folder / DONE_FILE).is_file():
            return Outcome(job, False, 0, seconds, f"exit status 0 but no {DONE_FILE!r} file")
        return Outcome(job, True, 0, seconds)

    def _started(self, process: subprocess.Popen) -> None:
        with self._lock:
            self._running.add(process)
            if self._stopping.is_set():
                process.terminate()

    def _stop_all(self) -> None:
        with self._lock:
            self._stopping.set()
            running = list(self._running)
        for process in running:
            with contextlib.suppress(OSError):
                process.terminate()
        for process in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)

    def launch(self, jobs: Sequence[Job]) -> LaunchSummary:
        """Run every job not done yet; one status line each, then return the summary.

        Jobs with a ``done`` file are skipped; incomplete ones run again (they resume).

        Raises:
            KeyboardInterrupt: after stopping the running jobs (they resume next time).
        """
        summary = LaunchSummary()
        todo = []
        for job in jobs:
            (summary.skipped if (job.folder / DONE_FILE).is_file() else todo).append(job)
        width = len(str(len(todo)))
        pool = ThreadPoolExecutor(max_workers=self.parallel, thread_name_prefix="sweep-job")
        try:
            futures = [pool.submit(self._run, job) for job in todo]
            for k, future in enumerate(as_completed(futures), 1):
                outcome = future.result()
                if outcome.ok:
                    summary.done.append(outcome.job)
                    state = "done"
                else:
                    summary.failed.append(outcome)
                    state = "FAILED"
                line = f"[{k:>{width}}/{len(todo)}] {state:<6} {outcome.seconds:7.1f} s  "
                line += f"{outcome.job.folder.name}  {outcome.job.describe()}"
                if not outcome.ok:
                    line += f"  ({outcome.reason}; log: {outcome.job.folder / 'err.txt'})"
                self.echo(line)
        except BaseException:
            self._stop_all()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return summary


def run_slurm_job(command: Sequence[str], folder: str, threads: int | None = None) -> int:
    """What one Slurm task runs: :func:`run_logged`, raising when the job fails (so that
    submitit marks it failed)."""
    code = run_logged(command, folder, threads)
    if code != 0:
        raise RuntimeError(f"{' '.join(command)} exited with status {code}; see {folder}/err.txt")
    return code


def import_submitit():
    """The ``submitit`` module, or a one-line error saying how to install it."""
    try:
        return importlib.import_module("submitit")
    except ImportError:
        raise ValueError(
            "--launcher submitit needs the submitit package, which is not installed; "
            "run `pip install submitit` (or use --launcher local)"
        ) from None


def submit_slurm(
    jobs: Sequence[Job], logs: str | os.PathLike, slurm: dict[str, Any], threads: int | None
) -> list[str]:
    """Submit ``jobs`` as one Slurm job array through submitit; returns the job ids.

    Args:
        jobs: the jobs to run (each resumes if its folder holds an incomplete run).
        logs: submitit's folder (its pickles and Slurm logs; ``%j`` is the job id).
        slurm: ``AutoExecutor.update_parameters`` keywords (``slurm_partition``,
            ``timeout_min``, ``cpus_per_task``, ``gpus_per_node``, ``mem_gb``,
            ``slurm_array_parallelism``); ``None`` values are left out.
        threads: ``OMP_NUM_THREADS`` of each job (``None``: Slurm's environment decides).

    Raises:
        ValueError: submitit is not installed (the message says ``pip install submitit``).
    """
    submitit = import_submitit()
    executor = submitit.AutoExecutor(folder=str(Path(logs) / "%j"))
    parameters = {k: v for k, v in slurm.items() if v is not None}
    executor.update_parameters(name="landscape-sweep", **parameters)
    with executor.batch():
        handles = [
            executor.submit(run_slurm_job, train_command(job), str(job.folder), threads)
            for job in jobs
        ]
    return [str(handle.job_id) for handle in handles]

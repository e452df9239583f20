"""The run-folder layout, in one place: where a training run, its analysis and figures live.

A run folder (written by :func:`landscape.training.train`) holds::

    config.json                          the TrainConfig
    run.lock                             while a process writes the folder (see RunFolder.lock)
    results.json / results.npz           RunResults (final accuracies, mean ± std table)
    results.md                           the table in Markdown
    <algorithm>/restart_<k>/history.csv  one row per step
    <algorithm>/restart_<k>/state.safetensors          resumable state (atomic)
    <algorithm>/restart_<k>/checkpoints/step_XXXXX.safetensors  (+ .json copy of the metadata)

The final checkpoint of a restart is ``step_<steps>`` (``steps`` from ``config.json``).
``landscape reproduce --out DIR`` writes a :class:`JobFolder`: ``DIR/run`` (a run folder),
``DIR/analysis`` (an :class:`AnalysisFolder`) and ``DIR/figures``.

:func:`load_for_analysis` (from :mod:`landscape.inputs`, importable from here too) loads a
weights file and gathers the domains and the loss: what every checkpoint analysis starts from.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from landscape.io import read_json, write_json

_STEP = re.compile(r"step_(\d+)\.safetensors$")
_RESTART = re.compile(r"restart_(\d+)$")
#: A lock file that cannot be read (its writer died between creating and filling it) is
#: considered stale after this many seconds.
UNREADABLE_LOCK_GRACE_S = 30.0


class RunFolderLockedError(ValueError):
    """Another live process writes this run folder (``owner``: the lock file's contents)."""

    def __init__(self, message: str, owner: dict[str, Any] | None = None):
        super().__init__(message)
        self.owner = owner or {}


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _read_owner(path: Path) -> dict[str, Any] | None:
    try:
        owner = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) and "pid" in owner else None


class RunLock:
    """An exclusive lock on a folder: a file created with ``O_CREAT | O_EXCL`` holding the
    owner's pid, host and a random token.

    A lock whose owner is a dead process on this host (or that cannot be read and is older
    than :data:`UNREADABLE_LOCK_GRACE_S`) is stale and taken over; any other existing lock
    raises :class:`RunFolderLockedError` naming the folder and the owner's pid. Use it as a
    context manager: the lock is released on exit, exceptions included.
    """

    def __init__(self, path: str | os.PathLike, folder: str | os.PathLike | None = None):
        self.path = Path(path)
        self.folder = Path(folder) if folder is not None else self.path.parent
        self.token: str | None = None

    def acquire(self) -> RunLock:
        """Take the lock (creating the folder); raise if a live process holds it."""
        if self.token is not None:
            raise RuntimeError(f"{self.path} is already held by this RunLock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "token": secrets.token_hex(8),
                 "started": time.strftime("%Y-%m-%dT%H:%M:%S")}  # fmt: skip
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(owner))
            self.token = owner["token"]
            return self
        raise RunFolderLockedError(f"{self.folder} is locked ({self.path}); try again")

    def _take_over_if_stale(self) -> None:
        """Remove the existing lock file if it is stale; raise if it is held."""
        owner = _read_owner(self.path)
        if owner is None:
            try:
                age = time.time() - self.path.stat().st_mtime
            except FileNotFoundError:  # released meanwhile
                return
            if age < UNREADABLE_LOCK_GRACE_S:
                raise RunFolderLockedError(
                    f"{self.folder} is being locked by another process ({self.path} is not "
                    "filled in yet); wait for it, or choose another output folder"
                )
        elif owner.get("host") != socket.gethostname() or _pid_alive(int(owner["pid"])):
            raise RunFolderLockedError(
                f"{self.folder} is in use by process {owner['pid']} on {owner.get('host')} "
                f"(lock file {self.path}); wait for it to finish, or choose another output "
                "folder (delete the lock file only if that process is gone)",
                owner,
            )
        # stale: move it aside atomically, so that two processes cannot both remove it
        aside = self.path.with_name(f"{self.path.name}.stale.{os.getpid()}")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return
        moved = _read_owner(aside)
        if moved is not None and owner is not None and moved.get("token") != owner.get("token"):
            # a live process locked the folder between our read and our move: give it back
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)
            aside.unlink(missing_ok=True)
            raise RunFolderLockedError(
                f"{self.folder} is in use by process {moved['pid']} on {moved.get('host')} "
                f"(lock file {self.path}); wait for it to finish, or choose another output folder",
                moved,
            )
        aside.unlink(missing_ok=True)

    def release(self) -> None:
        """Remove the lock file if this object holds it (a no-op otherwise)."""
        if self.token is None:
            return
        owner = _read_owner(self.path)
        if owner is not None and owner.get("token") == self.token:
            self.path.unlink(missing_ok=True)
        self.token = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@dataclass(frozen=True)
class RunFolder:
    """The layout of a run folder written by :func:`landscape.training.train`.

    Args:
        root: the folder (``--out`` of ``landscape train``).

    Example:
        >>> folder = RunFolder("runs/demo")
        >>> folder.checkpoint_path("fishr", 0, 501).as_posix()
        'runs/demo/fishr/restart_0/checkpoints/step_00501.safetensors'
    """

    root: Path

    def __init__(self, root: str | os.PathLike | RunFolder):
        object.__setattr__(self, "root", Path(root.root if isinstance(root, RunFolder) else root))

    # ---- files of the whole run ----------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.root / "config.json"

    @property
    def results_stem(self) -> Path:
        """``results`` (``.json`` + ``.npz``, see :class:`landscape.io.SavedResult`)."""
        return self.root / "results"

    @property
    def results_markdown(self) -> Path:
        return self.root / "results.md"

    @property
    def lock_path(self) -> Path:
        return self.root / "run.lock"

    def has_config(self) -> bool:
        return self.config_path.is_file()

    def has_results(self) -> bool:
        return self.results_stem.with_suffix(".json").is_file()

    def read_config(self) -> dict[str, Any]:
        """``config.json`` as a dict; ``FileNotFoundError`` if this is not a run folder."""
        if not self.has_config():
            raise FileNotFoundError(f"{self.root} is not a run folder (no config.json)")
        return read_json(self.config_path)

    def write_config(self, values: dict[str, Any]) -> None:
        write_json(self.config_path, values)

    def lock(self) -> RunLock:
        """The folder's exclusive lock (``with folder.lock(): ...``; see :class:`RunLock`)."""
        return RunLock(self.lock_path, self.root)

    # ---- one (algorithm, restart) --------------------------------------------------------

    def restart_dir(self, algorithm: str, restart: int) -> Path:
        return self.root / algorithm / f"restart_{restart}"

    def history_path(self, algorithm: str, restart: int) -> Path:
        return self.restart_dir(algorithm, restart) / "history.csv"

    def state_path(self, algorithm: str, restart: int) -> Path:
        return self.restart_dir(algorithm, restart) / "state.safetensors"

    def checkpoint_dir(self, algorithm: str, restart: int) -> Path:
        return self.restart_dir(algorithm, restart) / "checkpoints"

    def checkpoint_path(self, algorithm: str, restart: int, step: int) -> Path:
        """Checkpoint of ``step`` (the weights after ``step`` updates)."""
        return self.checkpoint_dir(algorithm, restart) / f"step_{int(step):05d}.safetensors"

    def checkpoint_steps(self, algorithm: str, restart: int) -> list[int]:
        """The steps saved for ``(algorithm, restart)``, ascending."""
        found = (_STEP.search(p.name) for p in self.checkpoint_dir(algorithm, restart).glob(
            "step_*.safetensors"))  # fmt: skip
        return sorted(int(m.group(1)) for m in found if m)

    def final_checkpoint(self, algorithm: str, restart: int = 0) -> Path:
        """The checkpoint of the last step (``config.json``'s ``steps``).

        Raises:
            FileNotFoundError: the run has not finished (or is not a run folder).
        """
        path = self.checkpoint_path(algorithm, restart, int(self.read_config()["steps"]))
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; finish the run with `landscape train`")
        return path

    def has_final(self, algorithm: str, restart: int = 0) -> bool:
        try:
            self.final_checkpoint(algorithm, restart)
        except FileNotFoundError:
            return False
        return True

    def restarts(self, algorithm: str, what: str = "checkpoints") -> list[int]:
        """Restart indices of ``algorithm`` that have ``what`` (``"checkpoints"`` or
        ``"history.csv"``), ascending."""
        found = []
        for p in (self.root / algorithm).glob("restart_*"):
            m = _RESTART.search(p.name)
            if m and (p / what).exists():
                found.append(int(m.group(1)))
        return sorted(found)

    def history_paths(self, algorithm: str) -> list[Path]:
        """Every restart's ``history.csv`` of ``algorithm``, by restart index."""
        return [self.history_path(algorithm, k) for k in self.restarts(algorithm, "history.csv")]

    def layout(self) -> dict[str, list[int]]:
        """``{algorithm: [restart, ...]}`` of the runs that have checkpoints.

        Raises:
            FileNotFoundError: the folder does not exist or holds no checkpoints.
        """
        if not self.root.is_dir():
            raise FileNotFoundError(f"run folder {self.root} does not exist")
        layout = {}
        for algo_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            restarts = self.restarts(algo_dir.name)
            if restarts:
                layout[algo_dir.name] = restarts
        if not layout:
            raise FileNotFoundError(
                f"{self.root} holds no checkpoints; train with `landscape train`"
            )
        return layout

    def finished_algorithms(self, restart: int = 0) -> list[str]:
        """Algorithms (folder order) whose ``restart`` has its final checkpoint."""
        return [a for a in self.layout() if self.has_final(a, restart)]


@dataclass(frozen=True)
class AnalysisFolder:
    """Where :func:`landscape.pipeline.analyse_run` saves each result (``<stem>.json`` +
    ``<stem>.npz``): ``score_head_<algo>``, ``score_network_<algo>``, ``alignment``,
    ``surface_plane`` and ``surface_inconsistency_<algo>``."""

    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    #: result kinds of the inconsistency score: ``{kind: stem prefix}``
    SCORE_PREFIXES = {"head": "score_head_", "network": "score_network_"}

    def score(self, kind: str, algorithm: str) -> Path:
        """Stem of the I^ε result of ``kind`` (``"head"`` or ``"network"``)."""
        return self.root / f"{self.SCORE_PREFIXES[kind]}{algorithm}"

    def scores(self, kind: str) -> dict[str, Path]:
        """``{algorithm: stem}`` of the saved I^ε results of ``kind``, sorted by name."""
        prefix = self.SCORE_PREFIXES[kind]
        paths = sorted(self.root.glob(f"{prefix}*.json"))
        return {p.stem[len(prefix) :]: p.with_suffix("") for p in paths}

    @property
    def alignment(self) -> Path:
        return self.root / "alignment"

    @property
    def surface_plane(self) -> Path:
        return self.root / "surface_plane"

    def surface_direction(self, algorithm: str) -> Path:
        return self.root / f"surface_inconsistency_{algorithm}"

    def surfaces(self) -> list[Path]:
        """Stems of every saved surface, sorted."""
        return [p.with_suffix("") for p in sorted(self.root.glob("surface_*.json"))]

    @staticmethod
    def done(stem: Path) -> bool:
        """Whether the result ``stem`` is saved (both files)."""
        return stem.with_suffix(".json").is_file() and stem.with_suffix(".npz").is_file()


@dataclass(frozen=True)
class JobFolder:
    """The folder of ``landscape reproduce --out DIR``: ``run``, ``analysis``, ``figures``."""

    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    @property
    def run(self) -> RunFolder:
        return RunFolder(self.root / "run")

    @property
    def analysis(self) -> AnalysisFolder:
        return AnalysisFolder(self.root / "analysis")

    @property
    def figures(self) -> Path:
        return self.root / "figures"


def __getattr__(name: str):
    # load_for_analysis lives in landscape.inputs (what to analyse: model, domains, loss);
    # imported on first use, so this module stays free of torch
    if name == "load_for_analysis":
        from landscape.inputs import load_for_analysis

        return load_for_analysis
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AnalysisFolder",
    "JobFolder",
    "RunFolder",
    "RunFolderLockedError",
    "RunLock",
    "load_for_analysis",  # noqa: F822 (module __getattr__: landscape.inputs)
]

"""The folder of one DomainBed-protocol run (``landscape train --dataset NAME --out DIR``).

DomainBed's ``scripts/train.py`` writes ``results.jsonl`` (one JSON record per evaluation),
``model.pkl`` and ``done`` into its ``--output_dir``; DomainBed's ``collect_results`` and
ours read every sub-folder of a sweep that holds ``results.jsonl``. A run folder here keeps
those names and adds our checkpoints and the resumable state::

    args.json                       the run's settings (DomainBed's args, ours, the hparams)
    results.jsonl                   one record per evaluation (DomainBed's keys, see records.py)
    done                            written last, as DomainBed does ("done")
    model.safetensors (+ .json)     final weights, a landscape checkpoint (load_checkpoint)
    model.pkl                       final weights in DomainBed's format (--save-domainbed-pkl)
    checkpoints/step_XXXXX.safetensors (+ .json)  weights at each evaluation (record "step")
    state.safetensors               resumable state, rewritten at each evaluation (atomic)
    run.lock                        while a process writes the folder

``step_XXXXX`` is DomainBed's record ``"step"``: the weights after ``step + 1`` updates.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from landscape.io import read_json, write_json
from landscape.runs import RunLock

_STEP = re.compile(r"step_(\d+)\.safetensors$")

#: File names of a run folder (the sweep tools read these).
ARGS_FILE = "args.json"
RESULTS_FILE = "results.jsonl"
DONE_FILE = "done"
MODEL_FILE = "model.safetensors"
DOMAINBED_MODEL_FILE = "model.pkl"
STATE_FILE = "state.safetensors"
CHECKPOINT_DIR = "checkpoints"
LOCK_FILE = "run.lock"


@dataclass(frozen=True)
class DomainBedRunFolder:
    """The layout of a DomainBed-protocol run folder (see the module docstring).

    Example:
        >>> folder = DomainBedRunFolder("runs/rmnist")
        >>> folder.checkpoint_path(99).as_posix()
        'runs/rmnist/checkpoints/step_00099.safetensors'
    """

    root: Path

    def __init__(self, root: str | os.PathLike | DomainBedRunFolder):
        root = root.root if isinstance(root, DomainBedRunFolder) else root
        object.__setattr__(self, "root", Path(root))

    @property
    def args_path(self) -> Path:
        return self.root / ARGS_FILE

    @property
    def results_path(self) -> Path:
        return self.root / RESULTS_FILE

    @property
    def done_path(self) -> Path:
        return self.root / DONE_FILE

    @property
    def model_path(self) -> Path:
        return self.root / MODEL_FILE

    @property
    def domainbed_model_path(self) -> Path:
        return self.root / DOMAINBED_MODEL_FILE

    @property
    def state_path(self) -> Path:
        return self.root / STATE_FILE

    @property
    def checkpoint_dir(self) -> Path:
        return self.root / CHECKPOINT_DIR

    def checkpoint_path(self, step: int) -> Path:
        """Checkpoint of DomainBed's record ``step`` (weights after ``step + 1`` updates)."""
        return self.checkpoint_dir / f"step_{int(step):05d}.safetensors"

    def checkpoint_steps(self) -> list[int]:
        """The record steps with a checkpoint, ascending."""
        found = (_STEP.search(p.name) for p in self.checkpoint_dir.glob("step_*.safetensors"))
        return sorted(int(m.group(1)) for m in found if m)

    def is_done(self) -> bool:
        """Whether the run finished (``done`` written, as DomainBed's ``collect_results`` asks)."""
        return self.done_path.is_file()

    def has_args(self) -> bool:
        return self.args_path.is_file()

    def read_args(self) -> dict[str, Any]:
        """``args.json``; ``FileNotFoundError`` when this is no DomainBed-protocol run folder."""
        if not self.has_args():
            raise FileNotFoundError(f"{self.root} is not a DomainBed run folder (no {ARGS_FILE})")
        return read_json(self.args_path)

    def write_args(self, values: dict[str, Any]) -> None:
        write_json(self.args_path, values)

    def read_records(self) -> list[dict[str, Any]]:
        """Every record of ``results.jsonl`` in file order (``[]`` when there is none yet)."""
        return read_records(self.results_path)

    def lock(self) -> RunLock:
        """The folder's exclusive lock (``with folder.lock(): ...``)."""
        return RunLock(self.root / LOCK_FILE, self.root)


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a ``results.jsonl`` (one JSON object per line), in file order.

    Raises:
        ValueError: a line is not JSON (one line naming the file and the line number).
    """
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}, line {number} is not JSON ({err}); re-create it") from None
    return records

"""The records of ``results.jsonl``, as DomainBed's ``scripts/train.py`` writes them.

At record step ``t`` (``t % checkpoint_freq == 0`` or the last step) DomainBed writes one
line ``json.dumps(results, sort_keys=True)`` with:

* ``"step"``: ``t``, the index of the update just made (the weights have had ``t + 1``);
* ``"epoch"``: ``t / steps_per_epoch`` with ``steps_per_epoch = min_i len(in_i) /
  batch_size`` over the *in* splits of every environment (test environments included, as
  DomainBed computes it);
* every value the algorithm's ``update`` returned (``"loss"``, ``"nll"``, ``"penalty"``, ...)
  and ``"step_time"`` (seconds), each the mean over the updates since the previous record;
* ``"env{i}_in_acc"``, ``"env{i}_out_acc"`` for every environment ``i`` (and
  ``"env{i}_uda_acc"`` when a test environment has a *uda* split; never here:
  ``uda_holdout_fraction`` is 0);
* ``"mem_gb"``: ``torch.cuda.max_memory_allocated() / 2**30`` (0 on CPU);
* ``"hparams"`` and ``"args"`` (DomainBed's ``vars(args)``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from landscape.io import atomic_write
from landscape.models.domainbed import plain
from landscape.training.minibatch.folder import read_records

#: Keys every record has (besides the update's values and the accuracies).
RECORD_KEYS = ("step", "epoch", "step_time", "mem_gb", "hparams", "args")


def accuracy_key(env_i: int, split: str) -> str:
    """DomainBed's name of an accuracy: ``env{i}_{split}_acc`` (split ``in``, ``out``, ``uda``)."""
    return f"env{int(env_i)}_{split}_acc"


def make_record(
    step: int,
    epoch: float,
    values: Mapping[str, list[float]],
    accuracies: Mapping[str, float],
    mem_gb: float,
    hparams: Mapping[str, Any],
    args: Mapping[str, Any],
) -> dict[str, Any]:
    """One record: ``step``, ``epoch``, the mean of each logged value since the previous
    record (``values``: ``{name: [value per update]}``, ``step_time`` among them), the
    accuracies (``{"env0_in_acc": ...}``), ``mem_gb``, ``hparams`` and ``args`` (JSON only)."""
    record: dict[str, Any] = {"step": int(step), "epoch": float(epoch)}
    for key, vals in values.items():
        record[key] = float(np.mean(vals))
    record.update({k: float(v) for k, v in accuracies.items()})
    record["mem_gb"] = float(mem_gb)
    record["hparams"] = plain(dict(hparams))
    record["args"] = plain(dict(args))
    return record


def record_line(record: Mapping[str, Any]) -> str:
    """The line DomainBed writes: ``json.dumps(record, sort_keys=True)`` and a newline."""
    return json.dumps(record, sort_keys=True) + "\n"


def append_record(path: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Append one record to ``results.jsonl`` (flushed and synced to disk)."""
    with open(path, "a") as f:
        f.write(record_line(record))
        f.flush()
        os.fsync(f.fileno())


def keep_records_before(path: str | os.PathLike, step: int) -> list[dict[str, Any]]:
    """Rewrite ``results.jsonl`` (atomically) with only its records of steps ``< step``.

    A run interrupted after writing a record but before saving the state that follows it
    resumes from the earlier state and writes that record again: this drops the copy.

    Returns:
        The records kept.
    """
    path = Path(path)
    records = read_records(path)
    kept = [r for r in records if int(r.get("step", -1)) < step]
    if len(kept) != len(records):
        text = "".join(record_line(r) for r in kept)
        atomic_write(path, lambda f: f.write(text), binary=False)
    return kept

"""Reading a sweep's records and DomainBed's model selection.

A *record* is one line of a run's ``results.jsonl``: one evaluation, with ``step``,
``env{i}_in_acc`` / ``env{i}_out_acc`` (accuracies in [0, 1]) for every environment ``i``,
``args`` (``dataset, algorithm, test_envs, hparams_seed, trial_seed, ...``) and ``hparams``.

Facts from facebookresearch/DomainBed (``domainbed/model_selection.py``,
``domainbed/lib/reporting.py``, ``domainbed/lib/query.py``), followed here (our own code):

* records are grouped by ``(trial_seed, dataset, algorithm, test_env)`` for every test
  environment of their run, and within a group a *run* is the records of one
  ``hparams_seed``; only records whose run has a single test environment count;
* **training-domain validation** (``IIDAccuracySelectionMethod``): in each run, the record
  with the largest ``val = mean_{i != t} env{i}_out_acc`` (the training environments'
  held-out splits, ``t`` the test environment); its ``test = env{t}_in_acc``;
* **test-domain validation, oracle** (``OracleSelectionMethod``): in each run, the record of
  the last step (no early stopping); ``val = env{t}_out_acc``, ``test = env{t}_in_acc``;
* across the runs of a group, the run with the largest ``val`` wins; the group's accuracy is
  its ``test``.

Ties, as DomainBed's code breaks them: within a run the first record in file order (Python's
``max``; for the oracle, the last record of the largest step); across runs the larger
``hparams_seed`` (a stable ascending sort, then reversed). A NaN validation accuracy counts
as -inf. DomainBed's third method, leave-one-domain-out, needs runs with two test
environments and is not computed here.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from landscape.sweeps.jobs import DONE_FILE

#: The file of a run's records.
RECORDS_FILE = "results.jsonl"

Record = dict[str, Any]


@dataclass(frozen=True)
class RunAcc:
    """The selected record of a run: validation and test accuracy (in [0, 1]) and its step."""

    val_acc: float
    test_acc: float
    step: int | None = None
    hparams_seed: Any = None


def _key(value: float) -> float:
    """A validation accuracy as a sort key: NaN is -inf."""
    return -math.inf if value is None or math.isnan(value) else float(value)


def _single_test_env(records: Iterable[Record]) -> list[Record]:
    return [r for r in records if len(r["args"]["test_envs"]) == 1]


def training_domain_acc(record: Record) -> RunAcc:
    """``val``: mean ``env{i}_out_acc`` over the training environments; ``test``: ``env{t}_in_acc``.

    The environments are ``env0, env1, ...`` up to the first missing ``env{i}_out_acc`` key.
    """
    t = record["args"]["test_envs"][0]
    vals = []
    i = 0
    while f"env{i}_out_acc" in record:
        if i != t:
            vals.append(float(record[f"env{i}_out_acc"]))
        i += 1
    val = sum(vals) / len(vals) if vals else math.nan
    return RunAcc(val, float(record[f"env{t}_in_acc"]), record.get("step"))


def training_domain_run(run: Sequence[Record]) -> RunAcc | None:
    """Training-domain validation in one run: the record of the best training-domain ``val``."""
    run = _single_test_env(run)
    if not run:
        return None
    accs = [training_domain_acc(r) for r in run]
    return max(accs, key=lambda a: _key(a.val_acc))  # the first maximum, as DomainBed


def oracle_run(run: Sequence[Record]) -> RunAcc | None:
    """Test-domain validation (oracle) in one run: the last step's test-env out / in accuracy."""
    run = _single_test_env(run)
    if not run:
        return None
    last = sorted(run, key=lambda r: r["step"])[-1]
    t = last["args"]["test_envs"][0]
    return RunAcc(float(last[f"env{t}_out_acc"]), float(last[f"env{t}_in_acc"]), last["step"])


@dataclass(frozen=True)
class SelectionMethod:
    """A model selection method: its key (``--selection``), DomainBed's name, its rule per run."""

    key: str
    name: str
    run_acc: Callable[[Sequence[Record]], RunAcc | None] = field(repr=False)

    def hparams_accs(self, records: Sequence[Record]) -> list[RunAcc]:
        """One :class:`RunAcc` per ``hparams_seed`` of a group, best validation first."""
        runs: dict[Any, list[Record]] = defaultdict(list)
        for r in records:
            runs[_hashable(r["args"]["hparams_seed"])].append(r)
        accs = []
        for seed in sorted(runs):
            acc = self.run_acc(runs[seed])
            if acc is not None:
                accs.append(RunAcc(acc.val_acc, acc.test_acc, acc.step, seed))
        # DomainBed: sorted ascending (stable), then reversed: ties go to the larger seed
        return sorted(accs, key=lambda a: _key(a.val_acc))[::-1]

    def sweep_acc(self, records: Sequence[Record]) -> RunAcc | None:
        """The selected run of a group (``None`` when no run qualifies)."""
        accs = self.hparams_accs(records)
        return accs[0] if accs else None


def _hashable(value: Any) -> Any:
    try:
        hash(value)
        return value
    except TypeError:
        return json.dumps(value, sort_keys=True)


TRAINING = SelectionMethod("training", "training-domain validation set", training_domain_run)
ORACLE = SelectionMethod("oracle", "test-domain validation set (oracle)", oracle_run)
#: The methods by ``--selection`` key, in the order tables list them.
SELECTION_METHODS: dict[str, SelectionMethod] = {m.key: m for m in (TRAINING, ORACLE)}
#: ``--selection`` choices: one method, or ``all``.
SELECTIONS = ("all", *SELECTION_METHODS)

#: ``(trial_seed, dataset, algorithm, test_env)``
GroupKey = tuple[Any, str, str, int]


def group_records(records: Iterable[Record]) -> dict[GroupKey, list[Record]]:
    """DomainBed's ``get_grouped_records``: records by ``(trial_seed, dataset, algorithm,
    test_env)``; a record with several test environments joins the group of each."""
    groups: dict[GroupKey, list[Record]] = defaultdict(list)
    for r in records:
        a = r["args"]
        for t in a["test_envs"]:
            groups[(a["trial_seed"], a["dataset"], a["algorithm"], t)].append(r)
    return dict(groups)


def select(records: Iterable[Record], method: SelectionMethod) -> dict[GroupKey, RunAcc]:
    """``{(trial_seed, dataset, algorithm, test_env): selected run}`` (groups without one
    are left out)."""
    out = {}
    for key, group in group_records(records).items():
        acc = method.sweep_acc(group)
        if acc is not None:
            out[key] = acc
    return out


@dataclass
class Loaded:
    """The records under a folder, and what was left out.

    Attributes:
        records: every record of every finished run, run by run in path order.
        runs: the folders of the finished runs read.
        unfinished: run folders without a ``done`` file (skipped).
        unreadable: ``"<file>: <why>"`` of finished runs whose records could not be read
            (skipped whole).
    """

    records: list[Record] = field(default_factory=list)
    runs: list[Path] = field(default_factory=list)
    unfinished: list[Path] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


#: The keys a record needs (``args`` must hold the ``ARGS_KEYS``).
RECORD_KEYS = ("step", "args")
ARGS_KEYS = ("dataset", "algorithm", "test_envs", "hparams_seed", "trial_seed")


def read_run(path: Path) -> list[Record]:
    """The records of one ``results.jsonl``.

    Raises:
        ValueError: a line is not a JSON object with ``step``, ``args`` and the test
            environments' ``env{t}_in_acc`` / ``env{t}_out_acc`` (naming the line).
    """
    records = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"line {n} is not JSON ({err.msg})") from None
            missing = [k for k in RECORD_KEYS if not isinstance(record, dict) or k not in record]
            if not missing and isinstance(record["args"], dict):
                missing = [f"args.{k}" for k in ARGS_KEYS if k not in record["args"]]
            if not missing:
                missing = [
                    f"env{t}_{split}_acc"
                    for t in record["args"]["test_envs"]
                    for split in ("in", "out")
                    if f"env{t}_{split}_acc" not in record
                ]
            if missing:
                raise ValueError(f"line {n} has no {missing[0]!r}")
            records.append(record)
    return records


def load_records(root: str | os.PathLike) -> Loaded:
    """Every finished run's records under ``root``, searched recursively.

    A run folder is one holding ``results.jsonl``; it is finished when it also holds ``done``
    (DomainBed's ``train.py`` writes it last). Unfinished runs and unreadable files are
    listed, not read.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; pass the sweep's --out folder")
    loaded = Loaded()
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        if RECORDS_FILE not in files:
            continue
        folder = Path(folder)
        if DONE_FILE not in files:
            loaded.unfinished.append(folder)
            continue
        try:
            records = read_run(folder / RECORDS_FILE)
        except (OSError, UnicodeDecodeError, ValueError) as err:
            loaded.unreadable.append(f"{folder / RECORDS_FILE}: {err}")
            continue
        loaded.records.extend(records)
        loaded.runs.append(folder)
    return loaded

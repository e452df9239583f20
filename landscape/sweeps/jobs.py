"""The jobs of a sweep: data sets × algorithms × test environments × trials × hparams draws.

Facts from facebookresearch/DomainBed (``domainbed/scripts/sweep.py``, ``scripts/train.py``),
which this module follows (its own code, the same arguments and names):

* the jobs are enumerated as ``for trial_seed in range(n_trials): for dataset: for algorithm:
  for test_envs: for hparams_seed in range(n_hparams_from, n_hparams)``; by default every
  single environment is the test environment of its own jobs (``--single_test_envs``);
* a job's arguments are ``dataset, algorithm, test_envs, holdout_fraction, hparams_seed,
  data_dir, task, trial_seed, seed`` (+ ``steps`` and ``hparams`` when given), with
  ``seed = seed_hash(dataset, algorithm, test_envs, hparams_seed, trial_seed)``;
* the job's folder is ``<sweep dir>/<md5 of json.dumps(args, sort_keys=True)>``, so the same
  sweep finds the same folders again; a folder with a file ``done`` is a finished job, a
  folder without it an incomplete one;
* ``hparams_seed`` 0 trains with the default hyper-parameters, ``hparams_seed`` h >= 1 with a
  random draw seeded by ``seed_hash(h, trial_seed)`` (``train.py`` draws them, not the sweep).

Ours differs in one default only: ``hparams_draws=1`` (DomainBed's ``n_hparams`` is 20), i.e.
the default hyper-parameters alone, which is what the Fishr paper's reproduction needs;
``hparams_draws=N`` gives DomainBed's ``hparams_seed in range(N)``. An optional
``checkpoint_freq`` joins the arguments (and so the folder's hash) only when given, as
``steps`` does.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

#: DomainBed's names of the algorithms ``landscape train --dataset`` trains.
ALGORITHMS: tuple[str, ...] = ("ERM", "IRM", "VREx", "Fishr")
#: DomainBed's ``--task`` (part of every job's arguments, hence of its folder name).
TASK = "domain_generalization"
#: DomainBed's default ``--holdout_fraction``.
HOLDOUT_FRACTION = 0.2
#: The file a finished job leaves in its folder.
DONE_FILE = "done"


class JobState(str, Enum):
    """Where a job stands, read from its folder (DomainBed's ``Job`` states)."""

    #: no folder yet
    NOT_LAUNCHED = "not launched"
    #: a folder without ``done``: started, then stopped or still running (resumed when
    #: launched again: the training command continues from its last checkpoint)
    INCOMPLETE = "incomplete"
    #: a ``done`` file: finished, skipped by a launch
    DONE = "done"


@dataclass(frozen=True)
class Job:
    """One training run of a sweep.

    Attributes:
        args: DomainBed's argument dictionary of the run (without ``output_dir``).
        folder: ``<sweep dir>/<hash>``, :func:`job_hash` of ``args``.
    """

    args: dict[str, Any] = field(hash=False)
    folder: Path

    @property
    def state(self) -> JobState:
        if (self.folder / DONE_FILE).is_file():
            return JobState.DONE
        if self.folder.exists():
            return JobState.INCOMPLETE
        return JobState.NOT_LAUNCHED

    def describe(self) -> str:
        """``Debug28 ERM test_envs=[0] hparams_seed=0 trial_seed=1`` (for status lines)."""
        a = self.args
        return (
            f"{a['dataset']} {a['algorithm']} test_envs={a['test_envs']} "
            f"hparams_seed={a['hparams_seed']} trial_seed={a['trial_seed']}"
        )


def job_hash(args: dict[str, Any]) -> str:
    """The folder name of a job: md5 of ``json.dumps(args, sort_keys=True)`` (DomainBed's).

    Example:
        >>> job_hash({"b": 1, "a": [0]}) == hashlib.md5(b'{"a": [0], "b": 1}').hexdigest()
        True
    """
    return hashlib.md5(json.dumps(args, sort_keys=True).encode("utf-8")).hexdigest()


def canonical_algorithm(name: str) -> str:
    """DomainBed's spelling of an algorithm, any case accepted (``"vrex"`` -> ``"VREx"``).

    Raises:
        ValueError: not one of :data:`ALGORITHMS` (the message lists them).
    """
    for known in ALGORITHMS:
        if name.lower() == known.lower():
            return known
    raise ValueError(f"unknown algorithm {name!r}; choose from {', '.join(ALGORITHMS)}")


def single_test_envs(dataset: str, test_envs: Sequence[int] | None) -> list[list[int]]:
    """The test environments of a data set's jobs, one single environment per job.

    Args:
        dataset: DomainBed's name of the data set.
        test_envs: environment indices, each the test environment of its own jobs; ``None``:
            every environment in turn (DomainBed's ``--single_test_envs``).

    Raises:
        ValueError: an unknown data set, or an index it does not have.
    """
    from landscape.data.domainbed.catalog import dataset_info  # imports torch: only here

    info = dataset_info(dataset)
    n = len(info.environments)
    if test_envs is None:
        return [[i] for i in range(n)]
    for i in test_envs:
        if not 0 <= i < n:
            names = ", ".join(f"{k}: {e}" for k, e in enumerate(info.environments))
            raise ValueError(
                f"{dataset} has no environment {i} (it has {names}); pass indices 0 to {n - 1} "
                "to --test-envs, or all"
            )
    return [[i] for i in dict.fromkeys(test_envs)]


def check_hparams(hparams: str | None) -> str | None:
    """``hparams`` unchanged when it is a JSON object (or ``None``); a clear error otherwise."""
    if hparams is None:
        return None
    try:
        value = json.loads(hparams)
    except json.JSONDecodeError as err:
        raise ValueError(f"--hparams is not JSON ({err}); e.g. '{{\"lr\": 1e-4}}'") from None
    if not isinstance(value, dict):
        raise ValueError(
            f"--hparams must be a JSON object, got {hparams!r}; e.g. '{{\"lr\": 1e-4}}'"
        )
    return hparams


def train_args(
    dataset: str,
    algorithm: str,
    test_envs: list[int],
    hparams_seed: int,
    trial_seed: int,
    *,
    data_dir: str | None = None,
    holdout_fraction: float = HOLDOUT_FRACTION,
    steps: int | None = None,
    checkpoint_freq: int | None = None,
    hparams: str | None = None,
) -> dict[str, Any]:
    """DomainBed's argument dictionary of one job (``make_args_list``), ``seed`` included.

    ``seed = seed_hash(dataset, algorithm, test_envs, hparams_seed, trial_seed)``, the md5 of
    the tuple's ``str`` modulo ``2**31`` (``test_envs`` as a list, as DomainBed passes it).
    """
    from landscape.data.domainbed.split import seed_hash  # imports torch: only here

    args: dict[str, Any] = {
        "dataset": dataset,
        "algorithm": algorithm,
        "test_envs": list(test_envs),
        "holdout_fraction": holdout_fraction,
        "hparams_seed": hparams_seed,
        "data_dir": data_dir,
        "task": TASK,
        "trial_seed": trial_seed,
        "seed": seed_hash(dataset, algorithm, list(test_envs), hparams_seed, trial_seed),
    }
    if steps is not None:
        args["steps"] = steps
    if checkpoint_freq is not None:
        args["checkpoint_freq"] = checkpoint_freq
    if hparams is not None:
        args["hparams"] = hparams
    return args


def make_jobs(
    datasets: Iterable[str],
    algorithms: Iterable[str],
    out: str | os.PathLike,
    *,
    test_envs: Sequence[int] | None = None,
    trials: int = 3,
    hparams_draws: int = 1,
    **options: Any,
) -> list[Job]:
    """Every job of a sweep, in DomainBed's order (trial, data set, algorithm, test env, hparams).

    Args:
        datasets: DomainBed names (``"ColoredMNIST"``, ``"PACS"``, ...).
        algorithms: DomainBed names, any case (:func:`canonical_algorithm`).
        out: the sweep folder; job ``j`` lives in ``out/<job_hash(j.args)>``.
        test_envs: see :func:`single_test_envs` (``None``: every environment in turn).
        trials: trial seeds ``0 .. trials-1`` (the data split and the random draws).
        hparams_draws: hparams seeds ``0 .. hparams_draws-1``; 0 is the default
            hyper-parameters, every other seed a random draw made by the training command.
        **options: ``data_dir``, ``holdout_fraction``, ``steps``, ``checkpoint_freq``,
            ``hparams`` (:func:`train_args`).

    Raises:
        ValueError: an unknown data set or algorithm, a missing test environment, counts
            below 1, a holdout fraction outside (0, 1), or ``hparams`` that is not a JSON
            object.
    """
    datasets, algorithms = list(dict.fromkeys(datasets)), list(dict.fromkeys(algorithms))
    if not datasets or not algorithms:
        raise ValueError("a sweep needs at least one --dataset and one --algorithm")
    if trials < 1 or hparams_draws < 1:
        raise ValueError(
            f"--trials and --hparams-draws must be >= 1, got {trials}, {hparams_draws}"
        )
    holdout = options.get("holdout_fraction", HOLDOUT_FRACTION)
    if not 0 < holdout < 1:  # False for NaN too
        raise ValueError(f"--holdout-fraction must be in (0, 1), got {holdout}; e.g. 0.2")
    algorithms = [canonical_algorithm(a) for a in algorithms]
    envs = {d: single_test_envs(d, test_envs) for d in datasets}
    options["hparams"] = check_hparams(options.get("hparams"))
    jobs = []
    for trial_seed in range(trials):
        for dataset in datasets:
            for algorithm in algorithms:
                for test in envs[dataset]:
                    for hparams_seed in range(hparams_draws):
                        args = train_args(
                            dataset, algorithm, test, hparams_seed, trial_seed, **options
                        )
                        jobs.append(Job(args, Path(out) / job_hash(args)))
    return jobs


def count_states(jobs: Iterable[Job]) -> dict[JobState, int]:
    """``{state: number of jobs}`` for every :class:`JobState` (zeros included)."""
    counts = dict.fromkeys(JobState, 0)
    for job in jobs:
        counts[job.state] += 1
    return counts

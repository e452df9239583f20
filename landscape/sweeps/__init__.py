"""DomainBed-style sweeps: launch many training runs, then select models and tabulate.

* :mod:`~landscape.sweeps.jobs`: the jobs of a sweep (data sets × algorithms × test
  environments × trial seeds × hparams seeds), each in a folder named by the md5 of its
  arguments, as DomainBed's ``sweep.py`` names them;
* :mod:`~landscape.sweeps.launch`: local processes in parallel, or Slurm through submitit;
* :mod:`~landscape.sweeps.selection`: the runs' ``results.jsonl`` records and DomainBed's
  model selection (training-domain validation, test-domain oracle);
* :mod:`~landscape.sweeps.tables`: DomainBed's tables (mean ± standard error over trials),
  in Markdown and LaTeX, with the Fishr paper's numbers beside ours.

::

    jobs = make_jobs(["ColoredMNIST"], ["ERM", "Fishr"], "runs/sweep", trials=3)
    LocalLauncher(parallel=2).launch(jobs)
    collect("runs/sweep")          # writes runs/sweep/results.md and results.tex

The same from the command line: ``landscape sweep`` and ``landscape collect``.
"""

from __future__ import annotations

import importlib

#: public name -> the module defining it (imported on first use: ``landscape.sweeps.jobs``
#: and ``selection`` stay free of torch, so the command-line parser builds fast)
_WHERE = {
    "ALGORITHMS": "jobs",
    "Job": "jobs",
    "JobState": "jobs",
    "job_hash": "jobs",
    "make_jobs": "jobs",
    "LocalLauncher": "launch",
    "submit_slurm": "launch",
    "train_command": "launch",
    "ORACLE": "selection",
    "SELECTION_METHODS": "selection",
    "TRAINING": "selection",
    "RunAcc": "selection",
    "SelectionMethod": "selection",
    "load_records": "selection",
    "select": "selection",
    "collect": "tables",
    "mean_se": "tables",
}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"landscape.sweeps.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ALGORITHMS",
    "ORACLE",
    "SELECTION_METHODS",
    "TRAINING",
    "Job",
    "JobState",
    "LocalLauncher",
    "RunAcc",
    "SelectionMethod",
    "collect",
    "job_hash",
    "load_records",
    "make_jobs",
    "mean_se",
    "select",
    "submit_slurm",
    "train_command",
]

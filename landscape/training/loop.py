"""Train every (algorithm, restart) of a config into a run folder, resuming what it holds.

On Colored MNIST (default ``stream="script"``), restart ``k`` *is* restart ``k`` of the
official script run with ``--seed seed``: its data and initial weights come from the
script's random stream, reached by replaying the draws of restarts ``0 .. k-1`` (no
training; :mod:`landscape.data.colored_mnist`). With ``stream="per-restart"`` (and on other
data), restart ``k`` initialises its model with seed ``seed + k`` and, by default
(``resample_data=True``), builds its data with seed ``data_seed + k``; with
``resample_data=False`` all restarts share the data of ``data_seed``. Either way the data
change from restart to restart, as in the script, so the spread over restarts holds data
variance as well as initialisation variance; every algorithm sees the same data and initial
weights at the same restart index (paired comparisons). Checkpoints record the data spec and
the seed.

Checkpoint ``step_t`` holds ``θ_t`` (after ``t`` updates; ``step_00000`` is the
initialisation) and its metadata carries the history row's accuracies. The results hold two
numbers per restart (:class:`RunResults`): the final weights' row and the forward pass of
the last update, one Adam step earlier, which is the number the Colored MNIST script
reports. The folder layout is :class:`landscape.runs.RunFolder`'s.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor
from tqdm.auto import tqdm

from landscape.checkpoint import load_tensors, read_metadata, save_checkpoint, save_tensors
from landscape.device import keep_freed_memory, resolve_device
from landscape.domains import check_domains, concat
from landscape.io import atomic_write
from landscape.runs import RunFolder
from landscape.training.config import TrainConfig
from landscape.training.history import read_history, write_history
from landscape.training.results import RunResults
from landscape.training.trainer import Trainer


def run_dir(out_dir: str | os.PathLike, algorithm: str, restart: int) -> Path:
    """Folder of one (algorithm, restart) inside a run folder."""
    return RunFolder(out_dir).restart_dir(algorithm, restart)


def checkpoint_path(out_dir: str | os.PathLike, algorithm: str, restart: int, step: int) -> Path:
    """Path of the checkpoint of ``step`` (weights after ``step`` updates)."""
    return RunFolder(out_dir).checkpoint_path(algorithm, restart, step)


def full_batches(domains: Mapping[str, Any], device, dtype) -> dict[str, tuple[Tensor, Tensor]]:
    """Each domain as one ``(X, y)`` pair on ``device``; floating tensors cast to ``dtype``."""
    out = {}
    for name, data in check_domains(domains, what="training").items():
        X, y = concat(data)
        X = X.to(device=device, dtype=dtype if X.is_floating_point() else None)
        y = y.to(device=device, dtype=dtype if y.is_floating_point() else None)
        out[name] = (X, y)
    return out


@dataclass
class RestartData:
    """What one restart draws: its data spec, full batches and domain split, and, on the
    Colored MNIST script's stream, its initial weights (``None``: seeded by the trainer)."""

    restart: int
    spec: dict
    batches: dict[str, tuple[Tensor, Tensor]]
    train_domains: list[str]
    test_domains: list[str]
    initial_weights: list[tuple[Tensor, Tensor]] | None = None

    @classmethod
    def build(cls, config: TrainConfig, restart: int, data_dir, device) -> RestartData:
        from landscape.data import build_domains, script_initial_weights

        spec = config.data_spec(restart)
        dtype = config.torch_dtype
        domains = build_domains(spec, data_dir=data_dir, device=device, dtype=dtype)
        train_domains, test_domains = config.dataset.split(list(domains))
        names = train_domains + test_domains
        batches = full_batches({d: domains[d] for d in names}, device, dtype)
        weights = script_initial_weights(spec) if config.uses_script_stream() else None
        return cls(restart, spec, batches, train_domains, test_domains, weights)


def train(
    config: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    progress: bool = True,
    resume: bool = True,
    data_dir: str | os.PathLike | None = None,
    callback: Callable[[Trainer, dict[str, float]], None] | None = None,
    jobs: int = 1,
) -> RunResults:
    """Train every algorithm of ``config`` for ``config.restarts`` restarts into ``out_dir``.

    The run folder is locked while training (:meth:`landscape.runs.RunFolder.lock`): a
    second process writing the same folder is refused. glibc's allocator is told to keep
    freed memory for the rest of the process (:func:`landscape.device.keep_freed_memory`):
    each step then reuses the pages of the previous one instead of page-faulting ~600 MB.

    Args:
        config: the settings (the defaults reproduce the Colored MNIST protocol).
        out_dir: the run folder (see :class:`landscape.runs.RunFolder` for its layout).
        progress: show a tqdm bar over all steps of all runs.
        resume: continue what ``out_dir`` holds: finished (algorithm, restart) pairs are
            skipped, interrupted ones continue from their last state (bit-identical to an
            uninterrupted run on the same device). ``False`` starts every pair over.
        data_dir: where the MNIST cache lives (see :mod:`landscape.data.mnist`).
        callback: called as ``callback(trainer, row)`` after every update (an exception
            raised there interrupts the run like a crash would).
        jobs: train this many (algorithm, restart) pairs at once, each in a process of its
            own with ``max(1, threads // jobs)`` of this process's torch threads
            (:mod:`landscape.training.workers`; CPU only, without ``callback``). On a 2-core
            AMD EPYC, ERM and Fishr (60 Colored MNIST steps each) took 75-76 s at once with
            one thread each and 89 s one after the other with two: a full-batch step does not
            keep two cores busy (on a 2-core Intel Xeon, 501 steps each: 311 against 318 s).
            Each process holds its own data and activations (about 1.4 GB per Colored MNIST
            run). The results equal the sequential ones up to the float rounding of another
            thread count.

    Returns:
        The :class:`RunResults`, also saved as ``out_dir/results.{json,npz}`` and
        ``out_dir/results.md``.

    Raises:
        RunFolderLockedError: (a ``ValueError``) another live process writes ``out_dir``.
        ValueError: ``out_dir`` holds a run with another configuration (the message names
            the differing key), a domain is unknown, or the loss became non-finite
            (:class:`NonFiniteLossError`).
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    config.validate()
    keep_freed_memory()  # reuse a step's freed activations instead of re-mapping them
    folder = RunFolder(out_dir)
    with folder.lock():
        if resume and folder.has_config():
            _check_same_config(folder, config)
        device = resolve_device(config.device)
        data = RestartData.build(config, 0, data_dir, device)
        folder.write_config(config.to_dict())
        results = _train_all(config, folder, data, data_dir, device, progress=progress,
                             resume=resume, callback=callback, jobs=jobs)  # fmt: skip
        results.save(folder.results_stem)
        text = results.markdown()
        atomic_write(folder.results_markdown, lambda f: f.write(text), binary=False)
    return results


def _check_same_config(folder: RunFolder, config: TrainConfig) -> None:
    _refuse_other_config(config, folder.read_config(), folder.config_path)


def _refuse_other_config(config: TrainConfig, saved: Any, source: Path) -> None:
    """One-line ``ValueError`` when ``saved`` (a config as a dict) differs from ``config``
    in a key that changes finished numbers (see :meth:`TrainConfig.differing_keys`)."""
    if not isinstance(saved, dict):
        raise ValueError(
            f"{source} records no training configuration, so it cannot be resumed; "
            "choose another output folder (--out)"
        )
    differences = config.describe_differences(saved)
    if differences is not None:
        raise ValueError(
            f"{source} was written with another configuration ({differences}); pass the same "
            "options to resume it, or choose another output folder (--out)"
        )


def _check_saved_files(config, folder: RunFolder, algo: str, k: int, state_meta) -> None:
    """Refuse to resume ``(algo, k)`` from a state or checkpoints another run wrote."""
    _refuse_other_config(config, state_meta.get("config"), folder.state_path(algo, k))
    for step in folder.checkpoint_steps(algo, k):
        path = folder.checkpoint_path(algo, k, step)
        meta = read_metadata(path)
        if meta.get("algorithm") != algo or meta.get("restart") != k:
            raise ValueError(
                f"{path} is a checkpoint of {meta.get('algorithm')} restart "
                f"{meta.get('restart')}, not of {algo} restart {k}; choose another output "
                "folder (--out)"
            )
        _refuse_other_config(config, meta.get("hyperparameters"), path)


@dataclass
class PairResult:
    """What one (algorithm, restart) adds to the run's results: the final weights' row, the
    last update's row (the script's number) and the seed of its initial weights."""

    final_row: dict[str, float]
    last_row: dict[str, float]
    seed: int


def train_pair(config, folder, algo, k, data, *, resume, bar, callback=None) -> PairResult:
    """Train (or resume, or skip when finished) one (algorithm, restart) on ``data`` (its
    restart's :class:`RestartData`); ``bar`` gets ``update(1)`` per step."""
    row = _train_one(config, algo, k, data, data.train_domains, data.test_domains, folder,
                     resume=resume, bar=bar, callback=callback)  # fmt: skip
    last = read_history(folder.history_path(algo, k))[-2]
    return PairResult(row, last, config.seed + (0 if data.initial_weights is not None else k))


def _train_all(config, folder, data, data_dir, device, *, progress, resume, callback, jobs):
    pairs = [(algo, k) for algo in config.algorithms for k in range(config.restarts)]
    held = _steps_held(config, folder) if resume else {}
    todo = [pair for pair in pairs if held.get(pair, 0) < config.steps]
    outcomes: dict[tuple[str, int], PairResult] = {}
    # one bar for the whole job (every algorithm and restart): its remaining time is the
    # job's; steps already done by an earlier run start it (``initial``), so they do not
    # count as speed
    with tqdm(total=len(pairs) * config.steps, initial=sum(held.values()),
              disable=not progress, unit="step", dynamic_ncols=True) as bar:  # fmt: skip
        if jobs > 1 and len(todo) > 1 and callback is None and device.type == "cpu":
            from landscape.training.workers import train_in_workers

            bar.set_description(f"{len(todo)} runs, {min(jobs, len(todo))} at a time")
            outcomes = train_in_workers(config, folder, todo, data_dir, resume=resume,
                                        jobs=jobs, bar=bar)  # fmt: skip
        for algo, k in pairs:  # one after the other: the rest (finished pairs return at once)
            if (algo, k) in outcomes:
                continue
            a = config.algorithms.index(algo)
            bar.set_description(f"{algo} ({a + 1}/{len(config.algorithms)}), "
                                f"restart {k + 1}/{config.restarts}")  # fmt: skip
            if config.resample_data and k != data.restart:
                data = RestartData.build(config, k, data_dir, device)
            outcomes[algo, k] = train_pair(config, folder, algo, k, data, resume=resume,
                                           bar=bar, callback=callback)  # fmt: skip
    final_rows = {a: [outcomes[a, k].final_row for k in range(config.restarts)]
                  for a in config.algorithms}  # fmt: skip
    last_rows = {a: [outcomes[a, k].last_row for k in range(config.restarts)]
                 for a in config.algorithms}  # fmt: skip
    seeds = {a: [outcomes[a, k].seed for k in range(config.restarts)] for a in config.algorithms}
    return RunResults.from_final(config, data.train_domains, data.test_domains, final_rows,
                                 seeds, out_dir=str(folder.root),
                                 last_update_rows=last_rows)  # fmt: skip


def _steps_held(config: TrainConfig, folder: RunFolder) -> dict[tuple[str, int], int]:
    """``{(algorithm, restart): steps}`` that the resumable states in ``folder`` already hold
    (only read for the progress bar and to pick the pairs left to train: :func:`_train_one`
    checks each state before using it)."""
    held = {}
    for algo in config.algorithms:
        for k in range(config.restarts):
            try:
                meta = read_metadata(folder.state_path(algo, k))
            except (FileNotFoundError, ValueError):
                continue
            step = config.steps if meta.get("finished") else int(meta.get("step", 0))
            held[algo, k] = min(max(step, 0), config.steps)
    return held


def _train_one(
    config, algo, k, data, train_domains, test_domains, folder, *, resume, bar, callback
) -> dict[str, float]:
    """Train (or resume, or skip when finished) one (algorithm, restart); its final row."""
    state_file = folder.state_path(algo, k)
    tensors = meta = None
    if resume and state_file.is_file():
        tensors, meta = load_tensors(state_file)
        _check_saved_files(config, folder, algo, k, meta)
        if meta.get("finished"):
            return meta["final_row"]
    elif folder.restart_dir(algo, k).is_dir():  # start over: remove what an earlier run wrote
        shutil.rmtree(folder.checkpoint_dir(algo, k), ignore_errors=True)
        for path in (state_file, folder.history_path(algo, k)):
            path.unlink(missing_ok=True)
    trainer = Trainer(config, algo, k, data.batches, train_domains, test_domains,
                      initial_weights=data.initial_weights)  # fmt: skip
    if meta is not None:
        trainer.load_state(tensors, meta)

    def save_state(final_row=None):
        tensors, meta = trainer.state_tensors()
        meta["finished"] = final_row is not None
        meta["final_row"] = final_row
        save_tensors(state_file, tensors, meta)
        write_history(folder.history_path(algo, k),
                      trainer.rows + ([final_row] if final_row else []))  # fmt: skip

    def save_ckpt(row):
        path = folder.checkpoint_path(algo, k, int(row["step"]))
        save_checkpoint(path, trainer.model, trainer.metadata(row, data.spec))

    ckpt_steps = set(config.checkpoint_steps)
    while trainer.step < config.steps:
        # the row of θ_t comes from update t itself: its checkpoint is saved just before
        row = trainer.train_step(before_update=save_ckpt if trainer.step in ckpt_steps else None)
        bar.update(1)
        if trainer.evaluates_test_at(trainer.step - 1):  # rows with the test domains
            shown = {f"acc {d}": f"{row[f'acc/{d}']:.3f}" for d in test_domains[:1]}
            bar.set_postfix(loss=f"{row['loss']:.4g}", **shown)
        if callback is not None:
            callback(trainer, row)
        if trainer.step % config.state_every == 0 and trainer.step < config.steps:
            save_state()
    final = trainer.evaluate()
    save_ckpt(final)
    save_state(final_row=final)
    return final

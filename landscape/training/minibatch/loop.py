"""DomainBed's training protocol (``domainbed/scripts/train.py``): minibatches, evaluations,
``results.jsonl``, checkpoints, and resume.

For steps ``t = 0 .. steps - 1``: one minibatch of ``batch_size`` samples from each training
environment's *in* split (drawn with replacement, :mod:`~landscape.training.minibatch.loaders`;
augmented for image data sets), one ``algorithm.update``; when ``t % checkpoint_freq == 0``
or ``t = steps - 1``: the accuracy on every environment's *in* and *out* split (eval mode,
no gradient, unaugmented inputs), one record appended to ``results.jsonl``
(:mod:`~landscape.training.minibatch.records`), the weights saved as a landscape checkpoint
``checkpoints/step_<t>.safetensors``, and the resumable state. At the end: the final weights
``model.safetensors`` (and DomainBed's ``model.pkl`` if asked), then ``done``. The layout is
:class:`~landscape.training.minibatch.folder.DomainBedRunFolder`'s.

Differences from DomainBed, none of which changes what is trained on:

* the minibatch samplers draw from their own seeded generators (saved for resume), not from
  a seed taken off the global stream, and the initial weights come from the global stream
  seeded with ``seed`` right before the algorithm is built (DomainBed builds the data set in
  between), so the same ``seed`` gives other batches and other initial weights than
  DomainBed;
* training environments are evaluated without augmentation (DomainBed evaluates them
  through their augmenting transform, so its training-domain accuracies are random);
* ``subsample`` (ours) may keep only the first samples of each split.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from landscape.checkpoint import load_tensors, save_checkpoint, save_tensors
from landscape.data.domainbed import dataset_info, domainbed_domains, seed_hash
from landscape.device import available_cores, resolve_device
from landscape.training.minibatch.algorithms import build_algorithm
from landscape.training.minibatch.config import DomainBedConfig
from landscape.training.minibatch.export import checkpoint_metadata, save_domainbed_pkl
from landscape.training.minibatch.folder import DONE_FILE, DomainBedRunFolder
from landscape.training.minibatch.loaders import AugmentedImages, InfiniteLoader
from landscape.training.minibatch.records import (
    accuracy_key,
    append_record,
    keep_records_before,
    make_record,
)
from landscape.training.minibatch.state import (
    isolated_rng,
    load_state,
    seed_everything,
    state_tensors,
)

RUN_FORMAT = "landscape-domainbed-run"


@dataclass
class RunData:
    """The environments of a run.

    Attributes:
        names: every environment's name, in DomainBed's order.
        train_envs: indices of the training environments.
        loaders: ``{env index: InfiniteLoader}`` of the training environments' *in* splits.
        evals: ``{"env{i}_in_acc": loader, ..., "env{i}_out_acc": loader}`` (unshuffled).
        in_sizes: samples in each environment's *in* split.
        input_shape, num_classes: of the data set.
    """

    names: tuple[str, ...]
    train_envs: list[int]
    loaders: dict[int, InfiniteLoader]
    evals: dict[str, Any]
    in_sizes: list[int]
    input_shape: tuple[int, ...]
    num_classes: int

    @classmethod
    def build(cls, config: DomainBedConfig, hparams, device: torch.device) -> RunData:
        info = dataset_info(config.dataset)
        workers = num_workers(config, info.kind)
        common = dict(
            test_envs=config.test_envs, holdout_fraction=config.holdout_fraction,
            trial_seed=config.trial_seed, seed=config.seed, first=config.subsample,
            num_workers=workers, device=device,
        )  # fmt: skip
        splits = {s: domainbed_domains(config.dataset, config.data_dir, split=s, **common)
                  for s in ("in", "out")}  # fmt: skip
        names = info.environments
        evals = {accuracy_key(i, s): splits[s][name]
                 for s in ("in", "out") for i, name in enumerate(names)}  # fmt: skip
        train_envs = [i for i in range(len(names)) if i not in config.test_envs]
        augment = info.kind == "images" and bool(hparams.get("data_augmentation", False))
        loaders = {}
        for i in train_envs:
            env = splits["in"][names[i]].dataset
            loaders[i] = InfiniteLoader(
                AugmentedImages(env) if augment else env, batch_size=int(hparams["batch_size"]),
                seed=seed_hash("minibatches", config.seed, i), augment=augment,
                num_workers=workers, pin_memory=device.type == "cuda",
            )  # fmt: skip
        in_sizes = [len(splits["in"][n].dataset) for n in names]
        num_classes = splits["in"].num_classes
        return cls(names, train_envs, loaders, evals, in_sizes, info.input_shape, num_classes)

    def domains(self) -> dict[str, list[str]]:
        """``{"train": [names], "test": [names]}``."""
        train = [self.names[i] for i in self.train_envs]
        return {"train": train, "test": [n for n in self.names if n not in train]}

    def close(self) -> None:
        for loader in self.loaders.values():
            loader.close()


def num_workers(config: DomainBedConfig, kind: str) -> int:
    """``config.num_workers``, or by default 0 for tensors in memory (MNIST, Debug) and up to
    8 (DomainBed's ``N_WORKERS``) for image folders, within the cores available."""
    if config.num_workers is not None:
        return config.num_workers
    return min(8, available_cores()) if kind == "images" else 0


def evaluate(algorithm, evals: Mapping[str, Any]) -> dict[str, float]:
    """Accuracy of ``algorithm.predict`` on each loader: eval mode, no gradient, then back
    to train mode. ``argmax`` of the logits (a single logit: ``> 0``) against the labels."""
    accuracies = {}
    algorithm.eval()
    try:
        with torch.no_grad():
            for key, loader in evals.items():
                correct, total = 0, 0
                for x, y in loader:
                    p = algorithm.predict(x)
                    guess = p[:, 0].gt(0).long() if p.shape[1] == 1 else p.argmax(1)
                    correct = correct + guess.eq(y).sum()
                    total += len(y)
                accuracies[key] = int(correct) / total
    finally:
        algorithm.train()
    return accuracies


def train_domainbed(
    config: DomainBedConfig,
    out_dir: str | os.PathLike,
    progress: bool = True,
    resume: bool = True,
) -> Path:
    """Train one DomainBed-protocol run into ``out_dir``; returns the folder.

    Args:
        config: the run (:class:`DomainBedConfig`).
        out_dir: its folder (:class:`DomainBedRunFolder`); DomainBed's ``--output_dir``.
        progress: show a tqdm bar over the steps.
        resume: continue from the folder's state when it holds one (a finished run is left
            as it is); ``False`` removes what an earlier run wrote and starts over.

    Returns:
        ``out_dir`` as a ``Path``.

    Raises:
        RunFolderLockedError: another live process writes ``out_dir``.
        ValueError: ``out_dir`` holds a run with other settings (the message names the
            first differing key), or the data cannot be built (one line each).
    """
    if not isinstance(config, DomainBedConfig):
        raise TypeError(f"config must be a DomainBedConfig, got {type(config).__name__}")
    config.validate()
    folder = DomainBedRunFolder(out_dir)
    with folder.lock():
        if resume:
            _refuse_other_run(folder, config)
        else:
            _clear(folder)
        pkl = not config.save_domainbed_pkl or folder.domainbed_model_path.is_file()
        if folder.is_done() and folder.model_path.is_file() and pkl:
            return folder.root  # finished (a model.pkl asked for later is written from the state)
        with isolated_rng(), _deterministic_cuda():
            _train(config, folder, progress)
    return folder.root


def _refuse_other_run(folder: DomainBedRunFolder, config: DomainBedConfig) -> None:
    """One-line ``ValueError`` when the folder holds another run (or no such run)."""
    if not folder.has_args():
        if folder.results_path.is_file() or folder.state_path.is_file():
            raise ValueError(
                f"{folder.root} holds results.jsonl or a state but no args.json; choose "
                "another output folder (--out)"
            )
        return
    saved = folder.read_args()
    if saved.get("format") != RUN_FORMAT or not isinstance(saved.get("config"), dict):
        raise ValueError(
            f"{folder.args_path} is not a DomainBed-protocol run's; choose another output folder"
        )
    differing = config.differing_key(saved["config"])
    if differing is not None:
        key, old, new = differing
        raise ValueError(
            f"{folder.root} holds a run with {key}={old!r}, not {new!r}; pass the same "
            "options to resume it, or choose another output folder (--out)"
        )


def _clear(folder: DomainBedRunFolder) -> None:
    """Remove what an earlier run wrote (``resume=False``)."""
    shutil.rmtree(folder.checkpoint_dir, ignore_errors=True)
    for path in (folder.args_path, folder.results_path, folder.done_path, folder.state_path,
                 folder.model_path, folder.model_path.with_suffix(".json"),
                 folder.domainbed_model_path):  # fmt: skip
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def _deterministic_cuda():
    """cuDNN deterministic and without benchmarking (as DomainBed), restored after."""
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


@dataclass
class _Run:
    """What the steps need: the run's settings, data, algorithm and folder."""

    config: DomainBedConfig
    folder: DomainBedRunFolder
    data: RunData
    algorithm: Any
    hparams: dict[str, Any]
    args: dict[str, Any]
    device: torch.device

    def epoch(self, step: int) -> float:
        """DomainBed's ``step / min_i (len(in_i) / batch_size)`` over every environment."""
        return step / min(n / int(self.hparams["batch_size"]) for n in self.data.in_sizes)


def _train(config: DomainBedConfig, folder: DomainBedRunFolder, progress: bool) -> None:
    hparams = config.resolved_hparams()
    device = resolve_device(config.device)
    data = RunData.build(config, hparams, device)
    seed_everything(config.seed)
    algorithm = build_algorithm(
        config.algorithm, data.input_shape, data.num_classes, len(data.train_envs), hparams
    ).to(device)
    args = config.args(str(folder.root))
    run = _Run(config, folder, data, algorithm, hparams, args, device)
    folder.write_args({"format": RUN_FORMAT, "config": config.to_dict(), "args": args,
                       "hparams": hparams, "environments": list(data.names)})  # fmt: skip
    start = 0
    if folder.state_path.is_file():
        tensors, meta = load_tensors(folder.state_path)
        start = load_state(algorithm, data.loaders, tensors, meta)
    keep_records_before(folder.results_path, start)
    try:
        _steps(run, start, progress)
    finally:
        data.close()
    _finish(run)


def _steps(run: _Run, start: int, progress: bool) -> None:
    """Updates ``start .. steps - 1``, evaluating at DomainBed's checkpoint steps."""
    config, device = run.config, run.device
    values: dict[str, list[float]] = defaultdict(list)
    test = [accuracy_key(i, "in") for i in config.test_envs]
    desc = f"{config.algorithm} on {config.dataset}"
    with tqdm(total=config.steps, initial=start, disable=not progress, unit="step",
              dynamic_ncols=True, desc=desc) as bar:  # fmt: skip
        for step in range(start, config.steps):
            began = time.time()
            minibatches = [
                (x.to(device, non_blocking=True), y.to(device, non_blocking=True))
                for x, y in (next(run.data.loaders[i]) for i in run.data.train_envs)
            ]
            logged = run.algorithm.update(minibatches, step)
            values["step_time"].append(time.time() - began)
            for key, value in logged.items():
                values[key].append(value)
            bar.update(1)
            if step % config.checkpoint_freq == 0 or step == config.steps - 1:
                record = _checkpoint(run, step, values)
                shown = {k.split("_")[0]: f"{record[k]:.3f}" for k in test}
                bar.set_postfix(loss=f"{record.get('loss', float('nan')):.4g}", **shown)
                values = defaultdict(list)


def _checkpoint(run: _Run, step: int, values: Mapping[str, list[float]]) -> dict[str, Any]:
    """Evaluate, save the weights, append the record, save the state (in that order: a
    run killed in between resumes from the previous state and rewrites the same files)."""
    accuracies = evaluate(run.algorithm, run.data.evals)
    device = run.device
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    record = make_record(step, run.epoch(step), values, accuracies, mem, run.hparams, run.args)
    if run.config.step_checkpoints:
        meta = checkpoint_metadata(
            run.config, run.args, run.hparams, run.data.domains(), step, accuracies
        )
        save_checkpoint(run.folder.checkpoint_path(step), run.algorithm.network, meta)
    append_record(run.folder.results_path, record)
    tensors, meta = state_tensors(run.algorithm, run.data.loaders, step + 1, run.config.to_dict())
    meta["accuracies"] = accuracies
    save_tensors(run.folder.state_path, tensors, meta)
    return record


def _finish(run: _Run) -> None:
    """The final weights (ours, and DomainBed's ``model.pkl`` if asked), then ``done``."""
    records = run.folder.read_records()
    last = records[-1] if records else {"step": run.config.steps - 1}
    accuracies = {k: v for k, v in last.items() if k.endswith("_acc")}
    meta = checkpoint_metadata(
        run.config, run.args, run.hparams, run.data.domains(), int(last["step"]), accuracies
    )
    save_checkpoint(run.folder.model_path, run.algorithm.network, meta)
    if run.config.save_domainbed_pkl:
        save_domainbed_pkl(
            run.folder.domainbed_model_path, run.algorithm, args=run.args,
            input_shape=run.data.input_shape, num_classes=run.data.num_classes,
            num_domains=len(run.data.train_envs), hparams=run.hparams,
        )  # fmt: skip
    (run.folder.root / DONE_FILE).write_text("done")

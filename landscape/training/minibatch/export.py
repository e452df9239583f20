"""The weights of a DomainBed-protocol run, saved as landscape checkpoints and as DomainBed's
``model.pkl``.

A landscape checkpoint (:func:`landscape.checkpoint.save_checkpoint`) holds the prediction
network ``classifier(featurizer(x))`` and metadata from which ``landscape score`` /
``curvature`` / ``surface`` rebuild the network (``model_spec``) and the run's
environments (``data``: ``{"name": "domainbed", ...}``, :func:`checkpoint_metadata`).

DomainBed's ``model.pkl`` (``scripts/train.py``) is ``torch.save`` of ``{"args",
"model_input_shape", "model_num_classes", "model_num_domains", "model_hparams",
"model_dict"}``, ``model_dict`` the algorithm's state dict, in which DomainBed's ERM-like
algorithms hold every network tensor twice, ``featurizer.*`` / ``classifier.*`` and
``network.0.*`` / ``network.1.*``, plus the buffer ``update_count`` (not ERM); Fishr's moving
averages are not in it. :func:`domainbed_model_dict` renames ours that way; the file reads
back with ``weights_only=True`` (:mod:`landscape.models.domainbed_checkpoint`).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from landscape.io import atomic_write
from landscape.models.domainbed import plain

#: Our network prefixes and DomainBed's two names of each.
_RENAMES = {
    "network.featurizer.": ("featurizer.", "network.0."),
    "network.classifier.": ("classifier.", "network.1."),
}
#: Buffers of ours DomainBed does not save (Fishr's moving averages).
_NOT_SAVED = ("ema_variance",)


def domainbed_model_dict(algorithm) -> dict[str, Tensor]:
    """The algorithm's state dict under DomainBed's names, on the CPU."""
    out: dict[str, Tensor] = {}
    state = algorithm.state_dict()
    for prefix, names in _RENAMES.items():
        for key, value in state.items():
            if key.startswith(prefix):
                for name in names:
                    out[name + key[len(prefix) :]] = value.detach().cpu().clone()
    for key, value in state.items():
        if key.startswith("network.") or key in _NOT_SAVED:
            continue
        if key == "update_count" and getattr(algorithm, "key", None) == "erm":
            continue  # DomainBed's ERM has no update_count
        out[key] = value.detach().cpu().clone()
    return out


def save_domainbed_pkl(
    path: str | os.PathLike,
    algorithm,
    *,
    args: Mapping[str, Any],
    input_shape: Sequence[int],
    num_classes: int,
    num_domains: int,
    hparams: Mapping[str, Any],
) -> None:
    """Write DomainBed's ``model.pkl`` (atomically); it holds only tensors and plain values."""
    saved = {
        "args": plain(dict(args)),
        "model_input_shape": tuple(int(s) for s in input_shape),
        "model_num_classes": int(num_classes),
        "model_num_domains": int(num_domains),
        "model_hparams": plain(dict(hparams)),
        "model_dict": domainbed_model_dict(algorithm),
    }
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def checkpoint_metadata(
    config,
    args: Mapping[str, Any],
    hparams: Mapping[str, Any],
    domains: Mapping[str, Sequence[str]],
    step: int,
    accuracies: Mapping[str, float],
) -> dict[str, Any]:
    """Metadata of a landscape checkpoint of the run at record ``step``.

    Keys: ``protocol`` (``"domainbed"``), DomainBed's run keys (``algorithm``, ``dataset``,
    ``test_envs``, ``holdout_fraction``, ``uda_holdout_fraction``, ``trial_seed``,
    ``seed``, ``hparams_seed``, ``data_dir``, ``hparams``, ``args``), ``train_domains`` /
    ``test_domains`` (environment names), ``data`` (the data spec:
    :func:`landscape.data.domainbed.domainbed_domains_from_metadata` rebuilds the
    environments from it, ``first`` = the run's ``subsample``), ``loss`` (``"ce"``),
    ``step`` (DomainBed's record step), ``updates`` (``step + 1``) and ``accuracies``.
    """
    run = {
        "dataset": config.dataset,
        "test_envs": list(config.test_envs),
        "holdout_fraction": config.holdout_fraction,
        "uda_holdout_fraction": 0.0,
        "trial_seed": config.trial_seed,
        "seed": config.seed,
        "data_dir": config.data_dir,
    }
    return {
        "protocol": "domainbed",
        "algorithm": config.algorithm,
        **run,
        "hparams_seed": config.hparams_seed,
        "hparams": plain(dict(hparams)),
        "args": plain(dict(args)),
        "train_domains": list(domains["train"]),
        "test_domains": list(domains["test"]),
        "data": {"name": "domainbed", **run, "first": config.subsample},
        "loss": "ce",
        "step": int(step),
        "updates": int(step) + 1,
        "accuracies": {k: float(v) for k, v in accuracies.items()},
    }

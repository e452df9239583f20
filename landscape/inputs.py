"""What to analyse: the model, the domains and the loss, from a weights file and options.

:func:`load_for_analysis` is where every checkpoint analysis (``landscape score``,
``curvature``, ``surface``, and their Python equivalents) starts. The weights file is one of
the three formats :func:`landscape.load_checkpoint` reads:

* a **landscape checkpoint** (``.safetensors`` written by ``landscape train``): the model,
  the domains (its data spec) and the loss come from its own metadata;
* a **plain state dict** (``.safetensors``, or ``.pt`` / ``.pth`` / ``.bin`` read with
  ``weights_only=True``): the model must be given (``model=``, ``--model SPEC``), and so
  must the domains (``data=``, ``--data SPEC``); the loss is ``loss=`` (``--loss``), or
  ``"ce"`` when every target is an integer class index ``[N]``;
* a **DomainBed** ``model.pkl``: the network DomainBed's algorithm held, its environments
  rebuilt by :mod:`landscape.data.domainbed` from ``data_dir`` (DomainBed's in / out split
  of each, ``split=``), the loss cross-entropy. A landscape checkpoint written by
  ``landscape train --dataset NAME`` (data spec ``{"name": "domainbed", ...}``) is read the
  same way once loaded (its ``first`` samples of each split by default: the run's
  ``--subsample``).

``model=`` / ``data=`` also take a SPEC string (``"path/file.py:callable"`` or
``"package.module:callable"``, :mod:`landscape.specs`) or a callable without arguments.

Domains are then chosen (``domains=``; default the checkpoint's training domains, or every
domain of a user's mapping), cut to their first ``subsample`` samples, and split into
batches of ``batch_size`` samples: every analysis accumulates over batches, so the results
do not depend on the batch size and memory is bounded by one batch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.utils.data import DataLoader

__all__ = ["LOSSES", "SPLITS", "AnalysisInputs", "load_for_analysis", "loss_key"]

#: ``--loss`` values and the :func:`landscape.losses.build_loss` names they mean
LOSSES = {"cross_entropy": "ce", "ce": "ce", "bce": "bce", "mse": "mse"}
#: DomainBed's part of each environment: the training part, the held-out part, or both
SPLITS = ("in", "out", "all")


class AnalysisInputs(NamedTuple):
    """What an analysis takes; unpacks as ``model, metadata, domains, loss_func``.

    Attributes:
        model: the network on the chosen device, in eval mode.
        metadata: the checkpoint's metadata (``"format"`` says which of the three), with
            ``"loss"`` set to the loss used and ``"loss_inferred"`` when it was inferred.
        domains: ``{name: data}``, the domains chosen, in order.
        loss_func: the mean-reduced loss module.
    """

    model: nn.Module
    metadata: dict[str, Any]
    domains: dict[str, Any]
    loss_func: nn.Module


def loss_key(name: str) -> str:
    """The :func:`landscape.losses.build_loss` name of a ``--loss`` value.

    >>> loss_key("cross_entropy")
    'ce'
    """
    key = LOSSES.get(str(name).strip().lower().replace("-", "_"))
    if key is None:
        raise ValueError(f"unknown loss {name!r}; use cross_entropy, bce or mse")
    return key


def _resolve_model(model, what: str = "--model") -> nn.Module | None:
    """An ``nn.Module`` from a module, a callable without arguments, or a SPEC string."""
    if model is None or isinstance(model, nn.Module):
        return model
    if isinstance(model, str):
        from landscape.specs import load_model_spec

        return load_model_spec(model, what)
    if callable(model):
        built = model()
        if not isinstance(built, nn.Module):
            raise TypeError(
                f"the model factory returned a {type(built).__name__}, expected a torch.nn.Module"
            )
        return built
    raise TypeError(
        f"model must be an nn.Module, a callable returning one or a SPEC "
        f"'path/file.py:callable', got {type(model).__name__}"
    )


def _resolve_data(data) -> Mapping | None:
    """A ``{name: data}`` mapping from a mapping, a callable without arguments or a SPEC."""
    if data is None or isinstance(data, Mapping):
        return data
    if isinstance(data, str):
        from landscape.specs import load_data_spec

        return load_data_spec(data, "--data")
    if callable(data):
        built = data()
        if not isinstance(built, Mapping):
            raise TypeError(
                f"the data factory returned a {type(built).__name__}, expected a mapping "
                "{name: data}"
            )
        return built
    raise TypeError(
        f"data must be a mapping {{name: data}}, a callable returning one or a SPEC "
        f"'path/file.py:callable', got {type(data).__name__}"
    )


def is_domainbed_run(meta: Mapping) -> bool:
    """Whether ``meta`` describes a DomainBed run: a ``model.pkl``, or a landscape checkpoint
    of ``landscape train --dataset`` (its data spec is named ``"domainbed"``)."""
    data = meta.get("data")
    named = isinstance(data, Mapping) and data.get("name") == "domainbed"
    return meta.get("format") == "domainbed" or named


def _domainbed_domains(meta, *, names, default, data_dir, split, device, dtype, **loader):
    """The environments of a DomainBed checkpoint (``landscape.data.domainbed``) that will be
    analysed (``names``, else the defaults of :func:`_default_names`), and only those: the
    others are never read. Loaders deliver batches on ``device`` in ``dtype`` (the model's);
    ``loader``: ``batch_size`` and ``first`` (``--subsample``: only those samples are read,
    in batches of ``batch_size``, so memory stays bounded by one batch)."""
    from landscape.data.domainbed import dataset_info, domainbed_domains_from_metadata

    every = list(dataset_info(meta.get("dataset")).environments)
    if names is None:
        names = _default_names(meta, every, default)
    unknown = [n for n in names if n not in every]
    if unknown:  # the message of pick_domains
        raise ValueError(f"unknown domain {unknown[0]!r}; available: {', '.join(every)}")
    if loader.get("first") is None and isinstance(meta.get("data"), Mapping):
        loader["first"] = meta["data"].get("first")  # the samples the run had (--subsample)
    return domainbed_domains_from_metadata(
        meta, data_dir=data_dir, split=split or "in", environments=list(names), device=device,
        dtype=dtype or torch.float32, **loader,
    )  # fmt: skip


def _default_names(meta: Mapping, available: Sequence[str], default: str) -> list[str]:
    """The checkpoint's training domains (``default="all"``: then its test domains) that
    ``available`` holds; every available domain where the metadata names none of them."""
    train, test = meta.get("train_domains"), meta.get("test_domains")
    if train is None and "test_envs" in meta:  # DomainBed: environments by index
        held = {int(i) for i in meta["test_envs"]}
        train = [n for i, n in enumerate(available) if i not in held]
        test = [n for i, n in enumerate(available) if i in held]
    names = [n for n in (train or []) if n in available]
    if not names:
        return list(available)
    if default == "all":
        names += [n for n in (test or []) if n in available and n not in names]
    return names


def _infer_loss(domains: Mapping, source: Path) -> str:
    """``"ce"`` when the first batch's targets are integer class indices ``[N]``."""
    name, data = next(iter(domains.items()))
    _, y = next(iter(data))
    if not y.is_floating_point() and not y.is_complex() and y.dim() == 1:
        return "ce"
    raise ValueError(
        f"cannot tell the loss of {source.name}: the targets of domain {name!r} are "
        f"{str(y.dtype).replace('torch.', '')} {list(y.shape)}, not class indices; pass "
        "--loss cross_entropy, bce or mse (loss= in Python)"
    )


def _to_device(domains: Mapping, device: torch.device, dtype: torch.dtype | None) -> dict:
    """In-memory batches moved to ``device`` (floating tensors cast to ``dtype``);
    DataLoaders are left as they are (the analyses move each batch)."""

    def move(t):
        if dtype is not None and t.is_floating_point():
            return t.to(device=device, dtype=dtype)
        return t.to(device=device)

    out = {}
    for name, data in domains.items():
        if isinstance(data, DataLoader):
            out[name] = data
        else:
            out[name] = [(move(X), move(y)) for X, y in data]
    return out


def _first_samples(data, n: int) -> list:
    """The first ``n`` samples of one domain as one ``(X, y)`` batch (reads only as many
    batches as needed, so a DataLoader over a large data set is not read to its end)."""
    Xs, ys, count = [], [], 0
    for X, y in data:
        take = min(n - count, int(X.shape[0]))
        Xs.append(X[:take])
        ys.append(y[:take])
        count += take
        if count >= n:
            break
    return [(torch.cat(Xs), torch.cat(ys))]


def _rebatch(data, batch_size: int):
    """One domain split into consecutive batches of ``batch_size`` samples (the last one
    smaller); a DataLoader is rebuilt over the same data set, order and collation."""
    if isinstance(data, DataLoader):
        if type(data) is not DataLoader:
            raise ValueError(
                f"--batch-size cannot re-batch a {type(data).__name__} (a DataLoader "
                "subclass); set the batch size where the loader is built, or drop --batch-size"
            )
        return DataLoader(
            data.dataset,
            batch_size=batch_size,
            sampler=data.sampler,
            num_workers=data.num_workers,
            collate_fn=data.collate_fn,
            pin_memory=data.pin_memory,
        )
    from landscape.domains import concat

    X, y = concat(data)
    return list(zip(X.split(batch_size), y.split(batch_size), strict=True))


def _shape_domains(domains: Mapping, subsample: int | None, batch_size: int | None) -> dict:
    """``subsample`` then ``batch_size`` applied to every domain."""
    out = {}
    for name, data in domains.items():
        if subsample is not None:
            data = _first_samples(data, subsample)
        if batch_size is not None:
            data = _rebatch(data, batch_size)
        out[name] = data
    return out


def _check_options(subsample, batch_size, split, default) -> None:
    for option, value in (("subsample", subsample), ("batch_size", batch_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):  # fmt: skip
            flag = "--" + option.replace("_", "-")
            raise ValueError(f"{flag} must be a positive number of samples, got {value!r}")
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use in, out or all")
    if default not in ("train", "all"):
        raise ValueError(f"default must be 'train' or 'all', got {default!r}")


def _no_data_error(path: Path, meta: Mapping) -> ValueError:
    if meta.get("format") == "state_dict":
        what = "holds plain weights, which carry no domains"
    else:
        what = "has no data spec in its metadata (it was not saved by landscape train)"
    return ValueError(
        f"{path} {what}: give the domains, --data path/to/file.py:callable returning "
        "{name: data} (data= in Python)"
    )


def _all_domains(path, net, meta, user_data, *, data_dir, split, device, **run) -> dict:
    """The domains there are to analyse: the user's (``--data``), a DomainBed run's
    environments (its ``split`` of each; only those named or analysed by default), or
    those of a landscape checkpoint's data spec; batches on ``device`` in the model's
    floating dtype. ``run``: a DomainBed run's ``names``, ``default``, ``batch_size`` and
    ``first`` (see :func:`_domainbed_domains`)."""
    from landscape.data import build_domains
    from landscape.domains import check_domains

    domainbed = user_data is None and is_domainbed_run(meta)
    if split is not None and not domainbed:
        raise ValueError(
            f"--split {split} selects a part of DomainBed's environments; {path.name} is not "
            "a DomainBed checkpoint analysed on its own environments (drop --split)"
        )
    dtype = next((p.dtype for p in net.parameters() if p.is_floating_point()), None)
    if user_data is not None:
        return _to_device(check_domains(user_data, what="--data"), device, dtype)
    if domainbed:
        options = {"data_dir": data_dir, "split": split, "device": device, "dtype": dtype}
        return _domainbed_domains(meta, **options, **run)
    if "data" in meta:
        return build_domains(meta["data"], data_dir=data_dir, device=device, dtype=dtype)
    raise _no_data_error(path, meta)


def load_for_analysis(
    checkpoint: str | os.PathLike,
    *,
    model: nn.Module | Callable[[], nn.Module] | str | None = None,
    data: Mapping | Callable[[], Mapping] | str | None = None,
    loss: str | None = None,
    device: str | torch.device = "auto",
    data_dir: str | os.PathLike | None = None,
    domains: Sequence[str] | None = None,
    default: str = "train",
    subsample: int | None = None,
    batch_size: int | None = None,
    split: str | None = None,
) -> AnalysisInputs:
    """Load a weights file and gather the domains and the loss to analyse it on.

    Args:
        checkpoint: a landscape checkpoint, a plain state dict (``.safetensors``, ``.pt``,
            ``.pth``, ``.bin``) or a DomainBed ``model.pkl`` (see the module docstring).
        model: the network a plain state dict belongs to: an ``nn.Module``, a callable
            without arguments returning one, or a SPEC ``"path/file.py:callable"``.
        data: the domains ``{name: data}`` (a mapping, a callable returning one, or a
            SPEC); default: rebuilt from the checkpoint (its data spec, or DomainBed's
            environments).
        loss: ``"cross_entropy"`` (or ``"ce"``), ``"bce"`` or ``"mse"``; default: the
            checkpoint's, else ``"ce"`` when the targets are integer class indices ``[N]``.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        data_dir: data folder: the MNIST cache, or DomainBed's data root.
        domains: domain names; ``None`` takes the checkpoint's training domains
            (``default="train"``) or its training then test domains (``default="all"``),
            or every domain of ``data`` when the checkpoint names none of them.
        subsample: keep the first ``n`` samples of each domain.
        batch_size: split each domain into consecutive batches of this many samples;
            ``None`` keeps the batches as built (one batch per domain after ``subsample``;
            a DomainBed run's loaders: 1024 digits or 64 images per batch).
        split: DomainBed checkpoints only: ``"in"`` (default; the part trained on),
            ``"out"`` (the held-out part) or ``"all"``.

    Returns:
        :class:`AnalysisInputs` ``(model, metadata, domains, loss_func)``; the model is in
        eval mode on ``device``.

    Raises:
        FileNotFoundError: no such weights file (or SPEC file).
        ValueError: plain weights without ``model`` or without ``data``, no data spec, an
            unknown loss / split / domain, ``subsample`` or ``batch_size`` < 1, a bad SPEC.
        TypeError: a SPEC or factory returned the wrong type.
    """
    from landscape.device import resolve_device
    from landscape.domains import pick_domains
    from landscape.losses import build_loss

    _check_options(subsample, batch_size, split, default)
    key = None if loss is None else loss_key(loss)
    dev = resolve_device(device)
    from landscape.checkpoint import load_checkpoint

    path = Path(checkpoint)  # its format decides what must come with it: load_checkpoint
    # asks plain weights for their model, _all_domains for their data (one line each)
    net, meta = load_checkpoint(path, model=_resolve_model(model), device=dev)
    meta = dict(meta)
    user_data = _resolve_data(data)
    domainbed = user_data is None and is_domainbed_run(meta)
    options = {"data_dir": data_dir, "split": split, "device": dev, "names": domains}
    options.update(default=default, batch_size=batch_size, first=subsample)
    all_domains = _all_domains(path, net, meta, user_data, **options)
    if domainbed:  # the environments named (or the defaults), already cut and batched
        chosen = all_domains
    else:
        names = domains if domains is not None else _default_names(meta, all_domains, default)
        chosen = _shape_domains(pick_domains(all_domains, names), subsample, batch_size)
    if key is None:
        key = meta.get("loss")
    if key is None and user_data is not None:
        key = _infer_loss(chosen, path)
        meta["loss_inferred"] = True
    meta["loss"] = key or "bce"  # landscape checkpoints older than the loss record: bce
    return AnalysisInputs(net.eval(), meta, chosen, build_loss(meta["loss"]))

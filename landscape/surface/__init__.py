"""Per-domain 2D loss-surface slices on shared, seeded directions (Li et al. 2018).

For directions :math:`\\delta, \\eta` (a :class:`landscape.surface.directions.Directions`), an origin
:math:`\\theta_0` (the model's parameters unless the directions fix one) and a grid of
coordinates :math:`(\\alpha_i, \\beta_j)`, :func:`loss_surface` evaluates for every domain
``e``

.. math::

    L_e[i, j] = R_e(\\theta_0 + \\alpha_i \\delta + \\beta_j \\eta), \\qquad
    R_e(\\theta) = \\frac{1}{N_e} \\sum_{n=1}^{N_e} \\ell(f_\\theta(x_n), y_n),

and the accuracy likewise, on the **same** plane and grid for all domains, plus the
differences :math:`L_B - L_A` for every ordered pair of domains and the deviations
:math:`L_e - \\frac{1}{E}\\sum_{e'} L_{e'}` from the mean over domains.

Cost. A grid point costs one forward pass over the chosen data and nothing more: parameters
are never copied into the model; each point calls :func:`torch.func.functional_call` with
the displaced parameters (so the user's model is never modified). When the first layer
that owns parameters is an ``nn.Linear`` fed directly by the data (e.g. ``Flatten ->
Linear``), its output is linear in its weights,

.. math::

    (W_0 + \\alpha D_1 + \\beta D_2)\\,x = W_0 x + \\alpha (D_1 x) + \\beta (D_2 x),

so :math:`W_0 x, D_1 x, D_2 x` are computed once per domain and each grid point skips the
first layer's matrix product (on the Colored MNIST MLP, the 392 -> 390 layer holds half the
flops). With ``points_per_call > 1`` several grid points go through one call
(:func:`torch.func.vmap` over stacked parameter sets), which pays on a GPU.

Batch norm and dropout. Surfaces are evaluated in **eval mode with the model's own running
statistics** (those of :math:`\\theta^*`) at every grid point: the model must already be in
eval mode (a module whose behaviour depends on the mode, batch norm or dropout, found in
training mode raises a ``ValueError``; nothing silently calls ``model.eval()``). This is
what the reference loss-landscape code does (it calls ``net.eval()``). With
``batch_norm="recompute"``, the statistics of every batch-norm layer are instead recomputed
at each grid point on each domain's (subsampled) data, cumulatively over its batches, before
the evaluation pass: this costs a second forward pass per point.

Resuming. With ``checkpoint_dir``, every row of the grid (one :math:`\\alpha_i`, all
:math:`\\beta_j`, all domains) is written as it finishes; a call with the same settings
skips the rows already there, and gives the same result as an uninterrupted run. Other
settings in the same folder raise a ``ValueError``.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import zlib
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from tqdm.auto import tqdm

from landscape.surface.directions import (  # re-exported: landscape.random_directions lives here too
    Directions,
    eigen_directions,
    inconsistency_directions,
    plane_directions,
    random_directions,
    trajectory_directions,
)
from landscape.domains import check_domains, concat
from landscape.io import SavedResult, load_arrays, read_json, save_arrays, write_json

__all__ = [
    "SurfaceResult",
    "loss_surface",
    "make_grid",
    "first_linear_layer",
    "Directions",
    "random_directions",
    "eigen_directions",
    "inconsistency_directions",
    "plane_directions",
    "trajectory_directions",
]

DEFAULT_GRID = (-1.0, 1.0, 21)

_MODE_DEPENDENT = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.modules.dropout._DropoutNd,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)


@dataclass
class SurfaceResult(SavedResult):
    """Per-domain losses (and accuracies) on a 2D grid of one plane.

    Arrays are indexed ``[i, j]`` for the point :math:`(\\alpha_i, \\beta_j)`.

    Attributes:
        alphas: ``[A]`` coordinates along the first direction.
        betas: ``[B]`` coordinates along the second direction.
        losses: ``{domain: [A, B]}`` mean loss.
        accuracies: ``{domain: [A, B]}`` accuracy (empty for regression losses).
        differences: ``{"B - A": [A, B]}`` loss of B minus loss of A, every ordered pair.
        deviations: ``{domain: [A, B]}`` loss minus the mean loss over domains.
        pairs: the ordered pairs ``[A, B]`` behind the keys of ``differences``.
        domains: domain names in order.
        num_samples: ``{domain: samples evaluated}`` (after subsampling).
        directions: the directions' description (kind, seed, normalisation, parameter
            names, shapes, norms, fingerprint, points / trajectory coordinates, ...).
        settings: loss, subsampling and its seeds, batch-norm handling, evaluation path,
            points per call, device, dtype.
    """

    alphas: Any
    betas: Any
    losses: dict[str, Any]
    accuracies: dict[str, Any] = field(default_factory=dict)
    differences: dict[str, Any] = field(default_factory=dict)
    deviations: dict[str, Any] = field(default_factory=dict)
    pairs: list = field(default_factory=list)
    domains: list = field(default_factory=list)
    num_samples: dict[str, int] = field(default_factory=dict)
    directions: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.alphas = np.asarray(self.alphas, dtype=np.float64)
        self.betas = np.asarray(self.betas, dtype=np.float64)
        self.pairs = [list(p) for p in self.pairs]

    def difference(self, a: str, b: str) -> np.ndarray:
        """``losses[b] - losses[a]`` ``[A, B]``."""
        for name in (a, b):
            if name not in self.losses:
                raise ValueError(f"unknown domain {name!r}; available: {', '.join(self.losses)}")
        return self.losses[b] - self.losses[a]


# ----------------------------------------------------------------------------------- grid


def _axis(spec, what: str) -> np.ndarray:
    """One axis from a ``(min, max, num)`` tuple or an array of coordinates."""
    if isinstance(spec, tuple) and len(spec) == 3 and all(np.isscalar(v) for v in spec):
        lo, hi, num = (float(v) for v in spec)
        if not num.is_integer():
            raise ValueError(f"{what}: the number of points must be an integer, got {spec[2]!r}")
        if num < 1:
            raise ValueError(f"{what} has {int(num)} points; give at least one point per axis")
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"{what}: bounds must be finite, got ({lo}, {hi})")
        if num > 1 and lo >= hi:
            raise ValueError(f"{what}: min {lo:g} must be below max {hi:g}")
        return np.linspace(lo, hi, int(num))
    if isinstance(spec, Tensor):
        spec = spec.detach().cpu().numpy()
    try:
        arr = np.asarray(spec, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: cannot read {spec!r} as coordinates") from None
    if arr.ndim != 1:
        raise ValueError(f"{what} must be a 1-D array of coordinates, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{what} has 0 points; give at least one coordinate per axis")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} holds NaN or infinite coordinates")
    return arr


def make_grid(grid=None, directions: Directions | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates ``(alphas [A], betas [B])`` from a grid specification.

    Args:
        grid: ``None`` (default: covers the directions' points / trajectory with a margin
            when they have some, else :math:`[-1, 1]` with 21 points per axis); a spec
            ``(min, max, num)`` for both axes; two specs ``((min, max, num), (min, max,
            num))`` (tuples); or two arrays or lists ``(alphas, betas)``.
        directions: used for the default grid.

    Raises:
        ValueError: an axis with 0 points, non-finite values, ``min >= max``.
    """
    if grid is None:
        spec = _default_spec(directions)
        return _axis(spec[0], "alpha grid"), _axis(spec[1], "beta grid")
    if isinstance(grid, Mapping):
        raise TypeError("grid must be (min, max, num), two such specs, or (alphas, betas)")
    if isinstance(grid, tuple | list) and len(grid) == 3 and all(np.isscalar(v) for v in grid):
        spec = tuple(grid)
        return _axis(spec, "alpha grid"), _axis(spec, "beta grid")
    if isinstance(grid, tuple | list) and len(grid) == 2:
        return _axis(grid[0], "alpha grid"), _axis(grid[1], "beta grid")
    raise ValueError(
        f"cannot read grid {grid!r}; use (min, max, num), ((min, max, num), (min, max, num)) "
        "or (alphas, betas)"
    )


def _default_spec(directions: Directions | None):
    pts = []
    if directions is not None:
        info = directions.info
        if isinstance(info.get("points"), Mapping):
            pts += [list(map(float, p)) for p in info["points"].values()]
        if info.get("trajectory") is not None:
            pts += np.asarray(info["trajectory"], dtype=np.float64).tolist()
    if not pts:
        return DEFAULT_GRID, DEFAULT_GRID
    P = np.asarray(pts)
    spec = []
    for k in range(2):
        lo, hi = float(P[:, k].min()), float(P[:, k].max())
        span = max(hi - lo, 1e-3 * max(abs(lo), abs(hi), 1.0))
        spec.append((lo - 0.25 * span, hi + 0.25 * span, 21))
    return tuple(spec)


# ----------------------------------------------------------------------------- helpers


def _check_mode(model: nn.Module) -> None:
    for name, module in model.named_modules():
        if module.training and isinstance(module, _MODE_DEPENDENT):
            raise ValueError(
                f"module {name or type(module).__name__!r} ({type(module).__name__}) is in "
                "training mode; loss surfaces are evaluated in eval mode: call model.eval() "
                "first (batch norm then uses the model's running statistics; see "
                "batch_norm='recompute')"
            )


def _reduction(loss_func) -> str:
    red = getattr(loss_func, "reduction", "mean")
    if red not in ("mean", "sum"):
        raise ValueError(f"loss reduction {red!r} is not supported; use reduction='mean' or 'sum'")
    return red


def _wants_accuracy(loss_func, accuracy: bool | None) -> bool:
    if accuracy is not None:
        return bool(accuracy)
    return isinstance(loss_func, nn.BCEWithLogitsLoss | nn.CrossEntropyLoss | nn.NLLLoss)


def _domain_seed(seed: int, name: str) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (2**63)


def _prepare_data(domains, subsample, seed, batch_size, device, dtype):
    """``{name: [(X, y), ...]}`` on ``device`` (floating inputs cast to ``dtype``)."""
    checked = check_domains(domains, what="loss_surface")
    out, seeds = {}, {}
    for name, data in checked.items():
        batches = [(X, y) for X, y in data]
        if subsample is not None or batch_size is not None:
            X, y = concat(batches)
            if subsample is not None and subsample < X.shape[0]:
                s = _domain_seed(seed, name)
                seeds[name] = s
                g = torch.Generator().manual_seed(s)
                idx = torch.randperm(X.shape[0], generator=g)[:subsample].sort().values
                X, y = X[idx.to(X.device)], y[idx.to(y.device)]
            size = batch_size or X.shape[0]
            batches = [(X[i : i + size], y[i : i + size]) for i in range(0, X.shape[0], size)]

        def move(t):
            t = t.to(device)
            return t.to(dtype) if t.is_floating_point() else t

        out[name] = [(move(X), move(y)) for X, y in batches]
    return out, seeds


def _hash_tensors(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().to("cpu").contiguous()
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:16]


def _num_correct(logits: Tensor, y: Tensor) -> Tensor:
    """Number of correct predictions (sign of a single logit, argmax otherwise), float64."""
    if logits.shape[-1] == 1:
        hits = (logits > 0).to(y.dtype) == y
    else:
        hits = logits.argmax(dim=-1) == y
    return hits.sum(dtype=torch.float64)


class _Stop(Exception):
    pass


def first_linear_layer(model: nn.Module, X: Tensor) -> str | None:
    """The name of the first parameterised module if it is an ``nn.Linear`` fed by the data.

    The first-layer shortcut of :func:`loss_surface` is exact when the input of that layer
    does not depend on any parameter. Checked here: (1) the first module owning parameters
    to run is an ``nn.Linear`` (exactly that class, not a subclass); (2) none of its
    enclosing modules owns parameters of its own; (3) its weight is not shared; (4) its
    input is unchanged when every other parameter is perturbed. Returns ``None`` otherwise.

    Args:
        model: the network.
        X: a small input batch ``[n, *]``.
    """
    owners = {
        name: m
        for name, m in model.named_modules()
        if any(True for _ in m.parameters(recurse=False))
    }
    if not owners:
        return None
    first: list[str] = []

    def make_hook(name):
        def hook(module, args):
            first.append(name)
            raise _Stop

        return hook

    handles = [m.register_forward_pre_hook(make_hook(n)) for n, m in owners.items()]
    try:
        with torch.no_grad():
            model(X)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    if not first:
        return None
    name = first[0]
    module = owners[name]
    if type(module) is not nn.Linear:
        return None
    ancestors = [n for n in owners if n != name and (n == "" or name.startswith(n + "."))]
    if ancestors:
        return None
    weight = module.weight
    if sum(1 for _, p in model.named_parameters(remove_duplicate=False) if p is weight) != 1:
        return None
    # the input must not move with the other parameters
    g = torch.Generator().manual_seed(12345)
    perturbed = {
        n: p.detach() + torch.randn(p.shape, generator=g, dtype=torch.float64).to(p)
        for n, p in model.named_parameters()
        if not n.startswith(name + ".")
    }
    try:
        a = _capture_input(model, module, {}, X)
        b = _capture_input(model, module, perturbed, X)
    except Exception:  # noqa: BLE001 - any failure means: do not use the shortcut
        return None
    if a is None or b is None or not torch.equal(a, b):
        return None
    return name


def _capture_input(model, module, params, X) -> Tensor | None:
    got: list[Tensor] = []

    def hook(mod, args):
        got.append(args[0].detach())
        raise _Stop

    handle = module.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            functional_call(model, params, (X,))
    except _Stop:
        pass
    finally:
        handle.remove()
    return got[0] if got else None


class _FirstLayer:
    """Hooks that replace the first linear layer's product by precomputed pieces.

    While active, the layer receives an input with 0 features and a weight of shape
    ``[out, 0]`` (so ``F.linear`` only broadcasts the displaced bias) and a forward hook
    adds :math:`W_0 x + \\alpha D_1 x + \\beta D_2 x` from the cache of the current batch.
    """

    def __init__(self, module: nn.Linear):
        self.module = module
        self.pieces: list[tuple[Tensor, Tensor | None, Tensor | None]] = []
        self.batch = 0
        self.a: Any = 0.0
        self.b: Any = 0.0
        self.empty_weight = module.weight.new_zeros((module.out_features, 0)).detach()

    @contextmanager
    def active(self):
        def pre(mod, args):
            return (args[0][..., :0],) + tuple(args[1:])

        def post(mod, args, output):
            z0, z1, z2 = self.pieces[self.batch]
            if isinstance(self.a, float):  # one point: fused in-place adds (memory-bound)
                out = output.add_(z0)
                if z1 is not None:
                    out = out.add_(z1, alpha=self.a).add_(z2, alpha=self.b)
                return out
            out = output + z0  # vmap: a, b are batched scalars
            if z1 is not None:
                out = out + self.a * z1 + self.b * z2
            return out

        h1 = self.module.register_forward_pre_hook(pre)
        h2 = self.module.register_forward_hook(post)
        try:
            yield
        finally:
            h1.remove()
            h2.remove()


# ------------------------------------------------------------------------------- main


def loss_surface(
    model: nn.Module,
    loss_func: nn.Module,
    domains,
    directions: Directions,
    grid=None,
    *,
    subsample: int | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    accuracy: bool | None = None,
    batch_norm: str = "running",
    points_per_call: int | str = "auto",
    first_layer: bool | str = "auto",
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
) -> SurfaceResult:
    """Loss and accuracy of every domain on a 2D grid of one plane.

    Args:
        model: the network, in eval mode (see the module docstring on batch norm); its
            parameters are the origin :math:`\\theta_0` unless ``directions.origin`` fixes
            one. It is not modified: parameters, ``requires_grad`` flags and modes are the
            same afterwards.
        loss_func: the loss (``reduction="mean"`` or ``"sum"``; the risk is the mean over
            all samples either way, batches weighted by their size).
        domains: ``{name: data}`` (see :mod:`landscape.domains`); all share the plane.
        directions: from :mod:`landscape.surface.directions` (names and shapes must match the
            model).
        grid: see :func:`make_grid`; default :math:`[-1, 1]^2`, 21 x 21 (or covering the
            directions' checkpoints / trajectory).
        subsample: evaluate each domain on this many samples drawn without replacement
            (seeded by ``seed`` and the domain's name, recorded); ``None`` = all.
        seed: seed of the subsampling.
        batch_size: split each domain's data in batches of this size (default: the
            domain's own batches, or one batch after subsampling).
        accuracy: compute accuracies (default: for classification losses only).
        batch_norm: ``"running"`` (default: eval mode with the model's running
            statistics) or ``"recompute"`` (each point's statistics on each domain's data).
        points_per_call: grid points per forward call (``vmap`` over stacked parameters
            when > 1); ``"auto"``: 1 on CPU, 16 on GPU.
        first_layer: use the first-linear-layer shortcut (``"auto"``: when
            :func:`first_linear_layer` allows it and the layer has at least 8 inputs).
        checkpoint_dir: folder where finished rows are saved, for resuming.
        progress: show a tqdm progress bar.

    Returns:
        A :class:`SurfaceResult`.

    Raises:
        ValueError: empty grid, unknown option, directions built for another model, model
            in train mode, NaN loss, a checkpoint folder with other settings.

    Example:
        >>> import torch
        >>> from landscape.surface.directions import random_directions
        >>> model = torch.nn.Linear(2, 1).double().eval()
        >>> X = torch.randn(8, 2, dtype=torch.float64)
        >>> dirs = random_directions(model, seed=0)
        >>> res = loss_surface(model, torch.nn.MSELoss(), {"a": (X, X[:, :1])}, dirs,
        ...                    grid=(-1, 1, 3), progress=False)
        >>> res.losses["a"].shape
        (3, 3)
    """
    if not isinstance(directions, Directions):
        raise TypeError(
            f"directions must be a landscape Directions (e.g. random_directions(model)), got "
            f"{type(directions).__name__}"
        )
    if batch_norm not in ("running", "recompute"):
        raise ValueError(f"unknown batch_norm {batch_norm!r}; use 'running' or 'recompute'")
    if subsample is not None and (not isinstance(subsample, int) or subsample < 1):
        raise ValueError(f"subsample must be a positive integer or None, got {subsample!r}")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    directions.check_model(model)
    _check_mode(model)
    reduction = _reduction(loss_func)
    alphas, betas = make_grid(grid, directions)
    named = dict(model.named_parameters())
    ref = named[directions.names[0]]
    device, dtype = ref.device, ref.dtype
    if points_per_call == "auto":
        points_per_call = 16 if device.type == "cuda" and batch_norm != "recompute" else 1
    if not isinstance(points_per_call, int) or points_per_call < 1:
        raise ValueError(
            f"points_per_call must be a positive integer or 'auto', got {points_per_call!r}"
        )
    if first_layer not in ("auto", True, False):
        raise ValueError(f"first_layer must be 'auto', True or False, got {first_layer!r}")
    bn_modules = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    recompute = batch_norm == "recompute" and bool(bn_modules)
    if recompute and points_per_call > 1:
        raise ValueError(
            "batch_norm='recompute' evaluates one grid point per call; use points_per_call=1"
        )

    data, sub_seeds = _prepare_data(domains, subsample, seed, batch_size, device, dtype)
    names = list(data)
    want_acc = _wants_accuracy(loss_func, accuracy)

    # origin and directions on the model's device / dtype; zero directions dropped
    dirs = directions.to(device=device)
    theta, d1, d2 = {}, {}, {}
    for n in dirs.names:
        p = named[n]
        origin = dirs.origin[n] if dirs.origin is not None else p.detach()
        theta[n] = origin.to(device=device, dtype=p.dtype).detach()
        u, v = dirs.d1[n].to(p.dtype), dirs.d2[n].to(p.dtype)
        moving = bool(u.any()) or bool(v.any())
        d1[n], d2[n] = (u, v) if moving else (None, None)
    fixed = {n: t for n, t in theta.items() if d1[n] is None and dirs.origin is not None}
    moving_names = [n for n in theta if d1[n] is not None]

    # first-layer shortcut
    first_name = None
    if first_layer is not False and not recompute:
        probe = data[names[0]][0][0][:2]
        first_name = first_linear_layer(model, probe)
        if first_name is not None and first_layer == "auto":
            if dict(model.named_modules())[first_name].in_features < 8:
                first_name = None
        if first_layer is True and first_name is None:
            raise ValueError(
                "first_layer=True, but the model's first parameterised layer is not an "
                "nn.Linear fed directly by the data; use first_layer='auto' or False"
            )
    shortcut = None
    if first_name is not None:
        module = dict(model.named_modules())[first_name]
        shortcut = _FirstLayer(module)
        wname = f"{first_name}.weight"
        w0 = theta[wname] if wname in theta else module.weight.detach()
        dw1 = d1.get(wname)
        dw2 = d2.get(wname)
        pieces = {}
        for name in names:
            pieces[name] = []
            for X, _ in data[name]:
                x = _capture_input(model, module, {}, X)
                z0 = x @ w0.T
                z1 = None if dw1 is None else x @ dw1.T
                z2 = None if dw2 is None else x @ dw2.T
                pieces[name].append((z0, z1, z2))
        # the weight is replaced by an empty one; its displacement lives in the pieces
        for dct in (fixed,):
            dct.pop(wname, None)
        if wname in moving_names:
            moving_names.remove(wname)

    path = "first_layer" if shortcut is not None else "plain"
    if points_per_call > 1:
        path += "+vmap"
    settings = {
        "loss": type(loss_func).__name__,
        "reduction": reduction,
        "subsample": subsample,
        "subsample_seeds": sub_seeds,
        "seed": seed,
        "batch_size": batch_size,
        "batch_norm": batch_norm if bn_modules else "none (no batch norm)",
        "path": path,
        "first_layer": first_name,
        "points_per_call": points_per_call,
        "accuracy": want_acc,
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
    }
    num_samples = {n: sum(int(X.shape[0]) for X, _ in data[n]) for n in names}

    # -------------------------------------------------------------- one domain, P points
    def params_at(a: Tensor, b: Tensor, stacked: bool) -> dict[str, Tensor]:
        out = dict(fixed)
        for n in moving_names:
            if stacked:
                shape = (-1,) + (1,) * theta[n].dim()
                out[n] = theta[n] + a.view(shape) * d1[n] + b.view(shape) * d2[n]
            else:
                out[n] = torch.add(theta[n], d1[n], alpha=a).add_(d2[n], alpha=b)
        return out

    def evaluate(name: str, params: dict[str, Tensor], a, b):
        batches = data[name]
        total = num_samples[name]
        loss = acc = 0.0
        if shortcut is not None:
            params = {**params, f"{first_name}.weight": shortcut.empty_weight}
            shortcut.a, shortcut.b = a, b
        for i, (X, y) in enumerate(batches):
            if shortcut is not None:
                shortcut.batch = i
                shortcut.pieces = pieces[name]
            out = functional_call(model, params, (X,))
            weight = X.shape[0] / total if reduction == "mean" else 1.0 / total
            loss = loss + loss_func(out, y) * weight
            if want_acc:
                acc = acc + _num_correct(out, y)
        return loss, (acc / total if want_acc else acc)

    def evaluate_recompute(name, params, a, b):
        buffers = _recompute_bn(model, bn_modules, params, data[name])
        return evaluate(name, {**params, **buffers}, a, b)

    run_one = evaluate_recompute if recompute else evaluate

    def row(i: int, bar) -> dict[str, np.ndarray]:
        out = {}
        a_all = torch.full((len(betas),), float(alphas[i]), dtype=dtype, device=device)
        b_all = torch.as_tensor(betas, dtype=dtype, device=device)
        for name in names:
            losses = np.empty(len(betas))
            accs = np.full(len(betas), np.nan)
            for start in range(0, len(betas), points_per_call):
                stop = min(start + points_per_call, len(betas))
                a, b = a_all[start:stop], b_all[start:stop]
                if points_per_call == 1:
                    fa, fb = float(alphas[i]), float(betas[start])
                    l, c = run_one(name, params_at(fa, fb, False), fa, fb)
                    l, c = l.reshape(1), torch.as_tensor(c).reshape(1)
                else:
                    stacked = params_at(a, b, True)

                    def f(p, aa, bb, name=name):
                        l_, c_ = run_one(name, p, aa, bb)
                        return l_, torch.as_tensor(c_, device=device)

                    l, c = vmap(f, in_dims=(0, 0, 0))(stacked, a, b)
                losses[start:stop] = l.double().cpu().numpy()
                if want_acc:
                    accs[start:stop] = c.double().cpu().numpy()
                bar.update(stop - start)
            bad = np.flatnonzero(np.isnan(losses))
            if bad.size:
                raise ValueError(
                    f"the loss of domain {name!r} is NaN at (alpha, beta) = "
                    f"({alphas[i]:g}, {betas[bad[0]]:g}); check the model and data or shrink "
                    "the grid"
                )
            out[f"loss/{name}"] = losses
            if want_acc:
                out[f"acc/{name}"] = accs
        return out

    # ------------------------------------------------------------------- resume support
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    rows: dict[int, dict[str, np.ndarray]] = {}
    if ckpt is not None:
        fingerprint = {
            "alphas": alphas.tolist(),
            "betas": betas.tolist(),
            "domains": names,
            "num_samples": num_samples,
            "data": {n: _hash_tensors([t for batch in data[n] for t in batch]) for n in names},
            "directions": directions.fingerprint(),
            "model": _hash_tensors(
                [t for _, t in sorted(model.state_dict().items()) if torch.is_tensor(t)]
            ),
            **{k: v for k, v in settings.items()},
        }
        fingerprint = _jsonable(fingerprint)
        settings_file = ckpt / "surface_settings.json"
        if settings_file.exists():
            stored = read_json(settings_file)
            if stored != fingerprint:
                key = next(
                    (k for k in fingerprint if stored.get(k) != fingerprint[k]),
                    next((k for k in stored if k not in fingerprint), "settings"),
                )
                raise ValueError(
                    f"{ckpt} holds a surface computed with other settings ({key} differs); "
                    "use another checkpoint_dir or delete it"
                )
        else:
            write_json(settings_file, fingerprint)
        for i in range(len(alphas)):
            f = ckpt / f"row_{i:05d}.npz"
            if f.exists():
                rows[i] = load_arrays(f)

    total = len(alphas) * len(betas) * len(names)
    state = _ModelState(model)
    try:
        with torch.no_grad(), shortcut.active() if shortcut is not None else _null():
            bar = tqdm(total=total, disable=not progress, desc="loss surface", unit="pt")
            bar.update(len(rows) * len(betas) * len(names))
            try:
                for i in range(len(alphas)):
                    if i in rows:
                        continue
                    rows[i] = row(i, bar)
                    if ckpt is not None:
                        save_arrays(ckpt / f"row_{i:05d}.npz", rows[i])
            finally:
                bar.close()
    finally:
        state.restore()

    losses = {n: np.stack([rows[i][f"loss/{n}"] for i in range(len(alphas))]) for n in names}
    accs = (
        {n: np.stack([rows[i][f"acc/{n}"] for i in range(len(alphas))]) for n in names}
        if want_acc
        else {}
    )
    pairs = [[a, b] for a, b in itertools.permutations(names, 2)]
    differences = {f"{b} - {a}": losses[b] - losses[a] for a, b in pairs}
    mean = np.mean([losses[n] for n in names], axis=0)
    deviations = {n: losses[n] - mean for n in names}
    return SurfaceResult(
        alphas=alphas,
        betas=betas,
        losses=losses,
        accuracies=accs,
        differences=differences,
        deviations=deviations,
        pairs=pairs,
        domains=names,
        num_samples=num_samples,
        directions=directions.describe(),
        settings=settings,
    )


@contextmanager
def _null():
    yield


def _jsonable(obj):
    import json

    return json.loads(json.dumps(obj))


class _ModelState:
    """Records modes (and batch-norm momenta) and restores them."""

    def __init__(self, model: nn.Module):
        self.modes = [(m, m.training) for m in model.modules()]
        self.momenta = [
            (m, m.momentum)
            for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
        ]

    def restore(self):
        for m, mode in self.modes:
            m.training = mode
        for m, momentum in self.momenta:
            m.momentum = momentum


def _recompute_bn(model, bn_modules, params, batches) -> dict[str, Tensor]:
    """Batch-norm statistics of the displaced model on one domain's batches.

    Every batch-norm layer is put in training mode with ``momentum=None`` (cumulative
    average) on fresh buffers passed through ``functional_call`` (the model's own buffers
    are never written); the modes are set back to eval afterwards.
    """
    names = {id(m): n for n, m in model.named_modules()}
    buffers: dict[str, Tensor] = {}
    for m in bn_modules:
        prefix = names[id(m)]
        if m.running_mean is None:
            continue
        buffers[f"{prefix}.running_mean"] = torch.zeros_like(m.running_mean)
        buffers[f"{prefix}.running_var"] = torch.ones_like(m.running_var)
        buffers[f"{prefix}.num_batches_tracked"] = torch.zeros_like(m.num_batches_tracked)
    saved = [(m, m.training, m.momentum) for m in bn_modules]
    try:
        for m in bn_modules:
            m.train()
            m.momentum = None
        for X, _ in batches:
            functional_call(model, {**params, **buffers}, (X,))
    finally:
        for m, mode, momentum in saved:
            m.training = mode
            m.momentum = momentum
    return buffers

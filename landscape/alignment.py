"""Hessian alignment over training: the Fishr paper's analysis of Colored MNIST runs.

For every saved checkpoint of a run folder (see :mod:`landscape.training`), for two domains A
and B (by default the training domains ``"+80%"`` and ``"+90%"``) and a parameter subset
(by default Fishr's head, ``"classifier"``), :func:`alignment_trajectory` measures

* :math:`\\|v_B - v_A\\|^2`, the distance between the domains' gradient variances (the
  quantity Fishr matches), and :math:`\\cos(v_A, v_B)`;
* :math:`\\|\\operatorname{diag} H_B - \\operatorname{diag} H_A\\|^2` between exact Hessian
  diagonals, and their cosine;
* per domain, :math:`\\cos(v_e, \\operatorname{diag} H_e)` (the premise Var ≈ Hessian).

The paper plots the two distances (the Hessian one ×100) against the step, mean over
restarts, with a dotted line at the anneal step. Everything is computed by
:func:`domain_alignment` (:func:`landscape.curvature.compare_domains` on one set of weights:
any ``nn.Module``, each domain a list of batches or an unshuffled DataLoader accumulated batch
by batch) on checkpoints rebuilt by :func:`landscape.load_checkpoint` and domains rebuilt
from their own metadata.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from landscape.io import SavedResult
from landscape.runs import RunFolder

#: the pairwise quantities of :func:`domain_alignment`, one ``[R, S]`` array each in a trajectory
KEYS = ("variance_distance", "diagonal_distance", "variance_cosine", "diagonal_cosine")


@dataclass
class AlignmentTrajectory(SavedResult):
    """Cross-domain alignment of a run's checkpoints, per algorithm, restart and step.

    Arrays are ``[R, S]`` per algorithm (restarts × steps), ``NaN`` where a checkpoint is
    missing.

    Attributes:
        steps: ``[S]`` checkpoint steps.
        pair: the two domains ``(A, B)``.
        params: the parameter selection (a prefix, a list, or ``None`` for all).
        variance_distance, diagonal_distance, variance_cosine, diagonal_cosine:
            ``{algorithm: [R, S]}``.
        within_cosine: ``{algorithm: [R, S, 2]}``, for A then B.
        anneal_step: the step where the penalty weight switched (for the dotted line).
        settings: how the diagonals were computed.
    """

    steps: np.ndarray
    pair: list
    params: object
    variance_distance: dict = field(default_factory=dict)
    diagonal_distance: dict = field(default_factory=dict)
    variance_cosine: dict = field(default_factory=dict)
    diagonal_cosine: dict = field(default_factory=dict)
    within_cosine: dict = field(default_factory=dict)
    anneal_step: int | None = None
    settings: dict = field(default_factory=dict)

    @property
    def algorithms(self) -> list[str]:
        return list(self.variance_distance)


def checkpoint_steps(run_dir: str | os.PathLike, algorithm: str, restart: int) -> list[int]:
    """The steps saved for ``(algorithm, restart)`` in a run folder, ascending."""
    return RunFolder(run_dir).checkpoint_steps(algorithm, restart)


def run_layout(run_dir: str | os.PathLike) -> dict[str, list[int]]:
    """``{algorithm: [restart, ...]}`` of the runs that have checkpoints in ``run_dir``."""
    return RunFolder(run_dir).layout()


def domain_alignment(
    model,
    loss_func,
    domains,
    pair: Sequence[str] | None = None,
    params="classifier",
    progress: bool = False,
) -> dict:
    """The alignment of two domains at one set of weights.

    Args:
        model: any ``nn.Module`` whose forward takes a tensor batch (eval mode).
        loss_func: the mean-reduced loss.
        domains: ``{name: data}`` (a list of batches or an unshuffled DataLoader).
        pair: the two domains ``(A, B)`` (default: the mapping's two domains).
        params: the parameter selection (default Fishr's head, ``"classifier"``).
        progress: progress bars.

    Returns:
        ``{key: float}`` for every key of :data:`KEYS` (of ``(A, B)``), ``"within_cosine"``
        ``[2]`` (:math:`\\cos(v_e, \\operatorname{diag} H_e)` for A then B) and
        ``"diagonal_method"``: the Hessian-diagonal method that ran (the default picks an exact
        one where a backend handles the model, else Hutchinson;
        :func:`landscape.curvature.hessian_diagonal`).
    """
    from landscape.curvature import compare_domains
    from landscape.domains import pick_domains

    pair = list(domains) if pair is None else list(pair)
    if len(pair) != 2:
        raise ValueError(f"the alignment compares two domains, got {len(pair)}: {pair}")
    cmp = compare_domains(
        model, loss_func, pick_domains(domains, pair), params, k=0, progress=progress
    )
    out: dict = {key: float(getattr(cmp, key)[0, 1]) for key in KEYS}
    out["within_cosine"] = np.asarray(cmp.within_cosine, dtype=np.float64)
    out["diagonal_method"] = cmp.settings["diagonal_method"]
    return out


def alignment_trajectory(
    run_dir: str | os.PathLike,
    algorithms: Sequence[str] | None = None,
    pair: Sequence[str] = ("+80%", "+90%"),
    params: str | Sequence[str] | None = "classifier",
    subsample: int | None = None,
    device: str = "cpu",
    data_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> AlignmentTrajectory:
    """Measure the alignment of two domains at every checkpoint of a run folder.

    Args:
        run_dir: a folder written by :func:`landscape.training.train`.
        algorithms: which algorithms (default: all in the folder).
        pair: the two domains compared.
        params: parameter selection (default Fishr's head).
        subsample: use the first ``n`` samples of each domain (``None``: all).
        device: where to compute.
        data_dir: MNIST cache folder.
        progress: tqdm bar over checkpoints.
    """
    from landscape.checkpoint import load_checkpoint
    from landscape.data import build_domains
    from landscape.domains import pick_domains, truncate
    from landscape.losses import build_loss

    folder = RunFolder(run_dir)
    layout = folder.layout()
    algorithms = list(layout) if algorithms is None else list(algorithms)
    for algo in algorithms:
        if algo not in layout:
            raise ValueError(f"no checkpoints of {algo!r} in {run_dir}; found {', '.join(layout)}")
    jobs = [(a, r, s) for a in algorithms for r in layout[a] for s in folder.checkpoint_steps(a, r)]
    steps = np.array(sorted({s for _, _, s in jobs}), dtype=np.int64)
    restarts = max(max(layout[a]) for a in algorithms) + 1
    shape = (restarts, len(steps))
    out = {key: {a: np.full(shape, np.nan) for a in algorithms} for key in KEYS}
    within = {a: np.full((*shape, 2), np.nan) for a in algorithms}
    anneal, methods = None, set()
    data_cache: dict[str, dict] = {}
    for algo, restart, step in tqdm(jobs, disable=not progress, desc="alignment", unit="ckpt"):
        path = folder.checkpoint_path(algo, restart, step)
        model, meta = load_checkpoint(path, device=device)
        anneal = meta.get("hyperparameters", {}).get("anneal_step", anneal)
        key = repr(meta["data"])
        if key not in data_cache:
            domains = build_domains(meta["data"], data_dir=data_dir, device=device)
            domains = truncate(pick_domains(domains, list(pair)), subsample)
            data_cache = {key: domains}  # keep one restart's data
        loss = build_loss(meta.get("loss", "bce"))
        got = domain_alignment(model, loss, data_cache[key], pair, params)
        j = int(np.searchsorted(steps, step))
        for name in KEYS:
            out[name][algo][restart, j] = got[name]
        within[algo][restart, j] = got["within_cosine"]
        methods.add(got["diagonal_method"])
    return AlignmentTrajectory(
        steps=steps,
        pair=list(pair),
        params=params if isinstance(params, str | None) else list(params),
        within_cosine=within,
        anneal_step=anneal,
        settings={
            "diagonal_method": ", ".join(sorted(methods)),
            "subsample": subsample,
            "run_dir": str(run_dir),
        },
        **out,
    )

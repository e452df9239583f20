"""Display names, in one table: algorithms (and their order), domains' result columns, metrics.

Every table, figure and notebook takes its labels from here, so an algorithm reads the same
everywhere.
"""

from __future__ import annotations

import math

#: Every algorithm, in the order tables and figures list them (the order of the paper's
#: Table 2, then the Fishr variants).
ALGORITHM_ORDER: tuple[str, ...] = (
    "erm",
    "irm",
    "vrex",
    "fishr",
    "fishr_notcentered",
    "fishr_offdiagonal",
    "fishr_all",
)

#: Display names of the algorithms.
ALGORITHM_NAMES: dict[str, str] = {
    "erm": "ERM",
    "irm": "IRM",
    "vrex": "V-REx",
    "fishr": "Fishr",
    "fishr_notcentered": "Fishr (not centered)",
    "fishr_offdiagonal": "Fishr (full covariance)",
    "fishr_all": "Fishr (all layers)",
}

#: Title of the results column of the mean accuracy over the training domains.
TRAIN_COLUMN = "Train acc."
#: Titles of the results columns of the Colored MNIST test domains (as in the paper).
TEST_COLUMN_TITLES: dict[str, str] = {"-90%": "Test acc.", "gray": "Grey test acc."}

#: Axis labels of the history metrics (``<metric>/<domain>`` columns of ``history.csv``).
METRIC_LABELS: dict[str, str] = {"acc": "accuracy (%)", "loss": "loss"}


#: Display names of domains whose key is not what a reader should see.
DOMAIN_NAMES: dict[str, str] = {"gray": "grey"}

#: Which parameters a result covers, as figures say it (the keys of the analysis folder).
PARAMETER_NAMES: dict[str, str] = {"head": "head (last layer)", "network": "whole network"}

#: The paper's notation, as matplotlib mathtext (figures) -- the one place it is spelled.
NOTATION: dict[str, str] = {
    "score": r"$\mathcal{I}^\varepsilon$",
    "epsilon": r"$\varepsilon$",
    "risk_gap": r"$\mathcal{R}_B - \mathcal{R}_A$",
    "curvature_term": r"$\varepsilon\,\lambda_{\max}(H_B, H_A)$",
    "empirical": r"$\mathcal{I}^\varepsilon$ on the true losses",
    "variance_distance": r"$\|v_B - v_A\|^2$",
    "hessian_distance": r"$\|\mathrm{diag}\,H_B - \mathrm{diag}\,H_A\|^2$",
    "variance_cosine": r"$1 - \cos(v_A, v_B)$",
    "hessian_cosine": r"$1 - \cos(\mathrm{diag}\,H_A, \mathrm{diag}\,H_B)$",
}


def ordered_algorithms(names) -> list[str]:
    """``names`` in :data:`ALGORITHM_ORDER` (unknown names after, in their given order)."""
    names = list(names)
    rank = {a: i for i, a in enumerate(ALGORITHM_ORDER)}
    return sorted(names, key=lambda a: (rank.get(a, len(rank)), names.index(a)))


def domain_name(name: str) -> str:
    """Display name of a domain (the key itself unless :data:`DOMAIN_NAMES` renames it)."""
    return DOMAIN_NAMES.get(name, name)


def parameter_name(kind: str) -> str:
    """How a figure names the parameters a result covers (``"head"``, ``"network"``)."""
    return PARAMETER_NAMES.get(kind, kind)


def algorithm_name(name: str) -> str:
    """Display name of an algorithm (the name itself when unknown)."""
    return ALGORITHM_NAMES.get(name, name)


def column_title(domain: str) -> str:
    """Results-column title of a test domain (``"<domain> acc."`` when not Colored MNIST)."""
    return TEST_COLUMN_TITLES.get(domain, f"{domain} acc.")


def metric_label(metric: str) -> str:
    """Axis label of a history metric."""
    return METRIC_LABELS.get(metric, metric)


def mean_spread(mean: float, std: float, n: int, digits: int = 1) -> str:
    """``"mean ± std"``, or just ``"mean"`` when there is no spread to show.

    A spread needs at least two values: with ``n < 2`` restarts (or a NaN std) the std is
    not a measurement, and printing ``± 0.0`` would claim one.

    Example:
        >>> mean_spread(71.04, 0.93, 3), mean_spread(71.04, 0.0, 1)
        ('71.0 ± 0.9', '71.0')
    """
    if n < 2 or not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


__all__ = [
    "ALGORITHM_NAMES",
    "ALGORITHM_ORDER",
    "DOMAIN_NAMES",
    "METRIC_LABELS",
    "NOTATION",
    "PARAMETER_NAMES",
    "TEST_COLUMN_TITLES",
    "TRAIN_COLUMN",
    "algorithm_name",
    "column_title",
    "domain_name",
    "mean_spread",
    "metric_label",
    "ordered_algorithms",
    "parameter_name",
]

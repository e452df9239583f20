r"""The inconsistency score :math:`I^\varepsilon` and its parts (docs/method.md section 3).

Parascandolo et al. (2021) define, for weights :math:`\theta^*` and :math:`\varepsilon > 0`,

.. math::

    I^\varepsilon(\theta^*) = \max_{(A, B)} \max_{\theta \in N_A}
        |R_B(\theta) - R_A(\theta^*)|,

with :math:`N_A` the largest path-connected region around :math:`\theta^*` where
:math:`|R_A(\theta) - R_A(\theta^*)| \le \varepsilon`. Fishr (Rame et al. 2022) uses its
second-order form, with :math:`\theta` the displacement from :math:`\theta^*` and
:math:`H_e` the curvature of domain :math:`e` at :math:`\theta^*`:

.. math::

    I^\varepsilon \approx \max_{(A, B)} \Big[ R_B - R_A
        + \max_{\frac12 \theta^\top H_A \theta \le \varepsilon} \tfrac12 \theta^\top H_B \theta
        \Big], \qquad
    \max_{\frac12 \theta^\top H_A \theta \le \varepsilon} \tfrac12 \theta^\top H_B \theta
        = \varepsilon \max(\lambda_{\max}(H_B, H_A), 0),

where :math:`\lambda_{\max}(H_B, H_A)` is the largest generalized eigenvalue of
:math:`H_B v = \lambda H_A v` (:math:`H_A` positive definite). With :math:`v^\top H_A v = 1`
the maximiser is :math:`\theta = \sqrt{2\varepsilon}\, v` (on the ellipsoid). The
:math:`\max(\cdot, 0)` matters only when :math:`H_B` is negative definite relative to
:math:`H_A`: then :math:`\theta = 0` is the maximiser. The pair :math:`(A, A)` gives exactly
:math:`\varepsilon`, so :math:`I^\varepsilon \ge \varepsilon`.

Any ``nn.Module`` whose forward takes a tensor batch is scored (convolutions, BatchNorm in
eval mode, GroupNorm, residual blocks): the curvature comes from
:mod:`landscape.curvature`'s operators (``torch.func`` products, a closed form for the
output layer where one applies), and every pass accumulates over a domain's batches, so a
DataLoader streams with one batch in memory.

The package, one concept per module:

* :mod:`~landscape.inconsistency.score`: :func:`inconsistency_score`, the orchestrator;
* :mod:`~landscape.inconsistency.protocol`: the pairwise protocol (``inspect`` / ``solve``)
  and :class:`GeneralizedEig`, implemented by :mod:`~landscape.inconsistency.dense`,
  :mod:`~landscape.inconsistency.matrix_free` and :mod:`~landscape.inconsistency.diagonal`;
* :mod:`~landscape.inconsistency.remedy`: :class:`Remedy` (none, damping, top-k), validated
  and applied once for every backend;
* :mod:`~landscape.inconsistency.definiteness`: :class:`DefinitenessReport`,
  :class:`NotPositiveDefiniteError`, :class:`NotConvergedError`;
* :mod:`~landscape.inconsistency.solvers`: Lanczos, LOBPCG and ARPACK on counting operators;
* :mod:`~landscape.inconsistency.risk` and :mod:`~landscape.inconsistency.checks`: the true
  losses at displaced weights, the line check and the constrained search;
  :mod:`~landscape.inconsistency.head`: the head's input cached once per domain, so that a
  head selection's displaced risks run the head alone;
* :mod:`~landscape.inconsistency.result` and :mod:`~landscape.inconsistency.report`:
  :class:`InconsistencyResult`, its table and summary;
* :mod:`~landscape.inconsistency.options`: names, thresholds, :class:`SolverOptions`,
  :class:`CheckOptions`, :func:`check_epsilon`.
"""

from landscape.inconsistency.checks import (
    LINE_GRID,
    LineCheck,
    SearchCheck,
    constrained_search,
    line_check,
    run_checks,
)
from landscape.inconsistency.definiteness import (
    DefinitenessReport,
    NotConvergedError,
    NotPositiveDefiniteError,
    report_from_spectrum,
)
from landscape.inconsistency.dense import DenseCurvature, generalized_eig_dense
from landscape.inconsistency.diagonal import DiagonalCurvature, generalized_eig_diagonal
from landscape.inconsistency.matrix_free import MatrixFreeCurvature
from landscape.inconsistency.options import (
    AUTO_DENSE_DIM,
    CURVATURES,
    DIAGONAL_SOURCES,
    METHODS,
    PD_RTOL,
    SOLVERS,
    CheckOptions,
    SolverOptions,
    check_epsilon,
)
from landscape.inconsistency.protocol import GeneralizedEig, PairwiseCurvature
from landscape.inconsistency.remedy import REMEDIES, Remedy
from landscape.inconsistency.result import InconsistencyResult
from landscape.inconsistency.risk import DisplacedRisk
from landscape.inconsistency.score import ScoreSettings, inconsistency_score
from landscape.inconsistency.solvers import CountingOperator, RitzPairs, lanczos_ritz

__all__ = [
    "AUTO_DENSE_DIM",
    "CURVATURES",
    "DIAGONAL_SOURCES",
    "LINE_GRID",
    "METHODS",
    "PD_RTOL",
    "REMEDIES",
    "SOLVERS",
    "CheckOptions",
    "CountingOperator",
    "DefinitenessReport",
    "DenseCurvature",
    "DiagonalCurvature",
    "DisplacedRisk",
    "GeneralizedEig",
    "InconsistencyResult",
    "LineCheck",
    "MatrixFreeCurvature",
    "NotConvergedError",
    "NotPositiveDefiniteError",
    "PairwiseCurvature",
    "Remedy",
    "RitzPairs",
    "ScoreSettings",
    "SearchCheck",
    "SolverOptions",
    "check_epsilon",
    "constrained_search",
    "generalized_eig_dense",
    "generalized_eig_diagonal",
    "inconsistency_score",
    "lanczos_ritz",
    "line_check",
    "report_from_spectrum",
    "run_checks",
]

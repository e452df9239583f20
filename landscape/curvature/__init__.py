"""Per-domain curvature: gradient variances, Hessian / GGN / Fisher diagonals, eigenpairs,
traces, spectral densities, and their comparison across domains.

Every function takes ``(model, loss_func, domains, params=...)``: ``domains`` is a mapping
``{name: data}`` (:func:`landscape.domains.check_domains`), ``params`` chooses parameters by
name (:func:`landscape.params.select_params`; ``"classifier"`` is Fishr's head). Results are
dataclasses (``.save(path)`` / ``.load(path)``, see :class:`landscape.io.SavedResult`) holding
one array per domain, in the layout of ``select_params`` (``param_names`` /
``param_shapes``), and every setting and seed used.

The quantities are those of the domain's risk :math:`R_e = \\frac1N\\sum_i \\ell_i` (mean loss
over its samples; see :mod:`landscape.curvature.reference` for the definitions), i.e. the chain
of the Fishr paper (Rame et al. 2022, section 3):
:math:`\\operatorname{Var}(g) \\approx` empirical Fisher :math:`\\approx` Fisher (= GGN for CE /
BCE) :math:`\\approx` Hessian.

Guard rails (before any curvature work, once per call: :mod:`landscape.curvature._setup`):
the model's mode and one deterministic forward pass are checked
(:func:`landscape.curvature.checks.check_eval_mode`,
:func:`~landscape.curvature.checks.check_deterministic`); the loss must be a supported
mean-reduced loss. A model extended by BackPACK is analysed through a plain copy, and BackPACK
is only ever applied to a private copy: the user's model (parameters, ``requires_grad`` flags,
mode, hooks) is never changed. Default methods work on any model: BackPACK where it has rules
for every module involved, exact ``torch.func`` / product fallbacks elsewhere.

Stochastic estimators (Hutchinson, Lanczos starts, SLQ probes, Monte-Carlo Fisher) draw from
``torch.Generator(seed)`` freshly seeded for **every domain**, so all domains see the same
probes and their differences are not drowned by probe noise.

Modules: :mod:`~landscape.curvature.results` (result dataclasses),
:mod:`~landscape.curvature.variance` (gradient variance),
:mod:`~landscape.curvature.diagonals` (curvature diagonals),
:mod:`~landscape.curvature.lanczos` (the Lanczos iteration),
:mod:`~landscape.curvature.spectrum` (eigenpairs, spectral density),
:mod:`~landscape.curvature.trace`, :mod:`~landscape.curvature.compare`,
:mod:`~landscape.curvature.operators` (curvature-vector products),
:mod:`~landscape.curvature.reference` (dense float64 references). Other packages import
the operators, the model checks and the closed forms from here
(:func:`curvature_operator`, :func:`check_eval_mode`, :func:`has_closed_form`, ...), never
from the modules; ``closed_form`` is the module :mod:`landscape.curvature.closed_form`
(``closed_form.closed_form(...)`` builds a matrix), not shadowed by its function.
"""

from landscape.curvature import closed_form  # the module: its name is not shadowed
from landscape.curvature._setup import rademacher
from landscape.curvature.checks import (
    Curvature,
    check_deterministic,
    check_eval_mode,
    check_finite_output,
    check_loss,
    train_mode_modules,
    train_mode_named_modules,
)
from landscape.curvature.closed_form import ClosedForm, NoClosedForm, has_closed_form
from landscape.curvature.compare import compare_domains, cosine, principal_angles
from landscape.curvature.diagonals import ROWS_MAX_DIM, DiagonalMethod, hessian_diagonal
from landscape.curvature.lanczos import lanczos, resolve_tol
from landscape.curvature.operators import MAX_DENSE_DIM, CurvatureOperator, curvature_operator
from landscape.curvature.results import (
    ComparisonResult,
    EigenpairsResult,
    GradientVarianceResult,
    HessianDiagonalResult,
    SpectralDensityResult,
    TraceResult,
)
from landscape.curvature.spectrum import spectral_density, top_eigenpairs
from landscape.curvature.trace import hessian_trace
from landscape.curvature.variance import VARIANCE_METHODS, gradient_variance

__all__ = [
    "DiagonalMethod",
    "GradientVarianceResult",
    "HessianDiagonalResult",
    "EigenpairsResult",
    "TraceResult",
    "SpectralDensityResult",
    "ComparisonResult",
    "gradient_variance",
    "hessian_diagonal",
    "top_eigenpairs",
    "hessian_trace",
    "spectral_density",
    "compare_domains",
    "lanczos",
    "resolve_tol",
    "rademacher",
    "cosine",
    "principal_angles",
    "VARIANCE_METHODS",
    "ROWS_MAX_DIM",
    # operators and the checks and closed forms other packages use
    "Curvature",
    "CurvatureOperator",
    "curvature_operator",
    "MAX_DENSE_DIM",
    "check_loss",
    "check_eval_mode",
    "train_mode_modules",
    "train_mode_named_modules",
    "check_deterministic",
    "check_finite_output",
    "ClosedForm",
    "NoClosedForm",
    "closed_form",
    "has_closed_form",
]

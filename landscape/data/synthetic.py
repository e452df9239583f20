"""Small offline domains with known structure, for tests, docs and quick experiments.

* :func:`linear_regression_domains`: a shared linear mechanism seen through differently
  scaled inputs, so every domain has a different, exactly known loss curvature
  (:func:`linear_regression_hessian`).
* :func:`gaussian_classification_domains`: Gaussian classes with an invariant block of
  features and a spurious feature whose agreement with the label changes across domains (a
  small, fast analogue of Colored MNIST), for ``BCEWithLogitsLoss`` or ``CrossEntropyLoss``.

Both return ``{"d0": [(X, y)], "d1": [(X, y)], ...}`` (split into batches when
``batch_size`` is given), draw everything from one CPU ``torch.Generator`` seeded with
``seed`` (so the data is the same on every device) and are registered in
:func:`landscape.data.build_domains`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _positive_int(value, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an integer >= {minimum}, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value}")
    return value


def _nonnegative(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number >= 0, got {type(value).__name__}")
    if not value >= 0 or math.isinf(value):
        raise ValueError(f"{what} must be a finite number >= 0, got {value}")
    return float(value)


def _check_dtype(dtype) -> None:
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch dtype such as torch.float64, got {dtype}")


def _batches(X: Tensor, y: Tensor, batch_size: int | None) -> list[tuple[Tensor, Tensor]]:
    if batch_size is None:
        return [(X, y)]
    size = _positive_int(batch_size, "batch_size")
    return list(zip(X.split(size), y.split(size), strict=True))


def linear_regression_domains(
    n_domains: int = 2,
    n: int = 200,
    dim: int = 5,
    noise: float = 0.1,
    shift: float = 0.5,
    seed: int = 0,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float64,
    batch_size: int | None = None,
) -> dict[str, list[tuple[Tensor, Tensor]]]:
    """Regression domains sharing one linear mechanism, with domain-specific input scales.

    Draws (in this order, from ``torch.Generator().manual_seed(seed)``): the true weights
    :math:`w^\\star \\sim \\mathcal N(0, I_D)` and bias :math:`b^\\star \\sim \\mathcal N(0, 1)`,
    then for each domain :math:`e` the standard normal :math:`Z_e \\in \\mathbb R^{n \\times D}`
    and :math:`\\varepsilon_e \\in \\mathbb R^{n}`. Then

    .. math::
        X_e = Z_e \\operatorname{diag}(\\sigma_e), \\quad
        \\sigma_{e,j} = \\exp(\\text{shift} \\cdot e \\cdot u_j), \\quad
        u = \\operatorname{linspace}(-1, 1, D), \\qquad
        y_e = X_e w^\\star + b^\\star + \\text{noise} \\cdot \\varepsilon_e .

    Domain ``d0`` is isotropic; later ones are increasingly anisotropic. For a linear model
    :math:`f(x) = w^\\top x + b` and the mean squared error, the Hessian in :math:`(w, b)` is
    exactly :math:`\\tfrac{2}{n} \\tilde X_e^\\top \\tilde X_e` with
    :math:`\\tilde X_e = [X_e, 1]` (see :func:`linear_regression_hessian`); in expectation
    :math:`2 \\operatorname{diag}(\\sigma_e^2, 1)`.

    Args:
        n_domains: number of domains (``d0``, ``d1``, ...).
        n: samples per domain.
        dim: input dimension :math:`D`.
        noise: standard deviation of the target noise.
        shift: how fast the input scales change across domains (0 = identical
            distributions).
        seed: seeds every draw.
        device, dtype: of the returned tensors (drawn in float64 on the CPU, then cast).
        batch_size: split each domain into batches (default one batch).

    Returns:
        ``{"d<e>": [(X [n, D], y [n, 1])]}`` for ``torch.nn.MSELoss``.

    Example:
        >>> d = linear_regression_domains(n_domains=2, n=50, dim=3, shift=0.0, noise=0.0)
        >>> X, y = d["d0"][0]
        >>> X.shape, y.shape
        (torch.Size([50, 3]), torch.Size([50, 1]))
    """
    n_domains = _positive_int(n_domains, "n_domains")
    n = _positive_int(n, "n")
    dim = _positive_int(dim, "dim")
    noise = _nonnegative(noise, "noise")
    shift = _nonnegative(shift, "shift")
    _check_dtype(dtype)
    g = torch.Generator().manual_seed(int(seed))
    w_star = torch.randn(dim, generator=g, dtype=torch.float64)
    b_star = torch.randn(1, generator=g, dtype=torch.float64)
    u = torch.linspace(-1.0, 1.0, dim, dtype=torch.float64) if dim > 1 else torch.zeros(1)
    domains = {}
    for e in range(n_domains):
        Z = torch.randn(n, dim, generator=g, dtype=torch.float64)
        eps = torch.randn(n, generator=g, dtype=torch.float64)
        X = Z * torch.exp(shift * e * u.to(torch.float64))
        y = X @ w_star + b_star + noise * eps
        domains[f"d{e}"] = _batches(
            X.to(device=device, dtype=dtype), y[:, None].to(device=device, dtype=dtype), batch_size
        )
    return domains


def linear_regression_hessian(X: Tensor, bias: bool = True) -> Tensor:
    """Exact Hessian of the mean squared error of a linear model :math:`w^\\top x + b`.

    .. math:: H = \\frac{2}{N} \\tilde X^\\top \\tilde X, \\qquad \\tilde X = [X, 1]

    in the parameter order of ``torch.nn.Linear(D, 1)``: ``weight`` (D entries) then
    ``bias``. Without ``bias`` it is :math:`\\tfrac{2}{N} X^\\top X`.

    Args:
        X: inputs ``[N, D]``.
        bias: whether the model has a bias.

    Returns:
        ``[D + 1, D + 1]`` (or ``[D, D]``), in ``X``'s dtype and device.
    """
    if X.dim() != 2 or X.shape[0] == 0:
        raise ValueError(f"X must be a non-empty [N, D] matrix, got shape {list(X.shape)}")
    if bias:
        X = torch.cat([X, torch.ones(X.shape[0], 1, dtype=X.dtype, device=X.device)], dim=1)
    return 2.0 / X.shape[0] * X.T @ X


def default_spurious(n_domains: int) -> tuple[float, ...]:
    """Spurious agreement per domain when none is given: 0.9 down to 0.8 (as +90% / +80%)."""
    if n_domains == 1:
        return (0.9,)
    return tuple(round(0.9 - 0.1 * e / (n_domains - 1), 12) for e in range(n_domains))


def gaussian_classification_domains(
    n_domains: int = 2,
    n: int = 200,
    dim: int = 4,
    spurious: tuple[float, ...] | list[float] | None = None,
    separation: float = 1.0,
    spurious_scale: float = 1.0,
    spurious_noise: float = 0.1,
    num_classes: int = 2,
    loss: str = "bce",
    seed: int = 0,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float64,
    batch_size: int | None = None,
) -> dict[str, list[tuple[Tensor, Tensor]]]:
    """Gaussian classes plus a spurious feature whose reliability changes across domains.

    Draws (in this order, from ``torch.Generator().manual_seed(seed)``): class means
    :math:`\\mu_k = \\text{separation} \\cdot m_k / \\lVert m_k \\rVert`,
    :math:`m_k \\sim \\mathcal N(0, I_D)` (for two classes :math:`\\mu_1 = -\\mu_0`); then per
    domain :math:`e`: labels :math:`y \\sim \\text{Uniform}\\{0..K-1\\}` (``randint``),
    invariant noise :math:`\\mathcal N(0, I_D)`, agreement draws ``rand(n)``, the wrong
    spurious class ``randint(1, K)`` (offset from :math:`y`, modulo :math:`K`) and the
    spurious noise :math:`\\mathcal N(0, I)`. Then

    .. math::
        x_{\\text{inv}} = \\mu_y + \\mathcal N(0, I_D), \\qquad
        s = \\begin{cases} y & \\text{with probability } p_e \\\\
        \\text{another class} & \\text{otherwise}\\end{cases}, \\qquad
        x_{\\text{sp}} = \\text{spurious\\_scale} \\cdot \\phi(s)
        + \\text{spurious\\_noise} \\cdot \\mathcal N(0, I),

    with :math:`\\phi(s) = 2s - 1` (one column) for two classes and the one-hot vector of
    :math:`s` (:math:`K` columns) otherwise. ``X = [x_inv, x_sp]``, spurious columns last. The
    invariant features predict the label equally well in every domain; the spurious one
    agrees with it with probability :math:`p_e`, which differs across domains, so a model
    that leans on it sees inconsistent losses (as with the colour in Colored MNIST).

    Args:
        n_domains: number of domains (``d0``, ``d1``, ...).
        n: samples per domain.
        dim: invariant dimensions :math:`D`.
        spurious: :math:`p_e` per domain, in [0, 1] (default 0.9 down to 0.8).
        separation: norm of the class means (two classes: Bayes accuracy of the invariant
            block is :math:`\\Phi(\\text{separation})`).
        spurious_scale, spurious_noise: signal and noise of the spurious columns.
        num_classes: :math:`K \\ge 2`.
        loss: ``"bce"`` (``K = 2``, targets ``[n, 1]`` float 0/1 for ``BCEWithLogitsLoss``)
            or ``"ce"`` (targets ``int64 [n]`` for ``CrossEntropyLoss``).
        seed: seeds every draw.
        device, dtype: of the returned inputs (and of the BCE targets).
        batch_size: split each domain into batches (default one batch).

    Returns:
        ``{"d<e>": [(X [n, D + 1 or D + K], y)]}``.

    Example:
        >>> d = gaussian_classification_domains(n=100, dim=3)
        >>> X, y = d["d0"][0]
        >>> X.shape, y.shape, sorted(y.unique().tolist())
        (torch.Size([100, 4]), torch.Size([100, 1]), [0.0, 1.0])
    """
    n_domains, n, dim, num_classes = _check_sizes(n_domains, n, dim, num_classes)
    scales = _check_scales(separation, spurious_scale, spurious_noise)
    _check_dtype(dtype)
    _check_classification_loss(loss, num_classes)
    spurious = _check_spurious(spurious, n_domains)

    g = torch.Generator().manual_seed(int(seed))
    means = _class_means(num_classes, dim, scales[0], g)
    domains = {}
    for e, p in enumerate(spurious):
        X, y = _gaussian_domain(means, n, p, scales[1], scales[2], g)
        target = y.to(dtype)[:, None] if loss == "bce" else y
        domains[f"d{e}"] = _batches(X.to(device=device, dtype=dtype), target.to(device), batch_size)
    return domains


def _check_sizes(n_domains, n, dim, num_classes) -> tuple[int, int, int, int]:
    """The four sizes of :func:`gaussian_classification_domains`, checked (one-line errors)."""
    return (
        _positive_int(n_domains, "n_domains"),
        _positive_int(n, "n"),
        _positive_int(dim, "dim"),
        _positive_int(num_classes, "num_classes", minimum=2),
    )


def _check_scales(separation, spurious_scale, spurious_noise) -> tuple[float, float, float]:
    """``(separation, spurious_scale, spurious_noise)``, each checked non-negative."""
    return (
        _nonnegative(separation, "separation"),
        _nonnegative(spurious_scale, "spurious_scale"),
        _nonnegative(spurious_noise, "spurious_noise"),
    )


def _check_classification_loss(loss: str, num_classes: int) -> None:
    if loss not in ("bce", "ce"):
        raise ValueError(
            f"loss must be 'bce' (BCEWithLogitsLoss) or 'ce' (CrossEntropyLoss), got {loss!r}"
        )
    if loss == "bce" and num_classes != 2:
        raise ValueError(f"loss='bce' needs num_classes=2, got {num_classes}; use loss='ce'")


def _check_spurious(spurious, n_domains: int) -> tuple[float, ...]:
    """One agreement probability in [0, 1] per domain (default :func:`default_spurious`)."""
    if spurious is None:
        return default_spurious(n_domains)
    spurious = tuple(spurious)
    if len(spurious) != n_domains:
        raise ValueError(
            f"spurious needs one probability per domain ({n_domains}), got {len(spurious)}"
        )
    for e, p in enumerate(spurious):
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p <= 1:
            raise ValueError(f"spurious[{e}] must be a probability in [0, 1], got {p!r}")
    return spurious


def _class_means(K: int, dim: int, separation: float, g: torch.Generator) -> Tensor:
    """``[K, D]`` float64 class means of norm ``separation`` (two classes: opposite)."""
    means = torch.randn(K, dim, generator=g, dtype=torch.float64)
    if K == 2:
        means[1] = -means[0]
    return separation * means / means.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _gaussian_domain(
    means: Tensor, n: int, p: float, scale: float, noise: float, g: torch.Generator
) -> tuple[Tensor, Tensor]:
    """One domain's float64 inputs ``[n, D + 1 or D + K]`` and int64 labels ``[n]``, drawn
    from ``g`` in the order the docstring of :func:`gaussian_classification_domains` gives."""
    K, dim = means.shape
    y = torch.randint(0, K, (n,), generator=g)
    x_inv = means[y] + torch.randn(n, dim, generator=g, dtype=torch.float64)
    agree = torch.rand(n, generator=g, dtype=torch.float64) < p
    other = (y + torch.randint(1, K, (n,), generator=g)) % K
    s = torch.where(agree, y, other)
    if K == 2:
        phi = (2.0 * s - 1.0).to(torch.float64)[:, None]
    else:
        phi = torch.nn.functional.one_hot(s, K).to(torch.float64)
    x_sp = scale * phi + noise * torch.randn(phi.shape, generator=g, dtype=torch.float64)
    return torch.cat([x_inv, x_sp], dim=1), y

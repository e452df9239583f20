"""landscape: loss-landscape inconsistency between training domains.

Train ERM, Fishr, IRM and V-REx on multi-domain data; measure per-domain gradient variances,
curvature, the inconsistency score I^ε (Parascandolo et al. 2021; Rame et al. 2022) and 2D
loss-surface slices on shared seeded directions; draw the figures from saved results.

Public names are imported lazily so ``import landscape`` stays fast.
"""

from __future__ import annotations

import importlib

from landscape import thread_pools

# before torch and NumPy load: how their thread pools wait (see landscape.thread_pools)
thread_pools.prepare()

__version__ = "0.1.0"

_EXPORTS = {
    # data, models, losses, parameters
    "colored_mnist": "landscape.data",
    "colored_mnist_spec": "landscape.data",
    "data_spec": "landscape.data",
    "build_domains": "landscape.data",
    "load_mnist": "landscape.data",
    "TRAIN_DOMAINS": "landscape.data",
    "TEST_DOMAINS": "landscape.data",
    "linear_regression_domains": "landscape.data",
    "gaussian_classification_domains": "landscape.data",
    "MLP": "landscape.models",
    "build_model": "landscape.models",
    "build_loss": "landscape.losses",
    "select_params": "landscape.params",
    # threads and devices
    "set_threads": "landscape.device",
    # penalties and training
    "fishr_penalty": "landscape.training.penalties",
    "irm_penalty": "landscape.training.penalties",
    "vrex_penalty": "landscape.training.penalties",
    "train": "landscape.training",
    "TrainConfig": "landscape.training",
    # checkpoints
    "save_checkpoint": "landscape.checkpoint",
    "load_checkpoint": "landscape.checkpoint",
    # curvature
    "gradient_variance": "landscape.curvature",
    "hessian_diagonal": "landscape.curvature",
    "top_eigenpairs": "landscape.curvature",
    "hessian_trace": "landscape.curvature",
    "spectral_density": "landscape.curvature",
    "compare_domains": "landscape.curvature",
    # inconsistency score
    "inconsistency_score": "landscape.inconsistency",
    # surfaces
    "random_directions": "landscape.surface",
    "loss_surface": "landscape.surface",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'landscape' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)

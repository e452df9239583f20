"""DomainBed's minibatch protocol: one minibatch per training domain and step.

``hparams``: DomainBed's hyperparameters (defaults, seeded random draws, steps and
checkpoint frequency per data set); ``algorithms``: the update rules of ERM, IRM, V-REx
and Fishr on :class:`~landscape.models.domainbed.DomainBedNetwork`.
"""

from landscape.training.minibatch.algorithms import (
    ALGORITHMS,
    MinibatchAlgorithm,
    build_algorithm,
)
from landscape.training.minibatch.hparams import (
    checkpoint_freq,
    dataset_steps,
    default_hparams,
    hparams_for,
    random_hparams,
)

__all__ = [
    "ALGORITHMS",
    "MinibatchAlgorithm",
    "build_algorithm",
    "checkpoint_freq",
    "dataset_steps",
    "default_hparams",
    "hparams_for",
    "random_hparams",
]

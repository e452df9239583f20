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

# the DomainBed protocol's loop, run folder and records (issue 13)
from landscape.training.minibatch.config import DomainBedConfig  # noqa: E402
from landscape.training.minibatch.folder import DomainBedRunFolder, read_records  # noqa: E402
from landscape.training.minibatch.loop import train_domainbed  # noqa: E402

__all__ += ["DomainBedConfig", "DomainBedRunFolder", "read_records", "train_domainbed"]

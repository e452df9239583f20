"""DomainBed's data sets, rebuilt offline: the domains a DomainBed checkpoint was trained on.

``domainbed/scripts/train.py`` (facebookresearch/DomainBed) builds a data set's environments,
then splits each into an *in* part (trained on, for the training environments) and an
*out* part (held out for model selection). This package rebuilds both, sample for sample:

* RotatedMNIST and ColoredMNIST from our verified MNIST cache (all 70,000 images, the
  run's ``--seed`` shuffle, rotations / colours, environment ``i`` taking images ``[i::n]``)
  (:mod:`~landscape.data.domainbed.mnist`);
* PACS, VLCS, OfficeHome, TerraIncognita and DomainNet from a local folder in DomainBed's
  layout, decoded lazily with Pillow (:mod:`~landscape.data.domainbed.images`);
* the in / out split of each environment from ``--holdout_fraction`` and ``--trial_seed``
  (:mod:`~landscape.data.domainbed.split`).

::

    domains = domainbed_domains("RotatedMNIST", test_envs=[0], split="in")
    domains = domainbed_domains_from_metadata(meta, data_dir="/data", split="out")
    domains.test_envs, domains.train_envs     # ('0',), ('15', '30', '45', '60', '75')

Each value is an unshuffled ``DataLoader`` of ``(X, y)`` batches (memory: one batch).
"""

from __future__ import annotations

from landscape.data.domainbed.catalog import DATASETS, DatasetInfo, DomainBedDataError, dataset_info
from landscape.data.domainbed.domains import (
    DomainBedDomains,
    domainbed_domains,
    domainbed_domains_from_metadata,
)
from landscape.data.domainbed.loader import DomainLoader
from landscape.data.domainbed.split import environment_indices, seed_hash, split_keys

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "DomainBedDataError",
    "DomainBedDomains",
    "DomainLoader",
    "dataset_info",
    "domainbed_domains",
    "domainbed_domains_from_metadata",
    "environment_indices",
    "seed_hash",
    "split_keys",
]

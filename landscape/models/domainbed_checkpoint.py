"""DomainBed checkpoints: the network a DomainBed run predicts with, and the run's metadata.

DomainBed's ``domainbed/scripts/train.py`` (Gulrajani & Lopez-Paz 2021) writes
``model.pkl`` (and ``model_step{N}.pkl``) with ``torch.save`` of a dict

    {"args": vars(args), "model_input_shape": (C, H, W), "model_num_classes": K,
     "model_num_domains": E, "model_hparams": {...}, "model_dict": algorithm.state_dict()}

The file is read by :func:`landscape.weights.read_torch_file` (weights only, numpy scalars
allowed, nothing executed). The algorithm's ``predict(x)`` is ``classifier(featurizer(x))``
for every algorithm of :data:`PREDICTORS`; its two modules are stored under the prefixes the
table names (``featurizer.`` / ``classifier.`` for most, and a second time under
``network.0.`` / ``network.1.``, which are ignored, as are the algorithm's other modules: a
DANN discriminator, a GroupDRO ``q``, ...). They are loaded into a
:class:`~landscape.models.domainbed.DomainBedNetwork`, whose head is ``classifier``.
Algorithms that predict otherwise (:data:`UNSUPPORTED`) are refused in one line.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from landscape.models.domainbed import DomainBedNetwork, plain
from landscape.weights import load_weights_into, resolve_model

FORMAT = "domainbed"

#: The keys of the dict DomainBed's train.py saves.
SAVED_KEYS = (
    "args",
    "model_input_shape",
    "model_num_classes",
    "model_num_domains",
    "model_hparams",
    "model_dict",
)

#: The loss every DomainBed algorithm trains its classifier with (landscape's name).
LOSS = "ce"


@dataclass(frozen=True)
class Predictor:
    """Where an algorithm keeps its prediction network ``classifier(featurizer(x))``.

    Attributes:
        featurizer: prefix of the featurizer's entries in ``model_dict``.
        classifier: prefix of the head's entries.
        nonlinear: the head's kind when the algorithm fixes it (``None``: the hparam
            ``nonlinear_classifier`` decides, as in ``networks.Classifier``).
    """

    featurizer: str = "featurizer."
    classifier: str = "classifier."
    nonlinear: bool | None = None


_STANDARD = Predictor()

#: DomainBed's algorithms whose prediction is ``classifier(featurizer(x))``.
PREDICTORS: dict[str, Predictor] = {
    **{
        name: _STANDARD
        for name in (
            "ERM",
            "IRM",
            "GroupDRO",
            "Mixup",
            "MLDG",
            "CORAL",
            "MMD",
            "DANN",
            "CDANN",
            "VREx",
            "RSC",
            "SD",
            "ANDMask",
            "SANDMask",
            "IGA",
            "SelfReg",
            "Fishr",
            "IB_ERM",
            "IB_IRM",
            "CAD",
            "CondCAD",
            "Transfer",
            "CausIRL_CORAL",
            "CausIRL_MMD",
            "EQRM",
            "RDM",
            "URM",
        )
    },  # fmt: skip
    "TRM": Predictor(nonlinear=False),  # an nn.Linear head whatever the hparam
    "ERMPlusPlus": Predictor("network_sma.0.", "network_sma.1."),  # predicts with the average
    "Fish": Predictor("network.net.0.", "network.net.1."),
    "SagNet": Predictor("network_f.", "network_c."),  # the content head
    "ADRMX": Predictor("featurizer_label.", "classifier_label_1.", nonlinear=True),
}

#: DomainBed's algorithms whose prediction is not ``classifier(featurizer(x))``, and why.
UNSUPPORTED = {
    "ARM": "it predicts from the image and a context its ContextNet computes over the batch",
    "MTL": "its classifier also takes a domain embedding",
}


def is_domainbed_checkpoint(obj: Any) -> bool:
    """Whether a loaded object is the dict DomainBed's train.py saves."""
    return isinstance(obj, Mapping) and "model_dict" in obj and "model_hparams" in obj


def predictor(algorithm: str, source: str) -> Predictor:
    """The :class:`Predictor` of DomainBed's ``algorithm``.

    Raises:
        ValueError: an algorithm that does not predict with ``classifier(featurizer(x))``,
            or one DomainBed does not have (one line naming the supported ones).
    """
    if algorithm in PREDICTORS:
        return PREDICTORS[algorithm]
    why = UNSUPPORTED.get(algorithm, "it is not one of DomainBed's algorithms")
    raise ValueError(
        f"{source}: DomainBed algorithm {algorithm!r} is not supported ({why}); "
        f"supported: {', '.join(sorted(PREDICTORS))}"
    )


def domainbed_metadata(saved: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The run's metadata: what :func:`landscape.data.domainbed.domainbed_domains_from_metadata`
    and the analyses need (all JSON).

    Keys: ``format`` (``"domainbed"``), ``algorithm``, ``dataset``, ``test_envs``,
    ``holdout_fraction``, ``uda_holdout_fraction``, ``trial_seed``, ``seed``, ``data_dir``,
    ``task``, ``hparams``, ``input_shape``, ``num_classes``, ``num_domains``, ``loss``
    (``"ce"``: DomainBed trains with cross-entropy), ``args`` (all of DomainBed's
    arguments) and ``source`` (the file).
    """
    lacking = [k for k in SAVED_KEYS if k not in saved]
    if lacking:
        raise ValueError(f"{source} is not a complete DomainBed checkpoint: it lacks {lacking}")
    args = plain(saved["args"]) if isinstance(saved["args"], Mapping) else {}
    if not args.get("algorithm"):
        raise ValueError(f"{source}: the DomainBed checkpoint's args name no algorithm")
    return {
        "format": FORMAT,
        "algorithm": str(args["algorithm"]),
        "dataset": args.get("dataset"),
        "test_envs": [int(e) for e in args.get("test_envs") or []],
        "holdout_fraction": args.get("holdout_fraction", 0.2),
        "uda_holdout_fraction": args.get("uda_holdout_fraction", 0.0),
        "trial_seed": args.get("trial_seed", 0),
        "seed": args.get("seed", 0),
        "data_dir": args.get("data_dir"),
        "task": args.get("task", "domain_generalization"),
        "hparams": plain(saved["model_hparams"]),
        "input_shape": [int(s) for s in saved["model_input_shape"]],
        "num_classes": int(saved["model_num_classes"]),
        "num_domains": int(saved["model_num_domains"]),
        "loss": LOSS,
        "args": args,
        "source": source,
    }


def predictor_tensors(model_dict: Mapping[str, Tensor], where: Predictor) -> dict[str, Tensor]:
    """The prediction network's entries of ``model_dict``, renamed ``featurizer.*`` /
    ``classifier.*`` (the names of :class:`DomainBedNetwork`)."""
    tensors = {}
    for prefix, name in ((where.featurizer, "featurizer."), (where.classifier, "classifier.")):
        for key, value in model_dict.items():
            if key.startswith(prefix) and isinstance(value, Tensor):
                tensors[name + key[len(prefix) :]] = value
    return tensors


def domainbed_network(meta: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> nn.Module:
    """The :class:`DomainBedNetwork` of a run (``meta`` of :func:`domainbed_metadata`).

    The hparams are the run's, with the head's kind fixed where the algorithm fixes it and
    URM's feature activation only for URM; an MLP featurizer's width is read from the
    stored ``featurizer.output.weight`` (it changed between DomainBed releases).
    """
    hparams = dict(meta["hparams"])
    where = PREDICTORS[meta["algorithm"]]
    if where.nonlinear is not None:
        hparams["nonlinear_classifier"] = where.nonlinear
    if meta["algorithm"] != "URM":
        hparams.pop("urm_generator_output", None)
    out = tensors.get("featurizer.output.weight")
    mlp_outputs = int(out.shape[0]) if len(meta["input_shape"]) == 1 and out is not None else None
    return DomainBedNetwork(meta["input_shape"], meta["num_classes"], hparams, mlp_outputs)


def load_domainbed(
    saved: Mapping[str, Any],
    source: str | os.PathLike,
    model: nn.Module | Callable[[], nn.Module] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, dict[str, Any]]:
    """``(network, metadata)`` of a loaded DomainBed checkpoint ``saved``.

    Args:
        saved: the dict DomainBed's train.py saved (read by ``read_torch_file``).
        source: the file it came from (named in errors and the metadata).
        model: a network (or a factory) with ``featurizer`` / ``classifier`` modules to load
            the weights into, instead of the rebuilt :class:`DomainBedNetwork`.
        device: where the network is returned, in eval mode.

    Raises:
        ValueError: an unsupported algorithm or input shape, an incomplete file, or weights
            that do not fit the network (one line each).
    """
    source = str(Path(source))
    meta = domainbed_metadata(saved, source)
    where = predictor(meta["algorithm"], source)
    model_dict = saved["model_dict"]
    if not isinstance(model_dict, Mapping):
        raise ValueError(f"{source}: the DomainBed checkpoint's model_dict is not a state dict")
    tensors = predictor_tensors(model_dict, where)
    if not tensors:
        raise ValueError(
            f"{source}: model_dict holds no {where.featurizer}* / {where.classifier}* entries, "
            f"where DomainBed's {meta['algorithm']} keeps its network"
        )
    if model is None:
        try:
            net = domainbed_network(meta, tensors)
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None
    else:
        net = resolve_model(model)
    net = load_weights_into(net, tensors, source, device)
    if isinstance(net, DomainBedNetwork):
        meta["model_spec"] = net.spec
    return net, meta

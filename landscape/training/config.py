"""The settings of a training run: :class:`TrainConfig` and its four parts.

:class:`TrainConfig` is flat (``TrainConfig(steps=..., lr=...)`` and ``config.json`` files
hold one level of keys); each group of its fields is also a small dataclass that validates
and uses its own fields:

* :class:`ProtocolConfig` (``config.protocol``): algorithms, steps, Adam, the L2 term, the
  penalty weight and its schedule ``λ_t``, Fishr's distance and moving average;
* :class:`DataConfig` (``config.dataset``): which domains, built how and with which seed;
* :class:`ModelConfig` (``config.network``): the MLP's widths, the loss and the dtype;
* :class:`RunConfig` (``config.execution``): restarts and seeds, checkpoints, resumable
  state, device.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from landscape.losses import build_loss
from landscape.training.penalties import ALGORITHMS, DISTANCES

SCHEDULES = ("script", "domainbed")
DTYPES = {"float32": torch.float32, "float64": torch.float64}

#: Config keys that may differ when resuming into an existing run folder: they add work
#: (more algorithms or restarts), say where it runs, or how often the state is saved and the
#: test domains evaluated (history rows between two evaluations hold NaN there; a run folder
#: from before ``eval_every`` evaluated every step), but change no finished number.
RESUME_FREE_KEYS = ("algorithms", "restarts", "device", "state_every", "eval_every")

#: Keys added after runs were first written, with the value that reproduces those runs: a
#: stored config without the key is read with it (a run folder from before the script's
#: stream was re-seeded per restart).
LEGACY_VALUES = {"stream": "per-restart"}


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _positive_ints(obj, keys: Sequence[str]) -> None:
    for key in keys:
        value = getattr(obj, key)
        if not _is_int(value) or value <= 0:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")


def _non_negative_ints(obj, keys: Sequence[str]) -> None:
    for key in keys:
        value = getattr(obj, key)
        if not _is_int(value) or value < 0:
            raise ValueError(f"{key} must be an integer >= 0, got {value!r}")


def expand_algorithms(algorithms: str | Sequence[str]) -> list[str]:
    """Algorithm names with ``"all"`` expanded, order kept, duplicates dropped.

    Raises:
        TypeError: not a name or a list of names.
        ValueError: empty, or an unknown name (the message lists the choices).
    """
    algos = [algorithms] if isinstance(algorithms, str) else algorithms
    if not isinstance(algos, Sequence) or not all(isinstance(a, str) for a in algos):
        raise TypeError(f"algorithms must be a list of names, got {algorithms!r}")
    if not algos:
        raise ValueError(f"no algorithm given; choose from {', '.join(ALGORITHMS)} or all")
    expanded: list[str] = []
    for name in algos:
        for n in list(ALGORITHMS) if name == "all" else [name]:
            if n not in ALGORITHMS:
                raise ValueError(
                    f"unknown algorithm {n!r}; choose from {', '.join(ALGORITHMS)} or all"
                )
            if n not in expanded:
                expanded.append(n)
    return expanded


@dataclass
class ProtocolConfig:
    """The objective and its schedule (see :mod:`landscape.training.objective`)."""

    algorithms: list[str]
    steps: int
    lr: float
    l2: float
    penalty_weight: float
    anneal_step: int
    schedule: str
    distance: str
    ema: float | None
    log_all: bool

    def validate(self) -> None:
        self.algorithms = expand_algorithms(self.algorithms)
        _positive_ints(self, ("steps",))
        _non_negative_ints(self, ("anneal_step",))
        for key, zero_ok in (("lr", False), ("l2", True), ("penalty_weight", True)):
            value = getattr(self, key)
            if not _is_number(value) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{key} must be a finite number >= 0, got {value!r}")
            if not zero_ok and value == 0:
                raise ValueError(f"{key} must be > 0, got {value!r}")
            setattr(self, key, float(value))
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"unknown schedule {self.schedule!r}; choose from {', '.join(SCHEDULES)}"
            )
        if self.distance not in DISTANCES:
            raise ValueError(
                f"unknown distance {self.distance!r}; choose from {', '.join(DISTANCES)}"
            )
        if self.ema is not None:
            if not _is_number(self.ema) or not 0 < self.ema < 1:
                raise ValueError(f"ema must be None or a number in (0, 1), got {self.ema!r}")
            self.ema = float(self.ema)
        if not isinstance(self.log_all, bool):
            raise TypeError(f"log_all must be True or False, got {self.log_all!r}")

    def penalty_weight_at(self, algorithm: str, step: int) -> float:
        """``λ_t``: 0 for ERM; else 1 (script) or 0 (domainbed) before ``anneal_step``."""
        if algorithm == "erm":
            return 0.0
        if step >= self.anneal_step:
            return self.penalty_weight
        return 1.0 if self.schedule == "script" else 0.0

    def resets_optimizer_at(self, algorithm: str, step: int) -> bool:
        """Whether Adam is re-created before update ``step`` (domainbed, at the switch)."""
        return (
            self.schedule == "domainbed"
            and algorithm != "erm"
            and 0 < self.anneal_step == step
            and step < self.steps
        )


@dataclass
class DataConfig:
    """Which domains a run trains and evaluates on (see :class:`TrainConfig`)."""

    label_noise: float
    color_flip: dict[str, float] | None
    subsample: int | None
    data_seed: int
    resample_data: bool
    stream: str
    data: dict | None
    train_domains: list[str] | None
    test_domains: list[str] | None

    def validate(self) -> None:
        _non_negative_ints(self, ("data_seed",))
        from landscape.data.colored_mnist import STREAMS

        if self.stream not in STREAMS:
            raise ValueError(
                f"unknown data stream {self.stream!r}; choose from {', '.join(STREAMS)}"
            )
        if self.data is None and self.stream == "script":
            if not self.resample_data:
                raise ValueError(
                    "the script stream draws new data every restart; share one draw (same "
                    "data) only with stream 'per-restart' (--stream per-restart)"
                )
            if self.data_seed != 0:
                raise ValueError(
                    "data_seed belongs to stream 'per-restart'; the script stream draws data "
                    "and weights from seed (--seed), or choose --stream per-restart"
                )
        if not _is_number(self.label_noise) or not 0 <= self.label_noise <= 1:
            raise ValueError(f"label_noise must be in [0, 1], got {self.label_noise!r}")
        self.label_noise = float(self.label_noise)
        if self.subsample is not None and (not _is_int(self.subsample) or self.subsample <= 0):
            raise ValueError(
                f"subsample must be None or a positive number of samples, got {self.subsample!r}"
            )
        if self.data is not None and not (isinstance(self.data, dict) and "name" in self.data):
            raise ValueError(
                f"data must be None or a data spec dict with a 'name' key, got {self.data!r}"
            )
        if self.data is None:
            self.color_flip = self.spec()["color_flip"]  # checks the data fields
        for key in ("train_domains", "test_domains"):
            value = getattr(self, key)
            if value is None:
                continue
            if isinstance(value, str) or not all(isinstance(d, str) for d in value):
                raise TypeError(f"{key} must be a list of domain names, got {value!r}")
            setattr(self, key, list(value))
        if self.train_domains is not None and not self.train_domains:
            raise ValueError("train_domains is empty; name at least one training domain")
        if self.train_domains and self.test_domains:
            both = sorted(set(self.train_domains) & set(self.test_domains))
            if both:
                raise ValueError(f"domain {both[0]!r} is both a training and a test domain")

    def spec(
        self, restart: int = 0, *, seed: int = 0, init_layers: list | None = None
    ) -> dict[str, Any]:
        """The data spec of ``restart`` (``data``, or Colored MNIST from the data fields).

        Colored MNIST from the fields: with ``stream="script"``, restart ``restart`` of the
        script's stream seeded ``seed`` (``init_layers``: the network's linear layers, whose
        initialisation each earlier restart drew); with ``"per-restart"``, the seed is
        ``data_seed + restart`` (``data_seed`` alone without ``resample_data``). An explicit
        ``data`` spec of the script stream moves on by ``restart`` restarts; any other
        explicit spec has its ``seed`` shifted by ``restart`` (with ``resample_data``).
        """
        shift = restart if self.resample_data else 0
        if self.data is not None:
            spec = dict(self.data)
            if spec.get("name") == "colored_mnist" and spec.get("stream") == "script":
                spec["restart"] = int(spec.get("restart", 0)) + shift
                if spec.get("init_layers") is None:
                    spec["init_layers"] = init_layers
            elif shift and "seed" in spec:
                spec["seed"] = int(spec["seed"]) + shift
            return spec
        from landscape.data import colored_mnist_spec

        fields = {
            "label_noise": self.label_noise,
            "color_flip": self.color_flip,
            "subsample": self.subsample,
        }
        if self.stream == "script":
            return colored_mnist_spec(
                **fields, seed=seed, stream="script", restart=restart, init_layers=init_layers
            )
        return colored_mnist_spec(**fields, seed=self.data_seed + shift, stream="per-restart")

    def split(self, names: Sequence[str]) -> tuple[list[str], list[str]]:
        """``(train_domains, test_domains)`` among the data's domain ``names``.

        Defaults: Colored MNIST trains on ``"+80%"``, ``"+90%"``; other data on every domain
        not named a test domain; the test domains are every domain not trained on.
        """
        names = list(names)
        train_domains = self.train_domains
        if train_domains is None:
            if self.data is None:
                from landscape.data import TRAIN_DOMAINS

                train_domains = list(TRAIN_DOMAINS)
            else:
                test = set(self.test_domains or [])
                train_domains = [n for n in names if n not in test]
        test_domains = self.test_domains
        if test_domains is None:
            test_domains = [n for n in names if n not in train_domains]
        for d in list(train_domains) + list(test_domains):
            if d not in names:
                raise ValueError(f"unknown domain {d!r}; the data has {', '.join(names)}")
        if not train_domains:
            raise ValueError("no training domain left; set train_domains")
        return list(train_domains), list(test_domains)


@dataclass
class ModelConfig:
    """The network, its loss and its floating dtype."""

    hidden_dims: list[int]
    loss: str
    dtype: str

    def validate(self) -> None:
        if isinstance(self.hidden_dims, int) or not all(
            _is_int(h) and h > 0 for h in self.hidden_dims
        ):
            raise ValueError(
                f"hidden_dims must be a list of positive widths, got {self.hidden_dims!r}"
            )
        self.hidden_dims = [int(h) for h in self.hidden_dims]
        build_loss(self.loss)  # raises on an unknown loss name
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; choose from {', '.join(DTYPES)}")


@dataclass
class RunConfig:
    """Restarts, seeds, what is saved and where it runs."""

    restarts: int
    seed: int
    checkpoint_steps: list[int]
    state_every: int
    eval_every: int
    device: str

    def validate(self, steps: int) -> None:
        _positive_ints(self, ("restarts", "state_every", "eval_every"))
        _non_negative_ints(self, ("seed",))
        chosen = self.checkpoint_steps
        if isinstance(chosen, int) or not all(_is_int(s) for s in chosen):
            raise ValueError(f"checkpoint_steps must be a list of steps, got {chosen!r}")
        bad = [s for s in chosen if not 0 <= s <= steps]
        if bad:
            raise ValueError(
                f"checkpoint step {bad[0]} is outside 0..{steps} (the number of steps)"
            )
        self.checkpoint_steps = sorted({int(s) for s in chosen})
        if not isinstance(self.device, str):
            self.device = str(self.device)


def _part(config: TrainConfig, cls):
    return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})


@dataclass
class TrainConfig:
    """Every knob of a training run; the defaults are the Colored MNIST protocol.

    Attributes:
        algorithms: algorithm names (see :data:`landscape.training.penalties.ALGORITHMS`), or
            ``"all"``; order kept, duplicates dropped.
        steps: number of Adam updates (full batch).
        lr: Adam learning rate.
        l2: weight of ``sum ||w||^2`` over **all** parameters (biases included).
        penalty_weight: ``λ`` once annealed.
        anneal_step: first step with ``λ = penalty_weight``; ``anneal_step >= steps`` means
            the penalty weight never switches.
        schedule: ``"script"`` or ``"domainbed"`` (see :mod:`landscape.training.objective`).
        restarts: restarts per algorithm (see ``stream`` for what restart ``k`` draws).
        seed: the Colored MNIST script's ``--seed`` (``stream="script"``: restart ``k`` is
            the script's restart ``k``, data and initial weights); otherwise the base seed of
            the model initialisations, restart ``k`` seeded ``seed + k``.
        hidden_dims: widths of the MLP's hidden layers.
        distance: Fishr's distance between variances, ``"sum"`` (the script) or ``"mean"``
            (DomainBed).
        ema: ``β`` of the bias-corrected moving average of Fishr's variances, in (0, 1)
            (``None``: none; DomainBed uses 0.95, see
            :class:`landscape.training.penalties.Penalties` for how its scale differs from
            DomainBed's).
        stream: the random stream of Colored MNIST built from the data fields:
            ``"script"`` (the official script's: NumPy and torch seeded once with ``seed``,
            restart ``k`` continuing where restart ``k - 1`` left them, so restart ``k``
            replays the draws of restarts ``0 .. k-1``; data and initial weights) or
            ``"per-restart"`` (every restart seeded anew: data ``data_seed + k``, model
            ``seed + k``). See :mod:`landscape.data.colored_mnist`. Other data are always
            seeded per restart.
        resample_data: ``"per-restart"`` stream (and other data): build restart ``k``'s
            data with seed ``data_seed + k`` instead of sharing one data draw across restarts
            (the script stream always draws new data).
        label_noise, color_flip, subsample, data_seed: the Colored MNIST data spec (see
            :func:`landscape.data.colored_mnist`; ``color_flip`` is ``{domain: probability}``
            and is stored resolved); ignored when ``data`` is given.
        data: an explicit data spec for :func:`landscape.data.build_domains` (e.g. synthetic
            domains); ``None`` builds Colored MNIST from the fields above.
        train_domains: domains trained on (``None``: ``"+80%"``, ``"+90%"`` for Colored MNIST,
            else every domain but the test ones).
        test_domains: domains only evaluated (``None``: every domain not trained on).
        loss: loss name (``"bce"``, ``"ce"`` or ``"mse"``).
        checkpoint_steps: steps whose weights are saved as checkpoints; the final step is
            always saved.
        state_every: steps between two saves of the resumable state.
        eval_every: steps between two evaluations of the test domains (nothing trains on
            them); the checkpoint steps, the last update and the final weights are always
            evaluated, and the other history rows hold NaN in the test domains' columns.
        log_all: log every penalty (IRM, V-REx, Fishr) at every step, not only the selected
            one (as the script does).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        dtype: ``"float32"`` or ``"float64"``.
    """

    algorithms: list[str] = field(default_factory=lambda: ["erm", "irm", "vrex", "fishr"])
    steps: int = 501
    lr: float = 4.898536566546834e-4
    l2: float = 0.00110794568
    penalty_weight: float = 91257.18613115903
    anneal_step: int = 190
    schedule: str = "script"
    restarts: int = 3
    seed: int = 0
    hidden_dims: list[int] = field(default_factory=lambda: [390, 390])
    distance: str = "sum"
    ema: float | None = None
    label_noise: float = 0.25
    color_flip: dict[str, float] | None = None
    subsample: int | None = None
    data_seed: int = 0
    resample_data: bool = True
    stream: str = "script"
    data: dict | None = None
    train_domains: list[str] | None = None
    test_domains: list[str] | None = None
    loss: str = "bce"
    checkpoint_steps: list[int] = field(default_factory=list)
    state_every: int = 50
    eval_every: int = 10
    log_all: bool = True
    device: str = "auto"
    dtype: str = "float32"

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Normalise the fields and raise a one-line ``ValueError`` / ``TypeError`` on bad ones."""
        protocol = _part(self, ProtocolConfig)
        protocol.validate()
        parts = [protocol, _part(self, ModelConfig), _part(self, DataConfig)]
        parts[1].validate()
        parts[2].validate()
        parts.append(_part(self, RunConfig))
        parts[3].validate(protocol.steps)
        for part in parts:
            for f in dataclasses.fields(part):
                setattr(self, f.name, getattr(part, f.name))
        if self.data is not None and self.uses_script_stream():
            layers = self.data_spec()["init_layers"]
            if layers is not None and layers != self.linear_layers():
                raise ValueError(
                    f"the data spec's init_layers {layers} are not the network's linear layers "
                    f"{self.linear_layers()}; drop init_layers from the spec or match hidden_dims"
                )

    @property
    def protocol(self) -> ProtocolConfig:
        return _part(self, ProtocolConfig)

    @property
    def dataset(self) -> DataConfig:
        return _part(self, DataConfig)

    @property
    def network(self) -> ModelConfig:
        return _part(self, ModelConfig)

    @property
    def execution(self) -> RunConfig:
        return _part(self, RunConfig)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (``TrainConfig.from_dict`` inverts it)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build a config from a dict such as ``config.json``; unknown keys are an error."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in values if k not in known]
        if unknown:
            raise ValueError(f"unknown config key {unknown[0]!r}; known: {', '.join(known)}")
        return cls(**dict(values))

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def data_spec(self, restart: int = 0) -> dict[str, Any]:
        """The data spec of ``restart`` (see :meth:`DataConfig.spec`)."""
        return self.dataset.spec(restart, seed=self.seed, init_layers=self.linear_layers())

    def linear_layers(self) -> list[list[int]]:
        """``[[in, out], ...]`` of the MLP's linear layers on Colored MNIST (inputs
        2·14·14; one logit, two for ``loss="ce"``): the layers whose initialisation the
        script's stream draws."""
        widths = [2 * 14 * 14, *self.hidden_dims, 2 if self.loss == "ce" else 1]
        return [[a, b] for a, b in zip(widths[:-1], widths[1:], strict=True)]

    def uses_script_stream(self) -> bool:
        """Whether restart ``k``'s initial weights come from the Colored MNIST script's
        stream (see ``stream``): Colored MNIST of the ``"script"`` stream."""
        if self.data is None:
            return self.stream == "script"
        return self.data.get("name") == "colored_mnist" and self.data.get("stream") == "script"

    def penalty_weight_at(self, algorithm: str, step: int) -> float:
        """``λ_t`` (see :meth:`ProtocolConfig.penalty_weight_at`)."""
        return self.protocol.penalty_weight_at(algorithm, step)

    def resets_optimizer_at(self, algorithm: str, step: int) -> bool:
        """See :meth:`ProtocolConfig.resets_optimizer_at`."""
        return self.protocol.resets_optimizer_at(algorithm, step)

    def differing_keys(self, stored: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
        """Every key (sorted) where ``stored`` (a ``config.json`` or a saved state's config)
        differs from this config in a way that changes finished numbers
        (:data:`RESUME_FREE_KEYS` may differ), as ``(key, stored value, current value)``. A
        key of :data:`LEGACY_VALUES` missing from ``stored`` has its legacy value."""
        current = self.to_dict()
        stored = {**LEGACY_VALUES, **stored}
        found = []
        for key in sorted(set(stored) | set(current)):
            if key in RESUME_FREE_KEYS:
                continue
            old, new = stored.get(key, "<missing>"), current.get(key, "<missing>")
            if old != new:
                found.append((key, old, new))
        return found

    def differing_key(self, stored: Mapping[str, Any]) -> tuple[str, Any, Any] | None:
        """The first of :meth:`differing_keys`; ``None`` when they agree."""
        found = self.differing_keys(stored)
        return found[0] if found else None

    def describe_differences(self, stored: Mapping[str, Any]) -> str | None:
        """``"lr: saved 0.001, now 0.0005; steps: ..."`` for :meth:`differing_keys`, or
        ``None`` when they agree."""
        found = self.differing_keys(stored)
        if not found:
            return None
        return "; ".join(f"{key}: saved {old!r}, now {new!r}" for key, old, new in found)

"""Training ERM, IRM, V-REx and Fishr on multi-domain data: loop, history, checkpoints, resume.

The default protocol is the Colored MNIST experiment of the Fishr paper (Rame et al. 2022,
Section 6.A, reusing the IRM script of Arjovsky et al. 2019): full batch (every sample of
each training domain at every step), Adam, an explicit L2 term on **all** parameters
(biases included) and a penalty weight that jumps at ``anneal_step``. At step ``t`` the
objective is

.. math::

    \\mathcal{L}_t(\\theta) = \\frac{1}{|\\mathcal{E}|}\\sum_{e\\in\\mathcal{E}} R_e(\\theta)
        + \\ell_2 \\sum_{w\\in\\theta} \\|w\\|_2^2 + \\lambda_t\\, P(\\theta)

with ``P`` the selected penalty (0 for ERM) and two schedules for ``λ_t``:

* ``"script"`` (the Colored MNIST script): ``λ_t = 1`` before ``anneal_step`` and
  ``penalty_weight`` from then on; whenever ``λ_t > 1`` the **whole** objective is divided
  by ``λ_t`` (to keep gradient magnitudes reasonable); Adam is never reset.
* ``"domainbed"`` (DomainBed's Fishr): ``λ_t = 0`` before ``anneal_step`` and
  ``penalty_weight`` from then on, no division; Adam is re-created at the switch.

ERM never has a penalty (``λ_t = 0``), whatever the schedule.

A run folder (:func:`train`) holds::

    config.json                          the TrainConfig
    results.json / results.npz           RunResults (final accuracies, mean ± std table)
    results.md                           the table in Markdown
    <algorithm>/restart_<k>/history.csv  one row per step (see below)
    <algorithm>/restart_<k>/state.safetensors          resumable state (atomic)
    <algorithm>/restart_<k>/checkpoints/step_XXXXX.safetensors  (+ .json copy of the metadata)

History row ``t`` (``t = 0 .. steps-1``) is measured at the weights ``θ_t`` *before* update
``t`` (it is the forward pass that update uses); the last row, ``t = steps``, evaluates the
final weights ``θ_steps`` without updating them. Checkpoint ``step_t`` holds ``θ_t`` (after
``t`` updates; ``step_00000`` is the initialisation) and its metadata carries the row's
accuracies. The results table uses the final row (the Colored MNIST script reports the
forward pass of its last update instead, one Adam step earlier).

Restart ``k`` initialises its model with seed ``seed + k`` and, by default
(``resample_data=True``), builds its data with seed ``data_seed + k``: the Colored MNIST
script draws the shuffle and the label / colour noise anew at every restart, so the spread
over restarts holds data variance as well as initialisation variance, and so does ours.
Every algorithm sees the same data at the same restart index (paired comparisons). With
``resample_data=False`` all restarts share the data of ``data_seed``. Both seeds are
recorded in every checkpoint.

Nothing random happens during a step (full batch, no dropout), so the resumable state holds
no RNG state: the weights, Adam's state, the Penalties state (Fishr's moving averages), the
step and the history suffice for a bit-identical continuation.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import json
import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from landscape.checkpoint import load_tensors, save_checkpoint, save_tensors
from landscape.device import resolve_device
from landscape.domains import check_domains, concat
from landscape.io import SavedResult, atomic_write, read_json, write_json
from landscape.losses import accuracy, build_loss
from landscape.models import build_model
from landscape.training.penalties import ALGORITHMS, Penalties
from landscape.training.penalties import NonFiniteLossError as _PenaltyNonFinite

SCHEDULES = ("script", "domainbed")
DISTANCES = ("sum", "mean")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
STATE_FORMAT = "landscape-train-state"

#: Config keys that may differ when resuming into an existing run folder: they add work
#: (more algorithms or restarts) or say where it runs, but change no finished number.
RESUME_FREE_KEYS = ("algorithms", "restarts", "device", "state_every")

#: Display names of the algorithms in the results table.
DISPLAY_NAMES = {
    "erm": "ERM",
    "irm": "IRM",
    "vrex": "V-REx",
    "fishr": "Fishr",
    "fishr_notcentered": "Fishr (not centered)",
    "fishr_offdiagonal": "Fishr (off-diagonal)",
    "fishr_all": "Fishr (all layers)",
}
#: Column titles of the Colored MNIST test domains in the results table (as in the paper).
TEST_COLUMN_TITLES = {"-90%": "Test acc.", "gray": "Grey test acc."}


# --------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


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
        schedule: ``"script"`` or ``"domainbed"`` (see the module docstring).
        restarts: independent restarts per algorithm; restart ``k`` uses seed ``seed + k``.
        seed: base seed of the model initialisations.
        hidden_dims: widths of the MLP's hidden layers.
        distance: Fishr's distance between variances, ``"sum"`` (the script) or ``"mean"``
            (DomainBed).
        ema: ``β`` of the bias-corrected moving average of Fishr's variances, in (0, 1)
            (``None``: none; DomainBed uses 0.95, see :class:`landscape.training.penalties.Penalties`
            for how its scale differs from DomainBed's).
        resample_data: build restart ``k``'s data with seed ``data_seed + k`` (as the script
            does) instead of sharing one data draw across restarts.
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
    data: dict | None = None
    train_domains: list[str] | None = None
    test_domains: list[str] | None = None
    loss: str = "bce"
    checkpoint_steps: list[int] = field(default_factory=list)
    state_every: int = 50
    log_all: bool = True
    device: str = "auto"
    dtype: str = "float32"

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Normalise the fields and raise a one-line ``ValueError`` / ``TypeError`` on bad ones."""
        algos = self.algorithms
        if isinstance(algos, str):
            algos = [algos]
        if not isinstance(algos, Sequence) or not all(isinstance(a, str) for a in algos):
            raise TypeError(f"algorithms must be a list of names, got {self.algorithms!r}")
        if not algos:
            raise ValueError(f"no algorithm given; choose from {', '.join(ALGORITHMS)} or all")
        expanded: list[str] = []
        for name in algos:
            names = list(ALGORITHMS) if name == "all" else [name]
            for n in names:
                if n not in ALGORITHMS:
                    raise ValueError(
                        f"unknown algorithm {n!r}; choose from {', '.join(ALGORITHMS)} or all"
                    )
                if n not in expanded:
                    expanded.append(n)
        self.algorithms = expanded

        for key in ("steps", "restarts", "state_every"):
            value = getattr(self, key)
            if not _is_int(value) or value <= 0:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        for key in ("anneal_step", "seed", "data_seed"):
            value = getattr(self, key)
            if not _is_int(value) or value < 0:
                raise ValueError(f"{key} must be an integer >= 0, got {value!r}")
        for key, low_ok in (("lr", False), ("l2", True), ("penalty_weight", True)):
            value = getattr(self, key)
            if not _is_number(value) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{key} must be a finite number >= 0, got {value!r}")
            if not low_ok and value == 0:
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
        if isinstance(self.hidden_dims, int) or not all(
            _is_int(h) and h > 0 for h in self.hidden_dims
        ):
            raise ValueError(
                f"hidden_dims must be a list of positive widths, got {self.hidden_dims!r}"
            )
        self.hidden_dims = [int(h) for h in self.hidden_dims]
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
            self.color_flip = self.data_spec()["color_flip"]  # checks the data fields
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
        build_loss(self.loss)  # raises on an unknown loss name
        steps = self.checkpoint_steps
        if isinstance(steps, int) or not all(_is_int(s) for s in steps):
            raise ValueError(f"checkpoint_steps must be a list of steps, got {steps!r}")
        bad = [s for s in steps if not 0 <= s <= self.steps]
        if bad:
            raise ValueError(
                f"checkpoint step {bad[0]} is outside 0..{self.steps} (the number of steps)"
            )
        self.checkpoint_steps = sorted({int(s) for s in steps})
        if not isinstance(self.log_all, bool):
            raise TypeError(f"log_all must be True or False, got {self.log_all!r}")
        if not isinstance(self.device, str):
            self.device = str(self.device)
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; choose from {', '.join(DTYPES)}")

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
        """The data spec of ``restart`` (``data``, or Colored MNIST from the data fields).

        With ``resample_data``, the spec's seed is shifted by ``restart``.
        """
        shift = restart if self.resample_data else 0
        if self.data is not None:
            spec = dict(self.data)
            if shift and "seed" in spec:
                spec["seed"] = int(spec["seed"]) + shift
            return spec
        from landscape.data import colored_mnist_spec

        return colored_mnist_spec(
            label_noise=self.label_noise,
            color_flip=self.color_flip,
            subsample=self.subsample,
            seed=self.data_seed + shift,
        )

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


# --------------------------------------------------------------------------------------
# one (algorithm, restart) run
# --------------------------------------------------------------------------------------


class NonFiniteLossError(_PenaltyNonFinite):
    """The training objective became NaN or infinite (a ``ValueError``; ``domain`` names the
    domain whose risk is not finite, ``None`` when it is the penalty or the weights)."""


def _full_batches(domains: Mapping[str, Any], device, dtype) -> dict[str, tuple[Tensor, Tensor]]:
    """Each domain as one ``(X, y)`` pair on ``device``; floating tensors cast to ``dtype``."""
    out = {}
    for name, data in check_domains(domains, what="training").items():
        X, y = concat(data)
        X = X.to(device=device, dtype=dtype if X.is_floating_point() else None)
        y = y.to(device=device, dtype=dtype if y.is_floating_point() else None)
        out[name] = (X, y)
    return out


def _model_spec(config: TrainConfig, batches: Mapping[str, tuple[Tensor, Tensor]]) -> dict:
    X, y = next(iter(batches.values()))
    input_dim = int(np.prod(X.shape[1:]))
    if config.loss == "ce":
        output_dim = int(max(int(b[1].max()) for b in batches.values())) + 1
    else:
        output_dim = int(y.shape[1]) if y.dim() > 1 else 1
    return {
        "arch": "mlp",
        "input_dim": input_dim,
        "hidden_dims": list(config.hidden_dims),
        "output_dim": output_dim,
    }


class Trainer:
    """One training run: one algorithm, one restart (seed ``config.seed + restart``).

    Args:
        config: the run's settings.
        algorithm: one of ``config.algorithms``.
        restart: restart index ``k``.
        batches: ``{domain: (X, y)}`` full batches already on the training device and dtype,
            covering ``train_domains`` and ``test_domains``.
        train_domains, test_domains: domain names (order kept).

    ``trainer.step`` is the number of updates done; :meth:`train_step` does one more and
    returns its history row; :meth:`evaluate` measures the current weights without updating.
    """

    def __init__(
        self,
        config: TrainConfig,
        algorithm: str,
        restart: int,
        batches: Mapping[str, tuple[Tensor, Tensor]],
        train_domains: Sequence[str],
        test_domains: Sequence[str],
    ):
        if algorithm not in ALGORITHMS:
            raise ValueError(
                f"unknown algorithm {algorithm!r}; choose from {', '.join(ALGORITHMS)} or all"
            )
        self.config = config
        self.algorithm = algorithm
        self.restart = int(restart)
        self.seed = config.seed + self.restart
        self.train_domains = list(train_domains)
        self.test_domains = list(test_domains)
        missing = [d for d in self.train_domains + self.test_domains if d not in batches]
        if missing:
            raise ValueError(
                f"no data for domain {missing[0]!r}; batches has {', '.join(map(str, batches))}"
            )
        self.train_batches = {d: batches[d] for d in self.train_domains}
        self.test_batches = {d: batches[d] for d in self.test_domains}
        X0 = next(iter(batches.values()))[0]
        self.model_spec = _model_spec(config, batches)
        # initialise on CPU with a private RNG stream: same weights on every device, and the
        # caller's global RNG is left untouched
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = build_model(self.model_spec)
        self.model = model.to(device=X0.device, dtype=X0.dtype).train()
        self.loss_func = build_loss(config.loss)
        self.penalties = Penalties(
            self.model,
            self.loss_func,
            self.train_domains,
            distance=config.distance,
            ema=config.ema,
            algorithm=algorithm,
        )
        self.optimizer = self._new_optimizer()
        self.step = 0
        self.rows: list[dict[str, float]] = []

    def _new_optimizer(self) -> torch.optim.Adam:
        return torch.optim.Adam(self.model.parameters(), lr=self.config.lr)

    # ---- the objective ----------------------------------------------------------------

    def objective(self, step: int, log_all: bool | None = None):
        """The objective at the current weights for update ``step``.

        Returns:
            ``(loss, row)``: the differentiable loss (already divided by ``λ_t`` when the
            script schedule says so) and the history row (floats).
        """
        cfg = self.config
        log_all = cfg.log_all if log_all is None else log_all
        weight = cfg.penalty_weight_at(self.algorithm, step)
        try:
            out = self.penalties(self.train_batches, self.algorithm, log_all=log_all, step=step)
        except _PenaltyNonFinite as err:
            where = "in the penalty" if err.domain is None else f"in domain {err.domain!r}"
            self._raise_non_finite(step, err.domain, where)
        risk = torch.stack([out.risks[d] for d in self.train_domains]).mean()
        weight_norm = torch.stack([p.square().sum() for p in self.model.parameters()]).sum()
        loss = risk + cfg.l2 * weight_norm
        penalty = out.penalty
        if weight != 0:
            loss = loss + weight * penalty
        if cfg.schedule == "script" and weight > 1:
            loss = loss / weight

        row: dict[str, float] = {
            "step": float(step),
            "penalty_weight": weight,
            "loss": float(loss.detach()),
            "risk": float(risk.detach()),
            "weight_norm": float(weight_norm.detach()),
            "penalty": float(torch.as_tensor(penalty).detach()),
        }
        for d in self.train_domains:
            row[f"loss/{d}"] = float(out.risks[d].detach())
            row[f"acc/{d}"] = float(out.accuracies[d])
        with torch.no_grad():
            for d, (X, y) in self.test_batches.items():
                logits = self.model(X)
                row[f"loss/{d}"] = float(self.loss_func(logits, y))
                row[f"acc/{d}"] = float(accuracy(logits, y))
        for name, value in out.logged.items():
            row[f"penalty/{name}"] = float(value)
        return loss, row

    def _raise_non_finite(self, step: int, domain: str | None, where: str) -> None:
        raise NonFiniteLossError(
            f"non-finite loss {where} (algorithm {self.algorithm!r}, restart {self.restart}, "
            f"step {step}); lower the learning rate (--lr) or the penalty weight "
            "(--penalty-weight), or check the data for NaN / inf",
            domain=domain,
        ) from None

    def _check_finite(self, row: dict[str, float], step: int) -> None:
        # the risks and the penalty itself were checked by Penalties
        if math.isfinite(row["loss"]):
            return
        if not math.isfinite(row["weight_norm"]):
            self._raise_non_finite(step, None, "in the weights (their squared norm is not finite)")
        self._raise_non_finite(step, None, "in the total objective (penalty weight × penalty)")

    def train_step(
        self,
        log_all: bool | None = None,
        before_update: Callable[[dict[str, float]], None] | None = None,
    ) -> dict[str, float]:
        """One Adam update of the full-batch objective; returns the row at ``θ_t`` (before it).

        Args:
            log_all: override ``config.log_all`` for this step.
            before_update: called with the row while the weights are still ``θ_t`` (used to
                save the checkpoint of step ``t``).

        Raises:
            NonFiniteLossError: the objective is NaN or infinite (checked before the update).
        """
        t = self.step
        if t >= self.config.steps:
            raise ValueError(f"the run is finished ({self.config.steps} steps done)")
        if self.config.resets_optimizer_at(self.algorithm, t):
            self.optimizer = self._new_optimizer()
        loss, row = self.objective(t, log_all)
        self._check_finite(row, t)
        if before_update is not None:
            before_update(row)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step = t + 1
        self.rows.append(row)
        return row

    def evaluate(self) -> dict[str, float]:
        """The history row of the current weights (no update; Fishr's EMA state is kept)."""
        saved = copy.deepcopy(self.penalties.state_dict())
        _, row = self.objective(self.step)
        self.penalties.load_state_dict(saved)
        self.model.zero_grad(set_to_none=True)
        return row

    # ---- files ------------------------------------------------------------------------

    def metadata(self, row: dict[str, float], data_spec: dict) -> dict[str, Any]:
        """Checkpoint metadata for the current weights, whose history row is ``row``."""
        return {
            "algorithm": self.algorithm,
            "hyperparameters": self.config.to_dict(),
            "data": data_spec,
            "loss": self.config.loss,
            "dtype": self.config.dtype,
            "train_domains": self.train_domains,
            "test_domains": self.test_domains,
            "seed": self.seed,
            "restart": self.restart,
            "step": int(row["step"]),
            "penalty_weight": row["penalty_weight"],
            "accuracies": {d: row[f"acc/{d}"] for d in self.train_domains + self.test_domains},
            "losses": {d: row[f"loss/{d}"] for d in self.train_domains + self.test_domains},
        }

    def state_tensors(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Everything needed to continue bit-identically: ``(tensors, metadata)``."""
        tensors: dict[str, Tensor] = {}
        for k, v in self.model.state_dict().items():
            tensors[f"model/{k}"] = v
        opt = self.optimizer.state_dict()
        state_keys: dict[str, list[str]] = {}
        for idx, state in opt["state"].items():
            state_keys[str(idx)] = []
            for key, value in state.items():
                if not isinstance(value, Tensor):
                    raise TypeError(f"unexpected non-tensor Adam state {key!r}")
                tensors[f"optim/{idx}/{key}"] = value
                state_keys[str(idx)].append(key)
        for k, v in self.penalties.state_dict().items():
            tensors[f"penalties/{k}"] = v
        columns = list(self.rows[0]) if self.rows else []
        if self.rows:
            tensors["history"] = torch.tensor(
                [[r.get(c, math.nan) for c in columns] for r in self.rows], dtype=torch.float64
            )
        meta = {
            "format": STATE_FORMAT,
            "algorithm": self.algorithm,
            "restart": self.restart,
            "seed": self.seed,
            "step": self.step,
            "config": self.config.to_dict(),
            "model_spec": self.model_spec,
            "optim_param_groups": opt["param_groups"],
            "optim_state_keys": state_keys,
            "history_columns": columns,
        }
        return tensors, meta

    def load_state(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        """Restore a state written by :meth:`state_tensors`."""
        if meta.get("format") != STATE_FORMAT:
            raise ValueError("not a landscape training state file")
        if meta["algorithm"] != self.algorithm or meta["restart"] != self.restart:
            raise ValueError(
                f"state of {meta['algorithm']} restart {meta['restart']}, expected "
                f"{self.algorithm} restart {self.restart}"
            )
        device = next(self.model.parameters()).device

        def part(prefix: str) -> dict[str, Tensor]:
            n = len(prefix)
            return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix)}

        self.model.load_state_dict({k: v.to(device) for k, v in part("model/").items()})
        groups = []
        for g in meta["optim_param_groups"]:
            g = dict(g)
            if "betas" in g:
                g["betas"] = tuple(g["betas"])
            groups.append(g)
        state = {
            int(idx): {key: tensors[f"optim/{idx}/{key}"] for key in keys}
            for idx, keys in meta["optim_state_keys"].items()
        }
        self.optimizer = self._new_optimizer()
        self.optimizer.load_state_dict({"state": state, "param_groups": groups})
        pen = part("penalties/")
        self.penalties.load_state_dict({k: v.to(device) for k, v in pen.items()})
        self.step = int(meta["step"])
        columns = meta["history_columns"]
        if "history" in tensors:
            self.rows = [
                dict(zip(columns, map(float, r), strict=True)) for r in tensors["history"].tolist()
            ]
        else:
            self.rows = []


# --------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------


@dataclass
class RunResults(SavedResult):
    """Final accuracies of a run folder and their mean ± std over restarts (percent).

    Attributes:
        config: the :class:`TrainConfig` as a dict.
        train_domains, test_domains: domain names.
        seeds: ``{algorithm: [seed of restart 0, 1, ...]}``.
        final: ``{algorithm: {column: [value per restart]}}`` with the columns of the final
            history row (``acc/<domain>``, ``loss/<domain>``, penalties, ...).
        table: ``{algorithm: {column title: [mean, std]}}`` in percent; ``"Train acc."`` is
            the mean over the training domains, then one column per test domain. The std is
            the population std over restarts (``ddof=0``, as the Colored MNIST script).
        out_dir: the run folder.
    """

    config: dict
    train_domains: list
    test_domains: list
    seeds: dict
    final: dict
    table: dict
    out_dir: str = ""

    @classmethod
    def from_final(
        cls,
        config: TrainConfig,
        train_domains: Sequence[str],
        test_domains: Sequence[str],
        final_rows: Mapping[str, Sequence[dict[str, float]]],
        seeds: Mapping[str, Sequence[int]],
        out_dir: str = "",
    ) -> RunResults:
        """Aggregate the final rows ``{algorithm: [row of restart 0, 1, ...]}``."""
        final: dict[str, dict[str, list[float]]] = {}
        table: dict[str, dict[str, list[float]]] = {}
        for algo, rows in final_rows.items():
            final[algo] = {c: [float(r.get(c, math.nan)) for r in rows] for c in rows[0]}
            train_acc = np.mean([[r[f"acc/{d}"] for d in train_domains] for r in rows], axis=1)
            columns = {"Train acc.": train_acc}
            for d in test_domains:
                columns[TEST_COLUMN_TITLES.get(d, f"{d} acc.")] = np.array(
                    [r[f"acc/{d}"] for r in rows]
                )
            table[algo] = {
                title: [float(100 * v.mean()), float(100 * v.std())] for title, v in columns.items()
            }
        return cls(
            config=config.to_dict(),
            train_domains=list(train_domains),
            test_domains=list(test_domains),
            seeds={a: [int(s) for s in v] for a, v in seeds.items()},
            final=final,
            table=table,
            out_dir=str(out_dir),
        )

    def markdown(self, digits: int = 1) -> str:
        """The table in Markdown, ``mean ± std`` in percent, one row per algorithm."""
        if not self.table:
            return "(no finished run)\n"
        titles = list(next(iter(self.table.values())))
        restarts = {a: len(v) for a, v in self.seeds.items()}
        lines = [
            "| Method | " + " | ".join(titles) + " | Restarts |",
            "|---|" + "---|" * len(titles) + "---|",
        ]
        for algo, cols in self.table.items():
            cells = [f"{m:.{digits}f} ± {s:.{digits}f}" for m, s in (cols[t] for t in titles)]
            name = DISPLAY_NAMES.get(algo, algo)
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {restarts.get(algo, 0)} |")
        return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# the run folder
# --------------------------------------------------------------------------------------


def run_dir(out_dir: str | os.PathLike, algorithm: str, restart: int) -> Path:
    """Folder of one (algorithm, restart) inside a run folder."""
    return Path(out_dir) / algorithm / f"restart_{restart}"


def checkpoint_path(out_dir: str | os.PathLike, algorithm: str, restart: int, step: int) -> Path:
    """Path of the checkpoint of ``step`` (weights after ``step`` updates)."""
    return run_dir(out_dir, algorithm, restart) / "checkpoints" / f"step_{step:05d}.safetensors"


def write_history(path: str | os.PathLike, rows: Sequence[dict[str, float]]) -> None:
    """Write history rows to CSV atomically (``step`` as an integer, floats at full precision)."""
    buffer = io.StringIO()
    if rows:
        columns = list(rows[0])
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for r in rows:
            writer.writerow(
                [int(r[c]) if c == "step" else repr(float(r.get(c, math.nan))) for c in columns]
            )
    text = buffer.getvalue()
    atomic_write(path, lambda f: f.write(text), binary=False)


def read_history(path: str | os.PathLike) -> list[dict[str, float]]:
    """Read a ``history.csv`` back as a list of ``{column: float}`` rows."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    with path.open(newline="") as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def _check_same_config(out_dir: Path, config: TrainConfig) -> None:
    stored = read_json(out_dir / "config.json")
    current = config.to_dict()
    for key in sorted(set(stored) | set(current)):
        if key in RESUME_FREE_KEYS:
            continue
        old, new = stored.get(key, "<missing>"), current.get(key, "<missing>")
        if old != new:
            raise ValueError(
                f"{out_dir} holds a run with another configuration: {key} is {old!r} there and "
                f"{new!r} now; pass the same settings to resume, or choose another output folder"
            )


def _resolve_domains(config: TrainConfig, names: Sequence[str]) -> tuple[list[str], list[str]]:
    names = list(names)
    train_domains = config.train_domains
    if train_domains is None:
        if config.data is None:
            from landscape.data import TRAIN_DOMAINS

            train_domains = list(TRAIN_DOMAINS)
        else:
            test = set(config.test_domains or [])
            train_domains = [n for n in names if n not in test]
    test_domains = config.test_domains
    if test_domains is None:
        test_domains = [n for n in names if n not in train_domains]
    for d in list(train_domains) + list(test_domains):
        if d not in names:
            raise ValueError(f"unknown domain {d!r}; the data has {', '.join(names)}")
    if not train_domains:
        raise ValueError("no training domain left; set train_domains")
    return list(train_domains), list(test_domains)


def train(
    config: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    progress: bool = True,
    resume: bool = True,
    data_dir: str | os.PathLike | None = None,
    callback: Callable[[Trainer, dict[str, float]], None] | None = None,
) -> RunResults:
    """Train every algorithm of ``config`` for ``config.restarts`` restarts into ``out_dir``.

    Args:
        config: the settings (the defaults reproduce the Colored MNIST protocol).
        out_dir: the run folder (see the module docstring for its layout).
        progress: show a tqdm bar over all steps of all runs.
        resume: continue what ``out_dir`` holds: finished (algorithm, restart) pairs are
            skipped, interrupted ones continue from their last state (bit-identical to an
            uninterrupted run on the same device). ``False`` starts every pair over.
        data_dir: where the MNIST cache lives (see :mod:`landscape.data.mnist`).
        callback: called as ``callback(trainer, row)`` after every update (an exception
            raised there interrupts the run like a crash would).

    Returns:
        The :class:`RunResults`, also saved as ``out_dir/results.{json,npz}`` and
        ``out_dir/results.md``.

    Raises:
        ValueError: ``out_dir`` holds a run with another configuration (the message names
            the differing key), a domain is unknown, or the loss became non-finite
            (:class:`NonFiniteLossError`).
    """
    from landscape.data import build_domains

    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    config.validate()
    out_dir = Path(out_dir)
    if resume and (out_dir / "config.json").is_file():
        _check_same_config(out_dir, config)
    device = resolve_device(config.device)
    dtype = config.torch_dtype

    def restart_data(k: int):
        spec = config.data_spec(k)
        domains = build_domains(spec, data_dir=data_dir, device=device, dtype=dtype)
        train_domains, test_domains = _resolve_domains(config, list(domains))
        names = train_domains + test_domains
        batches = _full_batches({d: domains[d] for d in names}, device, dtype)
        return spec, batches, train_domains, test_domains

    spec, batches, train_domains, test_domains = restart_data(0)
    loaded = 0  # the restart whose data `batches` holds
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "config.json", config.to_dict())

    total = len(config.algorithms) * config.restarts * config.steps
    final_rows: dict[str, list[dict[str, float]]] = {}
    seeds: dict[str, list[int]] = {}
    with tqdm(total=total, disable=not progress, unit="step", dynamic_ncols=True) as bar:
        for algo in config.algorithms:
            final_rows[algo], seeds[algo] = [], []
            for k in range(config.restarts):
                bar.set_description(f"{algo} restart {k + 1}/{config.restarts}")
                if config.resample_data and k != loaded:
                    spec, batches, _, _ = restart_data(k)
                    loaded = k
                row = _train_one(
                    config,
                    algo,
                    k,
                    batches,
                    train_domains,
                    test_domains,
                    spec,
                    out_dir,
                    resume=resume,
                    bar=bar,
                    callback=callback,
                )
                final_rows[algo].append(row)
                seeds[algo].append(config.seed + k)
    results = RunResults.from_final(
        config, train_domains, test_domains, final_rows, seeds, out_dir=str(out_dir)
    )
    results.save(out_dir / "results")
    text = results.markdown()
    atomic_write(out_dir / "results.md", lambda f: f.write(text), binary=False)
    return results


def _train_one(
    config,
    algo,
    k,
    batches,
    train_domains,
    test_domains,
    spec,
    out_dir,
    *,
    resume,
    bar,
    callback,
) -> dict[str, float]:
    folder = run_dir(out_dir, algo, k)
    state_file = folder / "state.safetensors"
    if resume and state_file.is_file():
        tensors, meta = load_tensors(state_file)
        if meta.get("finished"):
            bar.update(config.steps)
            return meta["final_row"]
    else:
        tensors = meta = None
        if folder.is_dir():  # start over: remove what an earlier run of this pair wrote
            shutil.rmtree(folder / "checkpoints", ignore_errors=True)
            for name in ("state.safetensors", "history.csv"):
                (folder / name).unlink(missing_ok=True)
    trainer = Trainer(config, algo, k, batches, train_domains, test_domains)
    if meta is not None:
        trainer.load_state(tensors, meta)
        bar.update(trainer.step)

    def save_state(final_row=None):
        tensors, meta = trainer.state_tensors()
        meta["finished"] = final_row is not None
        meta["final_row"] = final_row
        save_tensors(state_file, tensors, meta)
        write_history(folder / "history.csv", trainer.rows + ([final_row] if final_row else []))

    def save_ckpt(row):
        path = checkpoint_path(out_dir, algo, k, int(row["step"]))
        save_checkpoint(path, trainer.model, trainer.metadata(row, spec))

    ckpt_steps = set(config.checkpoint_steps)
    while trainer.step < config.steps:
        # the row of θ_t comes from update t itself: its checkpoint is saved just before
        row = trainer.train_step(before_update=save_ckpt if trainer.step in ckpt_steps else None)
        bar.update(1)
        if trainer.step % 10 == 0 or trainer.step == config.steps:
            shown = {f"acc {d}": f"{row[f'acc/{d}']:.3f}" for d in test_domains[:1]}
            bar.set_postfix(loss=f"{row['loss']:.4g}", **shown)
        if callback is not None:
            callback(trainer, row)
        if trainer.step % config.state_every == 0 and trainer.step < config.steps:
            save_state()
    final = trainer.evaluate()
    save_ckpt(final)
    save_state(final_row=final)
    return final

"""One training run: one algorithm, one restart, full-batch Adam on the objective.

History row ``t`` (``t = 0 .. steps-1``) is measured at the weights ``θ_t`` *before* update
``t`` (it is the forward pass that update uses); :meth:`Trainer.evaluate` gives the row of
the current weights without updating them (the run's last row, ``t = steps``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from landscape import gemm
from landscape.losses import build_loss
from landscape.models import build_model
from landscape.training import state as _state
from landscape.training.colour_split import ColourSplitForward, colour_split
from landscape.training.config import TrainConfig
from landscape.training.objective import Objective, split_batches
from landscape.training.penalties import Penalties, check_algorithm


def model_spec(config: TrainConfig, batches: Mapping[str, tuple[Tensor, Tensor]]) -> dict:
    """The MLP spec of ``config`` for the data ``batches`` (input and output widths)."""
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


def load_linear_weights(model: torch.nn.Module, weights: Sequence[tuple[Tensor, Tensor]]) -> None:
    """Copy ``weights`` ``[(weight [out, in], bias [out]), ...]`` into the ``nn.Linear``
    layers of ``model``, in module order (one pair per layer).

    Raises:
        ValueError: another number of layers or another shape (the message names both).
    """
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    have = [list(m.weight.shape[::-1]) for m in linears]
    given = [list(w.shape[::-1]) for w, _ in weights]
    if have != given or any(
        b.shape != m.bias.shape for (_, b), m in zip(weights, linears, strict=True)
    ):
        raise ValueError(
            f"the initial weights are for linear layers [in, out] {given}, the model has "
            f"{have}; draw them for this model's hidden_dims"
        )
    with torch.no_grad():
        for linear, (weight, bias) in zip(linears, weights, strict=True):
            linear.weight.copy_(weight)
            linear.bias.copy_(bias)


class Trainer:
    """One training run: one algorithm, one restart (seed ``config.seed + restart``, unless
    ``initial_weights`` are given).

    Args:
        config: the run's settings.
        algorithm: one of ``config.algorithms``.
        restart: restart index ``k``.
        batches: ``{domain: (X, y)}`` full batches already on the training device and dtype,
            covering ``train_domains`` and ``test_domains``.
        train_domains, test_domains: domain names (order kept).
        initial_weights: ``[(weight, bias), ...]`` of the model's ``nn.Linear`` layers in
            order, replacing the seeded initialisation: the Colored MNIST script's stream
            draws them (:func:`landscape.data.script_initial_weights`); ``trainer.seed`` is
            then ``config.seed``, the stream's seed.
        split_colours: group each training domain's samples by lit colour channel once and
            compute the first layer as one GEMM per channel when every sample lights one
            channel (Colored MNIST's training domains; an exact reformulation, see
            :mod:`landscape.training.colour_split`), the hidden layers as one Function with
            their biases folded into the products (:mod:`landscape.training.relu_stack`);
            ``False``: the plain forward.

    ``trainer.step`` is the number of updates done; :meth:`train_step` does one more and
    returns its history row; :meth:`evaluate` measures the current weights without updating.
    The test domains are evaluated at the steps :meth:`evaluates_test_at` names (their
    columns are NaN in the other rows). ``trainer.colour_splits`` holds the training domains
    that are colour-split (``{domain: ColourSplit}``, with the permutation applied).

    ``trainer.gemm`` is whose BLAS does the step's matrix products, ``"torch"`` or
    ``"numpy"`` (:func:`landscape.gemm.backend`: fixed per machine, ``$LANDSCAPE_GEMM``
    overrides it); the checkpoints' metadata records it. Both compute the same step up to
    float rounding, so a run resumed on a machine with the other backend continues up to
    rounding (not bit for bit).
    """

    def __init__(
        self,
        config: TrainConfig,
        algorithm: str,
        restart: int,
        batches: Mapping[str, tuple[Tensor, Tensor]],
        train_domains: Sequence[str],
        test_domains: Sequence[str],
        initial_weights: Sequence[tuple[Tensor, Tensor]] | None = None,
        split_colours: bool = True,
    ):
        try:
            check_algorithm(algorithm)
        except ValueError as err:
            raise ValueError(f"{err} or all") from None
        self.config = config
        self.algorithm = algorithm
        self.restart = int(restart)
        self.seed = config.seed + (0 if initial_weights is not None else self.restart)
        self.train_domains = list(train_domains)
        self.test_domains = list(test_domains)
        self.train_batches, self.test_batches = split_batches(
            batches, self.train_domains, self.test_domains
        )
        self.colour_splits = self._split_colours() if split_colours else {}
        self.gemm = gemm.backend()
        X0 = next(iter(batches.values()))[0]
        self.model_spec = model_spec(config, batches)
        # initialise on CPU with a private RNG stream: same weights on every device, and the
        # caller's global RNG is left untouched
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = build_model(self.model_spec)
        if initial_weights is not None:
            load_linear_weights(model, initial_weights)
        self.model = model.to(device=X0.device, dtype=X0.dtype).train()
        self.loss_func = build_loss(config.loss)
        self.penalties = Penalties(
            self.model,
            self.loss_func,
            self.train_domains,
            distance=config.distance,
            ema=config.ema,
            algorithm=algorithm,
            forwards={
                d: ColourSplitForward(self.model, s, self.gemm)
                for d, s in self.colour_splits.items()
            },
        )
        self._protocol = config.protocol
        self._objective = Objective(
            self._protocol, algorithm, self.model, self.loss_func, self.penalties,
            self.train_batches, self.test_batches,
            where=f"algorithm {algorithm!r}, restart {self.restart}",
        )  # fmt: skip
        self.optimizer = self.new_optimizer()
        self.step = 0
        self.rows: list[dict[str, float]] = []

    def _split_colours(self) -> dict:
        """Colour-split the training batches that allow it (replacing them by their sorted
        copies in ``self.train_batches``); ``{domain: ColourSplit}``."""
        splits = {}
        for d, (X, y) in self.train_batches.items():
            split = colour_split(X, y)
            if split is not None:
                splits[d] = split
                self.train_batches[d] = (split.X, split.y)
        return splits

    def evaluates_test_at(self, step: int) -> bool:
        """Whether the row of update ``step`` evaluates the test domains: every
        ``config.eval_every`` steps, at the checkpoint steps and at the last update (the final
        row, :meth:`evaluate`, always does)."""
        config = self.config
        return (
            step % config.eval_every == 0
            or step in config.checkpoint_steps
            or step >= config.steps - 1
        )

    def new_optimizer(self) -> torch.optim.Adam:
        """A fresh Adam on the model's parameters."""
        return torch.optim.Adam(self.model.parameters(), lr=self.config.lr)

    def objective(self, step: int, log_all: bool | None = None):
        """``(loss, row)`` at the current weights for update ``step`` (see
        :class:`landscape.training.objective.Objective`)."""
        return self._objective(step, log_all)

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
        if self._protocol.resets_optimizer_at(self.algorithm, t):
            self.optimizer = self.new_optimizer()
        with gemm.linear_layers_on(self.model, self.gemm):
            loss, row = self._objective(t, log_all, test=self.evaluates_test_at(t))
            self._objective.check_finite(row, t)
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
        with gemm.linear_layers_on(self.model, self.gemm):
            _, row = self._objective(self.step)
        self.penalties.load_state_dict(saved)
        self.model.zero_grad(set_to_none=True)
        return row

    def metadata(self, row: dict[str, float], data_spec: dict) -> dict[str, Any]:
        """Checkpoint metadata for the current weights, whose history row is ``row``."""
        shown = self.train_domains + self.test_domains
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
            "accuracies": {d: row[f"acc/{d}"] for d in shown},
            "losses": {d: row[f"loss/{d}"] for d in shown},
            "gemm": self.gemm,
        }

    def state_tensors(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Everything needed to continue bit-identically (see :mod:`landscape.training.state`)."""
        return _state.state_tensors(self)

    def load_state(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        """Restore a state written by :meth:`state_tensors`."""
        _state.load_state(self, tensors, meta)

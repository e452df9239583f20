"""The step structure of the Fishr authors' Colored MNIST script, rewritten for timing.

The structure of ``coloredmnist/train_coloredmnist.py`` (alexrame/fishr), reimplemented (not
copied) so that the benchmark can time it beside ``landscape train``'s step on the same data:

* the MLP ``2·14·14 -> 390 -> ReLU -> 390 -> ReLU -> 1`` with in-place ReLUs, Xavier-uniform
  weights, zero biases, the head extended by BackPACK and returning ``(features, logits)``;
* every step, one full-batch forward **with gradients** of each of the four environments
  (the two training ones and both test ones), each with its risk, accuracy and IRM penalty;
* for each training environment, BackPACK's ``BatchGrad`` on the head (a second forward of the
  head on the features, a backward with ``create_graph``) and the centered variance of the
  per-sample gradients ``[N, 391]``;
* every penalty every step (IRM, V-REx, Fishr), the weight norm, the selected penalty added
  with the script's schedule, one backward, one Adam update;
* a printed line every 100 steps (``.cpu().numpy()`` of eight values).

One change: the script's ``backward(inputs=head parameters)`` yields no ``grad_batch`` when
the features require grad (BackPACK issue 233, see ENV.md), so the features are passed in
``inputs=`` too, which is what makes the script run on this stack.

The phases are the benchmark's: ``forward`` (the training environments), ``evaluation``
(the test environments: the script evaluates them inside its training forward),
``penalty``, ``backward``, ``optimizer``, ``logging``.

:func:`serve` runs these steps in a worker process of their own, one per request, so that
the script's step sees the memory allocator the official script has (glibc's defaults, or
what ``MALLOC_*`` variables say), not the one ``landscape train`` sets up for itself.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from _phases import Phases
from backpack import backpack, extend
from backpack.extensions import BatchGrad
from torch import nn


class ScriptMLP(nn.Module):
    """The script's network: ``forward`` returns ``(features [N, 390], logits [N, 1])``."""

    def __init__(self, input_dim: int, hidden: int):
        super().__init__()
        first, second = nn.Linear(input_dim, hidden), nn.Linear(hidden, hidden)
        self.classifier = extend(nn.Linear(hidden, 1))
        for layer in (first, second, self.classifier):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.body = nn.Sequential(first, nn.ReLU(True), second, nn.ReLU(True))

    def forward(self, x):
        features = self.body(x.reshape(x.shape[0], -1))
        return features, self.classifier(features)


class ScriptStep:
    """One run of the script's loop on ``envs`` = ``[(X, y)] * 4`` (two training, two test).

    Args:
        envs: the four environments in the script's order, targets ``[N, 1]`` float 0/1.
        algorithm: ``"erm"``, ``"irm"``, ``"vrex"`` or ``"fishr"``.
        seed: initialisation seed.
        lr, l2, penalty_weight, anneal_step: the protocol's hyperparameters.
    """

    def __init__(self, envs, algorithm: str, seed: int = 0, *, lr=4.898536566546834e-4,
                 l2=0.00110794568, penalty_weight=91257.18613115903, anneal_step=190):  # fmt: skip
        self.envs = [{"images": X, "labels": y} for X, y in envs]
        self.algorithm = algorithm
        self.l2, self.penalty_weight, self.anneal_step = l2, penalty_weight, anneal_step
        X0 = envs[0][0]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = ScriptMLP(int(np.prod(X0.shape[1:])), 390)
        self.model = self.model.to(device=X0.device, dtype=X0.dtype)
        self.bce = extend(nn.BCEWithLogitsLoss())
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.step = 0
        self.printed = io.StringIO()

    def _irm(self, logits, y):
        scale = torch.ones((), dtype=logits.dtype, device=logits.device, requires_grad=True)
        risk = nn.functional.binary_cross_entropy_with_logits(logits * scale, y)
        (grad,) = torch.autograd.grad(risk, [scale], create_graph=True)
        return grad.pow(2).sum()

    def _variance(self, features, y):
        head = self.model.classifier
        risk = self.bce(head(features), y)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's "full backward hook" notice
            with backpack(BatchGrad()):
                risk.backward(inputs=[features, *head.parameters()], retain_graph=True,
                              create_graph=True)  # fmt: skip
        out = {}
        for name, p in head.named_parameters():
            g = p.grad_batch.reshape(p.grad_batch.shape[0], -1) * y.shape[0]
            g = g - g.mean(0, keepdim=True)
            out[name] = g.pow(2).mean(0)
        return out

    def __call__(self, phases: Phases) -> None:
        """One step of the script's loop, its phases timed into ``phases``."""
        for i, env in enumerate(self.envs):
            with phases("forward" if i < 2 else "evaluation"):
                features, logits = self.model(env["images"])
                env["nll"] = nn.functional.binary_cross_entropy_with_logits(logits, env["labels"])
                env["acc"] = ((logits > 0).to(logits.dtype) - env["labels"]).abs().lt(1e-2)
                env["acc"] = env["acc"].to(logits.dtype).mean()
            with phases("penalty"):
                env["irm"] = self._irm(logits, env["labels"])
                if i < 2:
                    self.optimizer.zero_grad()
                    env["variance"] = self._variance(features, env["labels"])
        loss = self._loss(phases)
        with phases("backward"):
            self.optimizer.zero_grad()
            loss.backward()
        with phases("optimizer"):
            self.optimizer.step()
        with phases("logging"):
            if self.step % 100 == 0:
                values = [self.train_nll, self.train_acc, self.fishr, self.rex, self.irm,
                          self.envs[2]["acc"], self.envs[3]["acc"]]  # fmt: skip
                shown = [np.array2string(v.detach().cpu().numpy(), precision=5) for v in values]
                print(self.step, *shown, file=self.printed)
        self.step += 1

    def _loss(self, phases: Phases):
        e0, e1 = self.envs[0], self.envs[1]
        with phases("penalty"):
            self.train_nll = torch.stack([e0["nll"], e1["nll"]]).mean()
            self.train_acc = torch.stack([e0["acc"], e1["acc"]]).mean()
            weight_norm = sum(p.norm().pow(2) for p in self.model.parameters())
            loss = self.train_nll + self.l2 * weight_norm
            self.irm = torch.stack([e0["irm"], e1["irm"]]).mean()
            self.rex = (e0["nll"] - e1["nll"]).pow(2)
            v0, v1 = e0["variance"], e1["variance"]
            mean = {k: (v0[k] + v1[k]) / 2 for k in v0}
            self.fishr = sum((v0[k] - mean[k]).pow(2).sum() + (v1[k] - mean[k]).pow(2).sum()
                             for k in sorted(v0))  # fmt: skip
            if self.algorithm != "erm":
                penalty = {"irm": self.irm, "vrex": self.rex, "fishr": self.fishr}[self.algorithm]
                weight = self.penalty_weight if self.step >= self.anneal_step else 1.0
                loss = loss + weight * penalty
                if weight > 1.0:
                    loss = loss / weight
        return loss


#: The script's environments, in its order: the two training ones, then the two test ones.
SCRIPT_ORDER = ("+80%", "+90%", "-90%", "gray")


def load_envs(spec: dict, data_dir, dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The four environments of the data spec ``spec`` as ``(X, y)``, in the script's order."""
    from landscape.data import build_domains
    from landscape.domains import concat

    domains = build_domains(spec, data_dir=data_dir, dtype=dtype)
    return [concat(domains[d]) for d in SCRIPT_ORDER]


def serve(conn, spec: dict, dtype: str, algorithm: str, seed: int, threads: int, data_dir):
    """Worker process: build the environments of ``spec``, then answer every ``"step"``
    received on ``conn`` with one :class:`ScriptStep`, timed (its ``Phases`` row is sent
    back); any other message ends the worker."""
    from landscape.device import set_threads

    set_threads(threads)
    step = ScriptStep(load_envs(spec, data_dir, getattr(torch, dtype)), algorithm, seed=seed)
    conn.send("ready")
    while conn.recv() == "step":
        phases = Phases()
        phases.begin_step()
        step(phases)
        phases.end_step()
        conn.send(phases.steps[-1])

"""Shared pieces of the surface tests: small models, the brute-force loop, snapshots."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn


class ConvBN(nn.Module):
    """A small conv net with batch norm and dropout (first layer is not linear)."""

    def __init__(self, classes=3):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.bn = nn.BatchNorm2d(3)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(3 * 3 * 3, classes)

    def forward(self, x):
        return self.fc(self.drop(torch.relu(self.bn(self.conv(x)))).flatten(1))


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def brute_force(model, loss_func, domains, dirs, alphas, betas, bn_recompute=False):
    """Copy every displaced parameter set into a deep copy of the model and evaluate."""
    net = copy.deepcopy(model)
    params = dict(net.named_parameters())
    origin = dirs.origin or {n: params[n].detach().clone() for n in dirs.names}
    out, acc = {}, {}
    for name, batches in domains.items():
        X = torch.cat([b[0] for b in batches])
        y = torch.cat([b[1] for b in batches])
        L = np.empty((len(alphas), len(betas)))
        A = np.empty_like(L)
        for i, a in enumerate(alphas):
            for j, b in enumerate(betas):
                with torch.no_grad():
                    for n in dirs.names:
                        params[n].copy_(origin[n] + a * dirs.d1[n] + b * dirs.d2[n])
                    if bn_recompute:
                        for m in net.modules():
                            if isinstance(m, nn.BatchNorm2d):
                                m.reset_running_stats()
                                m.momentum = None
                                m.train()
                        for Xb, _ in batches:
                            net(Xb)
                        net.eval()
                    logits = net(X)
                    L[i, j] = float(loss_func(logits, y))
                    if isinstance(loss_func, nn.MSELoss):  # regression: no accuracy
                        A[i, j] = np.nan
                    elif logits.shape[-1] == 1:
                        A[i, j] = float(((logits > 0).to(y.dtype) == y).double().mean())
                    else:
                        A[i, j] = float((logits.argmax(-1) == y).double().mean())
        out[name], acc[name] = L, A
    return out, acc


def snapshot(model):
    return (
        {n: p.detach().clone() for n, p in model.named_parameters()},
        {n: p.requires_grad for n, p in model.named_parameters()},
        {n: m.training for n, m in model.named_modules()},
        {n: b.clone() for n, b in model.named_buffers()},
    )


def assert_untouched(model, snap):
    params, flags, modes, buffers = snap
    after = snapshot(model)
    assert all(torch.equal(params[n], after[0][n]) for n in params)
    assert flags == after[1]
    assert modes == after[2]
    assert all(torch.equal(buffers[n], after[3][n]) for n in buffers)


def equal(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)

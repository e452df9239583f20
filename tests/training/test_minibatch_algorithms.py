"""DomainBed's minibatch algorithms (landscape.training.minibatch.algorithms) against brute
force in float64: per-sample head gradients by a loop over samples with
``torch.autograd.grad``, explicit centering, the moving averages by hand over three steps,
IRM's scale derivative in closed form, V-REx from the risks."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from landscape.training.minibatch import ALGORITHMS, build_algorithm, default_hparams

MLP_HPARAMS = {"mlp_width": 8, "mlp_depth": 3, "mlp_dropout": 0.0}

# (input shape, classes, nonlinear head, samples per domain)
SHAPES = {
    "mlp": ((5,), 3, False, 6),
    "mlp-nonlinear": ((5,), 3, True, 6),
    "cnn28": ((1, 28, 28), 4, False, 3),
}


def make(algorithm, shape="mlp", anneal=1, domains=2, dtype=torch.float64, **extra):
    """An algorithm of ``algorithm`` on a tiny network, its anneal step ``anneal``."""
    input_shape, classes, nonlinear, _ = SHAPES[shape]
    hparams = default_hparams(algorithm, "RotatedMNIST") | MLP_HPARAMS
    hparams["nonlinear_classifier"] = nonlinear
    for key in ("irm_penalty_anneal_iters", "vrex_penalty_anneal_iters", "penalty_anneal_iters"):
        if key in hparams:
            hparams[key] = anneal
    hparams |= {"lr": 1e-2, "irm_lambda": 7.0, "vrex_lambda": 5.0, "lambda": 3.0, "ema": 0.8}
    hparams |= extra
    torch.manual_seed(0)
    algo = build_algorithm(algorithm, input_shape, classes, domains, hparams).to(dtype)
    algo.optimizer = algo.new_optimizer()
    return algo


def batches(shape="mlp", domains=2, seed=1, dtype=torch.float64):
    input_shape, classes, _, n = SHAPES[shape]
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(n, *input_shape, generator=g, dtype=dtype) * (1 + e),
         torch.randint(0, classes, (n,), generator=g))
        for e in range(domains)
    ]  # fmt: skip


def grads(net):
    return [p.grad.clone() for p in net.parameters()]


def close(a, b, rtol=1e-8, atol=1e-12):
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------- references


def ref_fishr(net, minibatches, m_prev, ema, weight):
    """(objective, nll, penalty, new averages [E, D]) by a loop over samples."""
    x = torch.cat([x for x, _ in minibatches])
    y = torch.cat([y for _, y in minibatches])
    z = net.featurizer(x)
    nll = F.cross_entropy(net.classifier(z), y)
    head = list(net.classifier.parameters())
    v_hat, m_new, start = [], [], 0
    for e, (xe, _) in enumerate(minibatches):
        per_sample = []
        for i in range(start, start + xe.shape[0]):
            loss_i = F.cross_entropy(net.classifier(z[i : i + 1]), y[i : i + 1])
            g = torch.autograd.grad(loss_i, head, create_graph=True)
            per_sample.append(torch.cat([t.reshape(-1) for t in g]))
        start += xe.shape[0]
        g = torch.stack(per_sample)
        v = ((g - g.mean(0, keepdim=True)) ** 2).mean(0)
        m = ema * m_prev[e] + (1 - ema) * v
        v_hat.append(m / (1 - ema))
        m_new.append(m.detach())
    v_hat = torch.stack(v_hat)
    penalty = ((v_hat - v_hat.mean(0)) ** 2).mean()
    return nll + weight * penalty, nll, penalty, torch.stack(m_new)


def scale_derivative(z, y):
    """d/ds CE(s z, y) at s = 1, closed form: mean_i (softmax(z_i) . z_i - z_{i, y_i})."""
    return (z.softmax(1) * z).sum(1).sub(z.gather(1, y[:, None])[:, 0]).mean()


def ref_irm(net, minibatches, weight):
    nll, penalty = 0.0, 0.0
    for x, y in minibatches:
        z = net(x)
        nll = nll + F.cross_entropy(z, y)
        penalty = penalty + scale_derivative(z[0::2], y[0::2]) * scale_derivative(z[1::2], y[1::2])
    nll, penalty = nll / len(minibatches), penalty / len(minibatches)
    return nll + weight * penalty, nll, penalty


def ref_vrex(net, minibatches, weight):
    risks = torch.stack([F.cross_entropy(net(x), y) for x, y in minibatches])
    penalty = ((risks - risks.mean()) ** 2).mean()
    return risks.mean() + weight * penalty, risks[-1], penalty


# ----------------------------------------------------------------------------- penalties


@pytest.mark.parametrize("shape", list(SHAPES))
def test_fishr_matches_brute_force_over_three_steps(shape):
    algo = make("fishr", shape, anneal=1, domains=3)
    m = torch.zeros_like(algo.ema_variance)
    for step, weight in enumerate([0.0, 3.0, 3.0]):
        net = copy.deepcopy(algo.network)
        objective, nll, penalty, m = ref_fishr(net, batches(shape, 3, seed=step), m, 0.8, weight)
        want = torch.autograd.grad(objective, list(net.parameters()))
        logged = algo.update(batches(shape, 3, seed=step), step)
        close(grads(algo.network), want)
        torch.testing.assert_close(algo.ema_variance, m, rtol=1e-8, atol=1e-14)
        assert logged["nll"] == pytest.approx(nll.item(), rel=1e-12)
        assert logged["penalty"] == pytest.approx(penalty.item(), rel=1e-8)
        assert logged["loss"] == pytest.approx(objective.item(), rel=1e-10)
        assert penalty.item() > 0


@pytest.mark.parametrize("algorithm", ["irm", "vrex"])
@pytest.mark.parametrize("shape", ["mlp", "mlp-nonlinear"])
def test_irm_vrex_match_closed_forms(algorithm, shape):
    algo = make(algorithm, shape, anneal=1, domains=3)
    reference = ref_irm if algorithm == "irm" else ref_vrex
    lam = 7.0 if algorithm == "irm" else 5.0
    for step, weight in enumerate([1.0, lam, lam]):  # DomainBed's weight 1 before the step T
        net = copy.deepcopy(algo.network)
        objective, nll, penalty = reference(net, batches(shape, 3, seed=step), weight)
        want = torch.autograd.grad(objective, list(net.parameters()))
        logged = algo.update(batches(shape, 3, seed=step), step)
        close(grads(algo.network), want)
        assert logged == pytest.approx(
            {"loss": objective.item(), "nll": nll.item(), "penalty": penalty.item()}, rel=1e-9
        )


@pytest.mark.parametrize("shape", ["mlp-nonlinear", "cnn28"])
def test_erm_is_the_mean_cross_entropy(shape):
    algo = make("erm", shape)
    net = copy.deepcopy(algo.network)
    data = batches(shape)
    loss = F.cross_entropy(net(torch.cat([x for x, _ in data])), torch.cat([y for _, y in data]))
    want = torch.autograd.grad(loss, list(net.parameters()))
    assert algo.update(data, 0) == pytest.approx({"loss": loss.item()}, rel=1e-12)
    close(grads(algo.network), want)


# ----------------------------------------------------------------------------- schedule


@pytest.mark.parametrize(
    "algorithm, before, after", [("irm", 1.0, 7.0), ("vrex", 1.0, 5.0), ("fishr", 0.0, 3.0)]
)
def test_weight_schedule_and_adam_reset(algorithm, before, after):
    algo = make(algorithm, anneal=2, dtype=torch.float32)
    for step in range(4):
        old = algo.optimizer
        logged = algo.update(batches(dtype=torch.float32), step)
        weight = before if step < 2 else after
        if algorithm != "vrex":  # V-REx logs the last domain's risk as nll
            total = logged["nll"] + weight * logged["penalty"]
            assert logged["loss"] == pytest.approx(total, rel=1e-5)
        assert (algo.optimizer is not old) == (step == 2)
        steps = {int(s["step"]) for s in algo.optimizer.state.values()}
        assert steps == ({1} if step == 2 else {step + 1 if step < 2 else step - 1})
    assert int(algo.update_count) == 4


def test_fishr_does_not_reset_adam_when_annealing_at_zero():
    algo = make("fishr", anneal=0, dtype=torch.float32)
    irm = make("irm", anneal=0, dtype=torch.float32)
    old, old_irm = algo.optimizer, irm.optimizer
    algo.update(batches(dtype=torch.float32), 0)
    irm.update(batches(dtype=torch.float32), 0)
    assert algo.optimizer is old and irm.optimizer is not old_irm


# ----------------------------------------------------------------------------- resume


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("saved_after", [2, 3])  # at the anneal step T = 2, and past it
def test_resume_gives_the_same_updates_bit_for_bit(algorithm, saved_after):
    run = make(algorithm, "mlp-nonlinear", anneal=2, dtype=torch.float32)
    for step in range(saved_after):
        run.update(batches("mlp-nonlinear", seed=step, dtype=torch.float32), step)
    model_state = copy.deepcopy(run.state_dict())
    optimizer_state = copy.deepcopy(run.optimizer.state_dict())
    resumed = make(algorithm, "mlp-nonlinear", anneal=2, dtype=torch.float32)
    resumed.load_training_state(model_state, optimizer_state)
    if algorithm == "fishr":
        assert resumed.ema_variance.abs().sum() > 0
        assert torch.equal(resumed.ema_variance, run.ema_variance)
    for step in range(saved_after, 5):
        data = batches("mlp-nonlinear", seed=step, dtype=torch.float32)
        assert run.update(data, step) == resumed.update(data, step)
        for a, b in zip(run.state_dict().values(), resumed.state_dict().values(), strict=True):
            assert torch.equal(a, b)


# ----------------------------------------------------------------------------- misuse


def test_bad_input():
    algo = make("irm", dtype=torch.float32)
    data = batches(dtype=torch.float32)
    with pytest.raises(ValueError, match="has done 0 updates"):
        algo.update(data, 3)
    with pytest.raises(ValueError, match="built for 2 training domains"):
        algo.update(data[:1])
    with pytest.raises(ValueError, match="give every domain >= 2 samples"):
        algo.update([(x[:1], y[:1]) for x, y in data])
    with pytest.raises(ValueError, match="unknown minibatch algorithm 'CORAL'"):
        build_algorithm("CORAL", (5,), 3, 2, {})
    with pytest.raises(ValueError, match=r"Fishr needs the hparams \['ema'\]"):
        build_algorithm("Fishr", (5,), 3, 2, {"lr": 1, "weight_decay": 0, "lambda": 1,
                                              "penalty_anneal_iters": 0} | MLP_HPARAMS)  # fmt: skip
    with pytest.raises(ValueError, match="MLP featurizer needs the hparams"):
        build_algorithm("erm", (5,), 3, 2, default_hparams("erm", "RotatedMNIST"))

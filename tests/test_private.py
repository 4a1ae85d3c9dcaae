"""Differentially private training (liverec.ranker.private): per-list gradients equal the gradients of each list
alone, and one step of Opacus's optimizer on them is the mean of the clipped gradients, computed here by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from liverec.ranker.model import Ranker, RankerShape
from liverec.ranker.private import PrivateSteps, noise_for, per_list_gradients

SHAPE = RankerShape(n_items=12, id_dim=4, text_in=5, text_dim=3, n_dense=6, attention_hidden=5, cross_layers=2,
                    hidden_units=(8,), dropout=0.0)


def _batch(seed: int = 0, b: int = 4, m: int = 3, length: int = 4):
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, SHAPE.n_items, (b, m), generator=g)
    recent = torch.randint(0, SHAPE.n_items, (b, length), generator=g)
    dense = torch.randn(b, m, SHAPE.n_dense, generator=g)
    log_weight = torch.zeros(b, m)
    log_weight[:, 1:] = torch.rand(b, m - 1, generator=g)
    return items, recent, dense, log_weight


def _model(seed: int = 0) -> Ranker:
    torch.manual_seed(seed)
    return Ranker(SHAPE, text_table=np.random.default_rng(seed).normal(size=(SHAPE.n_items, SHAPE.text_in)))


def _one_by_one(model, items, recent, dense, log_weight):
    """Each list's gradient by plain autograd, one list at a time."""
    out = []
    for i in range(len(items)):
        model.zero_grad()
        logits = model(items[i:i + 1], recent[i:i + 1], dense[i:i + 1], lists=True) + log_weight[i:i + 1]
        torch.nn.functional.cross_entropy(logits, torch.zeros(1, dtype=torch.long)).backward()
        out.append({n: p.grad.detach().clone() for n, p in model.named_parameters()})
    return out


def test_per_list_gradients_are_each_lists_own_gradient():
    model = _model()
    batch = _batch()
    got = per_list_gradients(model)(*batch)
    expected = _one_by_one(model, *batch)
    assert set(got) == {n for n, _ in model.named_parameters()}
    for name, g in got.items():
        assert g.shape == (len(batch[0]), *dict(model.named_parameters())[name].shape)
        for i, e in enumerate(expected):
            torch.testing.assert_close(g[i], e[name], rtol=1e-4, atol=1e-6)


def test_a_private_step_without_noise_is_the_mean_of_the_clipped_gradients():
    model, batch, lr, clip = _model(1), _batch(1), 0.1, 0.05
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = _one_by_one(model, *batch)
    # by hand: each list's gradient scaled to L2 norm <= clip over all parameters, summed, divided by the batch
    norms = [float(np.sqrt(sum(float((g ** 2).sum()) for g in gi.values()))) for gi in grads]
    assert min(norms) > clip  # every list is clipped here
    mean = {n: sum(gi[n] * min(1.0, clip / (norm + 1e-6)) for gi, norm in zip(grads, norms, strict=True)) / len(grads)
            for n in before}
    steps = PrivateSteps(model, torch.optim.SGD(model.parameters(), lr=lr), noise_multiplier=0.0, max_grad_norm=clip,
                         batch_size=len(batch[0]), sample_rate=0.01, world=1)
    model.zero_grad()
    steps.step(*batch)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), before[name] - lr * mean[name], rtol=1e-4, atol=1e-6)
    assert steps.steps == 1


def test_the_noise_grows_as_the_budget_shrinks_and_the_accountant_spends_no_more_than_planned():
    sigmas = [noise_for(eps, 1e-5, 0.01, 500) for eps in (1.0, 4.0, 8.0)]
    assert sigmas[0] > sigmas[1] > sigmas[2] > 0
    model = _model(2)
    steps = PrivateSteps(model, torch.optim.SGD(model.parameters(), lr=0.01), noise_multiplier=sigmas[1],
                         max_grad_norm=1.0, batch_size=4, sample_rate=0.01, world=1)
    assert steps.epsilon(1e-5) == 0.0
    for s in range(20):
        steps.step(*_batch(s))
    spent = steps.epsilon(1e-5)
    assert 0 < spent < 4.0  # 20 of the 500 planned steps
    with pytest.raises(ValueError):
        noise_for(0.0, 1e-5, 0.01, 500)


@pytest.mark.slow
def test_train_ranker_with_privacy_spends_its_budget_and_says_so_in_the_registry(demo_pipeline, capsys):
    """ranker.privacy on: two DDP processes through Petastorm train with DP-SGD; the noise was calibrated so that the
    planned steps spend the target epsilon, every planned step ran (2 epochs, no early stop), so the epsilon spent
    is the target's (Opacus's noise search stops within 1% of it); it is logged, tagged on the version and named by
    the promotion gate. A registered model of its own keeps the demo's champion out of it."""
    import mlflow

    from liverec.cli import main
    from tests.conftest import DEMO_DS, cli_args

    settings, name = demo_pipeline, "liverec-ranker-dp-test"
    capsys.readouterr()
    assert main(["run", "train_ranker", *cli_args(settings), "--ds", DEMO_DS, "--set", "ranker.privacy.enabled=true",
                 "--set", "ranker.privacy.target_epsilon=4", "--set", "ranker.epochs=2", "--set", "ranker.patience=5",
                 "--set", f"ranker.registered_model={name}", "--set", "ranker.export_variants=false"]) == 0
    out = capsys.readouterr().out
    client = mlflow.MlflowClient(settings.tracking_uri())
    (version,) = client.search_model_versions(f"name='{name}'")
    run = client.get_run(version.run_id)
    epsilon, params = run.data.metrics["privacy.epsilon"], run.data.params
    assert int(run.data.metrics["privacy.steps"]) == int(params["privacy.planned_steps"]) > 0
    assert 4.0 * 0.97 <= epsilon <= 4.0 and float(params["privacy.noise_multiplier"]) > 0
    assert float(version.tags["privacy.epsilon"]) == pytest.approx(epsilon)
    assert float(version.tags["privacy.delta"]) == settings.ranker.privacy.delta
    assert "trained with DP-SGD: epsilon" in params["promotion.reason"]
    assert "privacy: " in out and "noise_multiplier=" in out, out

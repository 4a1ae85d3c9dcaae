"""Differentially private training of the ranker (DP-SGD), ``ranker.privacy``.

Each step: the gradient of every training list's own loss (one per list, ``torch.func``: ``vmap`` of ``grad`` of a
``functional_call`` of the whole model), then Opacus's ``DPOptimizer`` (``DistributedDPOptimizer`` across DDP
ranks) clips each list's gradient to ``max_grad_norm`` (L2 over every parameter), sums them, adds Gaussian noise of
standard deviation ``noise_multiplier x max_grad_norm`` once per step (on rank 0; the ranks' sums are then
all-reduced) and divides by the global batch; Adam steps on that. Opacus's RDP accountant records every step at
the sampling rate ``q = batch_size x ranks / training lists``; ``noise_multiplier`` is chosen before training
(``noise_for``) so that the planned steps (``ranker.epochs`` x steps per epoch) spend at most
``target_epsilon`` at ``delta``; the epsilon of the steps actually run (early stopping runs fewer) is reported.

Why not Opacus's ``GradSampleModule``: its per-sample gradients come from module hooks, and the ranker's list
path uses the attention's first-layer weight directly (split in four, ``Ranker.forward_lists``) and the cross
network's parameters outside any module's forward, which hooks do not see. ``torch.func`` differentiates the
whole forward per list; what Opacus then does (clip, noise, accounting) is the same.

What the guarantee assumes (docs/privacy.md): the RDP accountant's analysis is for Poisson subsampling (each list
in a batch independently with probability q); the Petastorm feed reads shuffled fixed-size batches from an
endless stream, so the accountant's epsilon is the usual approximation of a shuffled pipeline, not a proof for
it. The unit protected is one training list (one held-out positive of a user with its negatives): a user with
several positives is in several lists, so a user's guarantee is the group guarantee of that many lists. The
validation users' rows choose the best epoch and early stopping without noise. The model's buffers (the
text-embedding table, the dense features' mean and standard deviation) are computed from the training data
without noise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ACCOUNTANT = "rdp"


def noise_for(target_epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """The noise multiplier with which ``steps`` steps at ``sample_rate`` spend at most ``target_epsilon`` at
    ``delta`` (Opacus's RDP accountant)."""
    from opacus.accountants.utils import get_noise_multiplier

    return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta, sample_rate=sample_rate,
                                      steps=steps, accountant=ACCOUNTANT))


def per_list_gradients(model: Any) -> Callable[..., dict[str, Any]]:
    """A function (items (B, M), recent (B, L), dense (B, M, n_dense), log_weight (B, M)) -> {parameter name:
    gradient (B, *shape)}: for each list, the gradient of its own sampled-softmax loss (the positive, column 0,
    against the others; ``log_weight`` added to the logits as in training)."""
    import torch
    from torch.func import functional_call, grad, vmap

    def loss_of_one(params: dict, buffers: dict, items: Any, recent: Any, dense: Any, log_weight: Any) -> Any:
        logits = functional_call(model, {**params, **buffers}, (items[None], recent[None], dense[None]),
                                 {"lists": True})[0] + log_weight
        return -torch.log_softmax(logits, dim=-1)[0]

    per_list = vmap(grad(loss_of_one), in_dims=(None, None, 0, 0, 0, 0), randomness="different")

    def gradients(items: Any, recent: Any, dense: Any, log_weight: Any) -> dict[str, Any]:
        params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        buffers = dict(model.named_buffers())
        return per_list(params, buffers, items, recent, dense, log_weight)

    return gradients


class PrivateSteps:
    """DP-SGD steps for ``model`` with ``optimizer`` (``ranker.privacy``; see the module doc)."""

    def __init__(self, model: Any, optimizer: Any, noise_multiplier: float, max_grad_norm: float, batch_size: int,
                 sample_rate: float, world: int):
        from opacus.accountants import RDPAccountant
        from opacus.optimizers import DistributedDPOptimizer, DPOptimizer

        cls = DistributedDPOptimizer if world > 1 else DPOptimizer
        self.model = model
        self.optimizer = cls(optimizer, noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
                             expected_batch_size=batch_size)
        self.accountant = RDPAccountant()
        self.optimizer.attach_step_hook(self.accountant.get_optimizer_hook_fn(sample_rate=sample_rate))
        self.gradients = per_list_gradients(model)
        self.steps = 0

    def step(self, items: Any, recent: Any, dense: Any, log_weight: Any) -> None:
        """One noisy step on a batch of lists (the tensors of ``per_list_gradients``)."""
        grads = self.gradients(items, recent, dense, log_weight)
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                p.grad_sample = grads[name]
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.steps += 1

    def epsilon(self, delta: float) -> float:
        """The epsilon the steps run so far spend at ``delta``."""
        return float(self.accountant.get_epsilon(delta)) if self.steps else 0.0

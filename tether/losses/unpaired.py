"""Losses for unpaired feedback: each completion is labelled desirable or undesirable on its own.
Letters: B examples.

KTO (Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization", §4.1) scores a
completion by its implicit reward r_θ(x, y) = log π_θ(y|x) − log π_ref(y|x) measured against a reference
point z_ref = KL(π_θ(y'|x) ‖ π_ref(y'|x)), and minimises λ_y − v(x, y) with the Kahneman–Tversky value

    v(x, y) = λ_D·σ(β·(r_θ(x, y) − z_ref))   if y is desirable,
              λ_U·σ(β·(z_ref − r_θ(x, y)))   if y is undesirable.

z_ref is estimated from *mismatched* pairs: completion y' of another example of the batch paired with
prompt x (the caller shifts the completions by one and runs both models on those pairs), averaged over
the batch, clamped at 0 and detached — the paper's estimator, which gives no gradient through z_ref.
"""

from __future__ import annotations

import torch


def kto_reference_point(policy_kl_logps: torch.Tensor, ref_kl_logps: torch.Tensor) -> torch.Tensor:
    """z_ref = max(0, mean_i [log π_θ(y'_i|x_i) − log π_ref(y'_i|x_i)]), detached; a scalar.

    policy_kl_logps, ref_kl_logps: (B,) log-probs of mismatched completions y'_i under each model.
    Under data parallelism, average the mean over processes before clamping.
    """
    return (policy_kl_logps - ref_kl_logps).mean().clamp(min=0.0).detach()


def kto_loss(
    *,
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    labels: torch.Tensor,
    policy_kl_logps: torch.Tensor,
    ref_kl_logps: torch.Tensor,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-example KTO loss λ_y − v(x, y): λ_D·(1 − σ(β·(r − z_ref))) for desirable examples and
    λ_U·(1 − σ(β·(z_ref − r))) for undesirable ones. Ethayarajh et al. 2024, §4.1 (the KTO loss and the
    z_ref estimate).

    policy_logps, ref_logps: (B,) summed response log-probs log π_θ(y|x), log π_ref(y|x).
    labels: (B,) bool, True = desirable.
    policy_kl_logps, ref_kl_logps: (B,) log-probs of mismatched prompt–completion pairs (x_i, y'_i).
    desirable_weight, undesirable_weight: λ_D, λ_U; the paper keeps λ_D·n_D / (λ_U·n_U) in [1, 4/3].
    """
    labels = labels.bool()
    z_ref = kto_reference_point(policy_kl_logps, ref_kl_logps)
    logratio = policy_logps - ref_logps  # (B,) r_θ(x, y)
    desirable_loss = desirable_weight * (1.0 - torch.sigmoid(beta * (logratio - z_ref)))
    undesirable_loss = undesirable_weight * (1.0 - torch.sigmoid(beta * (z_ref - logratio)))
    loss = torch.where(labels, desirable_loss, undesirable_loss)  # (B,)

    rewards = beta * logratio.detach()
    n_desirable = labels.sum()
    n_undesirable = (~labels).sum()
    metrics = {
        # means over the examples of each kind; 0 when the batch has none of that kind
        "rewards/chosen": (rewards * labels).sum() / n_desirable.clamp(min=1),
        "rewards/rejected": (rewards * ~labels).sum() / n_undesirable.clamp(min=1),
        "kl": z_ref,
        "count/desirable": n_desirable.float(),
        "count/undesirable": n_undesirable.float(),
    }
    return loss, metrics

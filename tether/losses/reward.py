"""Bradley–Terry loss for training a scalar reward model on preference pairs. Letters: B pairs.

Under the Bradley–Terry model (Bradley & Terry 1952) the probability that y_w is preferred to y_l for a
prompt x is σ(r(x, y_w) − r(x, y_l)); fitting r by maximum likelihood gives the loss
−log σ(r_w − r_l) (Rafailov et al. 2023, "Direct Preference Optimization", Eq. 1–2; Ouyang et al. 2022,
InstructGPT, Eq. 1; the lecture slides write the same objective). Its gradient is
∂/∂r_w = −σ(r_l − r_w) and ∂/∂r_l = +σ(r_l − r_w): a pair the model already ranks right by a wide margin
contributes little.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    margin: torch.Tensor | None = None,
    center_coef: float = 0.0,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-pair Bradley–Terry loss −log σ(r_w − r_l − m) + c·(r_w + r_l)², optionally weighted.

    - ``margin`` m (B,): the pair must be won by at least m; Touvron et al. 2023 (Llama 2), Eq. 2.
    - ``center_coef`` c: the loss only sees reward differences, so the reward's offset drifts freely;
      c·(r_w + r_l)² pins the mean reward near 0 (Eisenstein et al. 2023, "Helping or Herding? Reward
      Model Ensembles Mitigate but do not Eliminate Reward Hacking", §3, auxiliary centering loss).
    - ``weights`` (B,): multiply each pair's loss, e.g. 1 / C(K, 2) for the pairs of a K-way ranking so
      that each prompt counts once (Ouyang et al. 2022, Eq. 1 scales the C(K, 2) pairs of one prompt by
      1 / C(K, 2)). Reduce with ``loss.sum() / weights.sum()`` to average over prompts.

    chosen_rewards, rejected_rewards: (B,) scalar rewards r(x, y_w), r(x, y_l).
    Returns the per-pair loss (B,) and detached batch-mean metrics (accuracy and margin ignore weights).
    """
    reward_margin = chosen_rewards - rejected_rewards  # (B,)
    logits = reward_margin if margin is None else reward_margin - margin
    loss = -F.logsigmoid(logits)  # (B,)
    if center_coef != 0.0:
        loss = loss + center_coef * (chosen_rewards + rejected_rewards) ** 2
    if weights is not None:
        loss = loss * weights

    detached_margin = reward_margin.detach()
    metrics = {
        "rewards/accuracies": (detached_margin > 0).float().mean(),
        "rewards/margins": detached_margin.mean(),
        "rewards/chosen": chosen_rewards.detach().mean(),
        "rewards/rejected": rejected_rewards.detach().mean(),
    }
    return loss, metrics

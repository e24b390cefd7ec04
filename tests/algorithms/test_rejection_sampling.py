import math

import torch

from tether.algorithms.rejection_sampling import best_of_n
from tether.eval.aggregate import best_of_n_kl
from tether.judges import FunctionJudge


def exact_best_of_n_kl(k: int, n: int) -> float:
    """KL(best-of-n ‖ uniform over k outcomes with distinct rewards), by enumeration: the i-th best outcome
    (ranked from the worst, i = 1..k) is the max of n draws with probability (i/k)^n − ((i−1)/k)^n."""
    kl = 0.0
    for i in range(1, k + 1):
        p = (i / k) ** n - ((i - 1) / k) ** n
        if p > 0:
            kl += p * math.log(p * k)
    return kl


def test_analytic_kl_matches_enumeration_and_sampling():
    assert best_of_n_kl(1) == 0.0
    assert abs(best_of_n_kl(4) - (math.log(4) - 3 / 4)) < 1e-12
    for n in (2, 4, 16):
        # With many distinct outcomes the exact KL approaches the formula from below.
        exact = exact_best_of_n_kl(100_000, n)
        assert exact <= best_of_n_kl(n) + 1e-9
        assert abs(exact - best_of_n_kl(n)) < 1e-3
    # Monte Carlo: draw n of 1000 outcomes, keep the max, estimate KL from the empirical frequencies.
    generator = torch.Generator().manual_seed(0)
    k, n, draws = 1000, 4, 400_000
    best = torch.randint(k, (draws, n), generator=generator).max(-1).values
    frequency = torch.bincount(best, minlength=k).double() / draws
    seen = frequency > 0
    measured = float((frequency[seen] * torch.log(frequency[seen] * k)).sum())
    assert abs(measured - best_of_n_kl(n)) < 0.03


def test_best_of_n_keeps_the_judges_favourite(make_model, tokenizer):
    torch.manual_seed(0)
    judge = FunctionJudge(lambda prompt, completion: -abs(len(completion) - 10), batched=False)
    best, best_scores, mean_scores = best_of_n(
        make_model(), tokenizer, judge, ["review the lid."] * 2, n=5, max_new_tokens=6
    )
    assert len(best) == 2
    for completion, score, mean in zip(best, best_scores, mean_scores):
        assert score == -abs(len(completion) - 10) and score >= mean

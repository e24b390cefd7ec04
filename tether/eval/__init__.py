"""Metrics across runs: response log-likelihood, task success of generated answers, and (later) gold
reward, win rate and KL to the reference."""

"""Metrics across runs: response log-likelihood and task success of generated answers (``instruct``), gold
and proxy reward and KL to the reference (``policy``), win rate (``metrics``), reward-model and judge
agreement (``reward``, ``judge``), and multi-turn episodes (``episodes``); the evaluation commands built on
them (``commands``: ``tether evaluate``, ``score``, ``judge-agreement``, ``compare``)."""

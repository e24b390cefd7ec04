"""Pure loss functions (layer 2), one module per family: ``reward`` (Bradley–Terry), ``preference`` (the DPO
family registry; its reference-free members in ``reference_free``), ``unpaired`` (KTO), ``lm`` (next-token
NLL), ``policy`` (REINFORCE, PPO-clip, value, entropy, the KL loss term), ``variants`` (GSPO, DAPO,
truncated importance sampling), ``distribution`` (DPG, BRAIn) and ``nash`` (Nash-MD); docs/architecture.md
maps each equation to its function.

Every loss takes plain tensors and floats, returns a per-example loss plus a dict of detached metrics, and
cites its paper and equation in the docstring. Letters: B batch.
"""

"""Pure loss functions (layer 2), one module per family: ``reward`` (Bradley–Terry), ``preference`` (the DPO
family registry), ``unpaired`` (KTO), and the others listed in shared/DESIGN.md.

Every loss takes plain tensors and floats, returns a per-example loss plus a dict of detached metrics, and
cites its paper and equation in the docstring. Letters: B batch.
"""

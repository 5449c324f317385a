"""Benchmarks: the studio's training loop against a bare PyTorch + PEFT loop on the same model,
adapter, batch and data. `python -m bench` (CPU, tiny SD 1.5) or `python -m bench --gpu`.

Kept free of imports so that `python -m bench.bare` starts as lean as a plain script.
"""

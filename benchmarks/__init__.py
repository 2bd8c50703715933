"""Benchmarks of contrastkit against its peers (not part of the installed package).

``python -m benchmarks.losses`` (or ``contrastkit bench`` from a checkout) times the
InfoNCE-family losses against pytorch-metric-learning, lightly, open_clip, info-nce-pytorch,
a plain PyTorch reference and the matmul floor, and writes ``docs/benchmarks.md``.
"""

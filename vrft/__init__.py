"""vrft: Visual Reinforcement Fine-Tuning (Visual-RFT, arXiv 2503.01785) as a reproducible pipeline.

The library is plain Python: each stage is one function with a dataclass config (``vrft.data``,
``vrft.train``, ``vrft.evaluate``, ``vrft.report``), called alike by tests, the CLI and the Kubeflow
components. Rewards live in :mod:`vrft.rewards`, completion parsing in :mod:`vrft.answers`, prompts
in :mod:`vrft.prompts` and coordinate conventions in :mod:`vrft.models.coords`.
"""

__version__ = "0.1.0"

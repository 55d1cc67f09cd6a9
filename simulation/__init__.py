"""Simulated users with a known ("gold") preference, for measuring whether the feedback loop improves
the model (Gao et al. 2022, "Scaling laws for reward model overoptimization"; the DPO paper's controlled
sentiment generation).

- ``tasks``: the prompt sets (data files in ``simulation/tasks/loop_*.jsonl``) and their fixed
  train / held-out split.
- ``oracles``: gold rewards (VADER sentiment; concise answers that contain the requested fact).
- ``labelers``: Bradley-Terry / Plackett-Luce labelers that turn a gold reward into noisy thumbs,
  A/B votes and K-rankings.
- ``users``: simulated users driving the product through the same calls as the Chat, Compare and
  Rank tabs (``ModelService`` + ``FeedbackStore`` + ``feedback_store.feedback``).
- ``measure``: what a round is judged by on held-out prompts (gold, win rate against the base, KL to
  the base, the reward model's proxy score, capability on factual questions).
- ``rounds``: the round bookkeeping and the loop (feedback -> scheduler cycle -> gate -> deploy).
- ``plots``: gold reward against KL per method, proxy against gold.

``python -m simulation`` is the command (``simulation.cli``; ``python -m benchmarks.loop`` is the same
with ``--quick``); the Dashboard runs it and shows its latest plot.
"""

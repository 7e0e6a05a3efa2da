"""Evaluation: judges behind one protocol, suites of prompts, metrics with intervals, and the
policy and reward-model measures the stages report.

- ``judge``: the ``Judge`` protocol and its ``Verdict``; ``get_judge`` by name;
- ``suites``: a prompt set with its judge (``sandbox_heldout``);
- ``metrics``: ``policy_metrics`` (the ``metrics.gold`` record, with 95% intervals), ``mean_ci``;
- ``policy``: ``evaluate_policy``, ``win_rate``, ``kl_to_reference``, ``greedy_reward``;
- ``reward``: ``verify_answers``, whether a helpfulness reward model checks answers.
"""

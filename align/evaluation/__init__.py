"""Evaluation: judges behind one protocol, suites of prompts, metrics with intervals, and the
policy and reward-model measures the stages report.

- ``judge``: the ``Judge`` protocol and its ``Verdict``; ``get_judge`` by name; ``judge_all`` (batched);
- ``refusal``, ``rm_judge``, ``llm_judge``: the judges for real prompt sets (a refusal classifier
  validated on human labels, a campaign's reward models, a local LM rater); the sandbox's gold judges
  are ``align.sandbox.judges``;
- ``suites``: evaluation suites (``eval/*.yaml``): prompts, expected behaviour, judges, metrics;
- ``evaluate``: a policy on a suite (resumable generation, every judge, the metric record);
- ``metrics``: ``policy_metrics`` (the ``metrics.gold`` record), suite metrics with Wilson intervals,
  judge agreement, ``mean_ci``;
- ``policy``: ``evaluate_policy``, ``win_rate``, ``kl_to_reference``, ``greedy_reward``;
- ``reward``: ``verify_answers``, whether a helpfulness reward model checks answers;
- ``judge_file``: judging pairs produced anywhere (``align judge``).
"""

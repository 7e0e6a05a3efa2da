"""right_wrong_auc (bench.ppo_cap, bench.rm_verify): right against wrong answers to the same prompt."""

from align.reward.metrics import right_wrong_auc


def test_pools_right_against_wrong_within_a_prompt():
    groups = [[(True, 2.0, "sort"), (False, 1.0, "sort"), (False, 3.0, "sort")],  # one win, one loss
              [(True, 1.0, "lookup"), (False, 1.0, "lookup")],  # a tie counts one half
              [(True, 5.0, "lookup"), (True, 0.0, "lookup")]]  # no wrong answer: nothing compared
    assert right_wrong_auc(groups) == (0.5, {"lookup": 0.5, "sort": 0.5})
    assert right_wrong_auc([[(True, 3.0, "a"), (False, 1.0, "a"), (False, 2.0, "a")]]) == (1.0, {"a": 1.0})
    assert right_wrong_auc([[(False, 1.0, "a")]]) == (None, {})

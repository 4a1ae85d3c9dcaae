"""liverec.offpolicy: Plackett-Luce propensities and the off-policy estimators, against expectations computed here
independently (plain-Python products, enumeration of every ordered list, arithmetic written out). No Spark."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from liverec import offpolicy as op
from liverec.config import load_settings

SCORES = np.array([0.3, 1.2, -0.5, 0.9])


def pl_probability(scores, shown, temperature) -> float:
    """Probability that PL(scores, temperature) shows ``shown`` first, in that order: a plain-Python product."""
    remaining = list(range(len(scores)))
    prob = 1.0
    for i in shown:
        total = sum(math.exp(scores[j] / temperature) for j in remaining)
        prob *= math.exp(scores[i] / temperature) / total
        remaining.remove(i)
    return prob


@pytest.mark.parametrize("k", [2, 3])
def test_prefix_propensities_are_the_pl_products_and_sum_to_one_over_all_lists(k):
    lists = list(itertools.permutations(range(4), k))
    props = np.array([op.prefix_propensities(SCORES, np.array(lst), 0.7) for lst in lists])
    for lst, row in zip(lists, props, strict=True):
        for p in range(k):
            assert row[p] == pytest.approx(pl_probability(SCORES, lst[:p + 1], 0.7), rel=1e-12)
    assert props[:, -1].sum() == pytest.approx(1.0, abs=1e-12)
    # every shorter prefix is counted once per completion: 4 - p - 1 choices remain after p + 1 items
    for p in range(k - 1):
        assert props[:, p].sum() == pytest.approx(math.prod(range(4 - p - 1, 4 - k, -1)), abs=1e-12)
    # batched: one row per list, the same numbers
    batched = op.prefix_propensities(np.tile(SCORES, (len(lists), 1)), np.array(lists), 0.7)
    np.testing.assert_allclose(batched, props, rtol=1e-12)


def test_sampled_lists_come_in_their_pl_frequencies():
    draws = 30000
    rng = np.random.default_rng(11)
    shown, props = op.sample_lists(np.tile(SCORES, (draws, 1)), 2, 0.7, rng)
    lists = list(itertools.permutations(range(4), 2))
    expected = np.array([pl_probability(SCORES, lst, 0.7) for lst in lists]) * draws
    index = {lst: n for n, lst in enumerate(lists)}
    observed = np.bincount([index[tuple(row)] for row in shown], minlength=len(lists))
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    assert chi2 < 32.9  # chi-square, 11 degrees of freedom: P(> 32.9) = 0.0005 when the sampler is right
    assert len(set(map(tuple, shown))) == 12  # every ordered pair drawn, nothing else
    for row, prop in zip(shown[:50], props[:50], strict=True):  # the propensities returned with the draws
        assert prop[1] == pytest.approx(pl_probability(SCORES, tuple(row), 0.7), rel=1e-12)
        assert prop[0] == pytest.approx(pl_probability(SCORES, tuple(row[:1]), 0.7), rel=1e-12)
    one, one_prop = op.sample_list(SCORES, 3, 0.7, np.random.default_rng(3))
    assert len(set(one.tolist())) == 3 and one_prop[2] == pytest.approx(pl_probability(SCORES, tuple(one), 0.7))


def test_temperature_zero_is_the_greedy_list_with_propensity_one():
    tied = np.array([1.0, 3.0, 3.0, 0.0, 2.0])
    shown, props = op.sample_list(tied, 3, 0.0, np.random.default_rng(0))
    assert shown.tolist() == [1, 2, 4]  # the tie of items 1 and 2 goes to the lower index
    assert props.tolist() == [1.0, 1.0, 1.0]
    # another list under the greedy policy: probability 1 until the first difference, 0 from there on
    assert op.prefix_propensities(tied, [1, 4, 2], 0.0).tolist() == [1.0, 0.0, 0.0]
    assert op.prefix_propensities(tied, [2, 1, 4], 0.0).tolist() == [0.0, 0.0, 0.0]
    # a tiny positive temperature tends to it without overflow (scores / T would be ~1e300)
    near = op.prefix_propensities(SCORES, [1, 3, 0], 1e-300)
    assert near.tolist() == [1.0, 1.0, 1.0]
    assert op.prefix_propensities(SCORES, [3, 1, 0], 1e-300).tolist() == [0.0, 0.0, 0.0]


def test_a_very_large_temperature_is_uniform():
    props = op.prefix_propensities(SCORES * 100, [2, 0, 3], 1e9)
    np.testing.assert_allclose(props, [1 / 4, 1 / (4 * 3), 1 / (4 * 3 * 2)], rtol=1e-6)


def test_expected_reward_at_is_the_sum_over_the_remaining_items():
    q = np.array([0.1, 0.5, 0.05, 0.3])
    t = 0.7
    for prefix in [(), (1,), (1, 3), (2, 0)]:
        remaining = [j for j in range(4) if j not in prefix]
        weights = {j: math.exp(SCORES[j] / t) for j in remaining}
        brute = sum(weights[j] / sum(weights.values()) * q[j] for j in remaining)
        got = op.expected_reward_at(SCORES, q, list(prefix), len(prefix) + 1, t)
        assert got == pytest.approx(brute, rel=1e-12)
        # and by enumeration of the next pick: sum of P(prefix + j) / P(prefix) * q_j
        p_prefix = pl_probability(SCORES, prefix, t)
        enumerated = sum(pl_probability(SCORES, (*prefix, j), t) / p_prefix * q[j] for j in remaining)
        assert got == pytest.approx(enumerated, rel=1e-12)
    assert op.expected_reward_at(SCORES, q, [1], 2, 0.0) == pytest.approx(0.3)  # greedy: item 3 follows item 1
    # the batched form: every position of a list at once, q the same at each position or given per position
    shown = np.array([[1, 3, 0], [2, 0, 1]])
    vec = op.expected_rewards(np.tile(SCORES, (2, 1)), np.tile(q, (2, 1)), shown, t)
    for i in range(2):
        for p in range(3):
            assert vec[i, p] == pytest.approx(op.expected_reward_at(SCORES, q, shown[i], p + 1, t), rel=1e-12)
    per_position = np.stack([np.tile(q, (2, 1)) * f for f in (1.0, 0.5, 0.25)], axis=1)
    np.testing.assert_allclose(op.expected_rewards(np.tile(SCORES, (2, 1)), per_position, shown, t),
                               vec * [1.0, 0.5, 0.25], rtol=1e-12)


# a tiny log: 3 lists, k = 2
R = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
B = np.array([[0.5, 0.25], [0.2, 0.1], [0.4, 0.1]])
E = np.array([[0.25, 0.25], [0.4, 0.05], [0.2, 0.2]])  # weights e / b: [[0.5, 1], [2, 0.5], [0.5, 2]]
ALPHA = np.array([1.0, 0.5])
Q = np.array([[0.6, 0.2], [0.3, 0.4], [0.5, 0.5]])
QBAR = np.array([[0.4, 0.3], [0.5, 0.2], [0.6, 0.1]])


def test_ips_clipped_ips_snips_and_dr_by_hand():
    ips = op.ips(R, B, E, ALPHA)
    assert ips.value == pytest.approx(((1 * 0.5 * 1 + 0.5 * 1.0 * 0) + (1 * 2 * 0 + 0.5 * 0.5 * 1)
                                       + (1 * 0.5 * 1 + 0.5 * 2 * 1)) / 3)  # 0.75
    clipped = op.clipped_ips(R, B, E, 1.0, ALPHA)  # weights [[0.5, 1], [1, 0.5], [0.5, 1]]
    assert clipped.value == pytest.approx(((0.5 + 0) + (0 + 0.5 * 0.5) + (0.5 + 0.5 * 1)) / 3)
    snips = op.snips(R, B, E, ALPHA)
    assert snips.value == pytest.approx(1.0 * (0.5 + 0 + 0.5) / (0.5 + 2 + 0.5)
                                        + 0.5 * (0 + 0.5 + 2) / (1 + 0.5 + 2))
    dr = op.cascade_dr(R, B, E, Q, QBAR, ALPHA)
    list1 = (0.5 * (1 - 0.6) + 1 * 0.4) + 0.5 * (1.0 * (0 - 0.2) + 0.5 * 0.3)
    list2 = (2.0 * (0 - 0.3) + 1 * 0.5) + 0.5 * (0.5 * (1 - 0.4) + 2.0 * 0.2)
    list3 = (0.5 * (1 - 0.5) + 1 * 0.6) + 0.5 * (2.0 * (1 - 0.5) + 0.5 * 0.1)
    assert dr.value == pytest.approx((list1 + list2 + list3) / 3)
    assert dr.value == pytest.approx(2.2 / 3)
    # ESS of the weights, per position: (0.5 + 2 + 0.5)^2 / (0.25 + 4 + 0.25) = 2, (1 + 0.5 + 2)^2 / 5.25
    assert ips.ess_per_position == pytest.approx((2.0, 3.5**2 / 5.25))
    assert ips.ess == pytest.approx(2.0) and dr.ess == pytest.approx(2.0)
    assert clipped.ess_per_position == pytest.approx((2.0**2 / 1.5, 2.5**2 / 2.25))
    for est in (ips, clipped, snips, dr):
        assert est.ci_low <= est.value <= est.ci_high and est.n_lists == 3 and est.confidence == 0.95


def test_the_bootstrap_is_the_resampling_distribution_of_the_lists():
    per_list = np.array([0.5, 0.25, 1.5])  # IPS's per-list terms above
    est = op.ips(R, B, E, ALPHA, n_boot=4000, seed=5)
    # the bootstrap mean of 3 values: its std is the population std / sqrt(3), its range [min, max]
    assert est.boot_std == pytest.approx(per_list.std() / math.sqrt(3), rel=0.05)
    assert 0.25 <= est.ci_low < est.value < est.ci_high <= 1.5
    again = op.ips(R, B, E, ALPHA, n_boot=4000, seed=5)
    assert (again.ci_low, again.ci_high) == (est.ci_low, est.ci_high)
    narrower = op.ips(R, B, E, ALPHA, n_boot=4000, seed=5, confidence=0.5)
    assert est.ci_low <= narrower.ci_low < narrower.ci_high <= est.ci_high


def test_on_policy_ips_is_the_plain_mean_reward():
    rng = np.random.default_rng(2)
    r = (rng.random((500, 4)) < 0.3).astype(float)
    b = rng.uniform(0.01, 1.0, (500, 4))
    est = op.ips(r, b, b.copy())
    assert est.value == pytest.approx(r.sum(axis=1).mean(), rel=1e-12)
    assert est.ess == pytest.approx(500.0)
    assert op.snips(r, b, b.copy()).value == pytest.approx(r.sum(axis=1).mean(), rel=1e-12)


def test_dr_with_a_perfect_reward_model_is_the_true_value_whatever_the_weights():
    # k = 1: rewards deterministic and q = r, so DR = mean of qbar = the target's true expected reward, for any
    # weights at all (here random nonsense)
    rel = np.array([0.9, 0.1, 0.4, 0.7])
    target_scores = np.array([2.0, 0.0, 1.0, -1.0])
    truth1 = sum(pl_probability(target_scores, (j,), 1.0) * rel[j] for j in range(4))
    rng = np.random.default_rng(4)
    shown = rng.integers(0, 4, (50, 1))
    q = rel[shown]
    qbar = op.expected_rewards(np.tile(target_scores, (50, 1)), np.tile(rel, (50, 1)), shown, 1.0)
    b, e = rng.uniform(0.05, 1, (50, 1)), rng.uniform(0.05, 1, (50, 1))
    assert op.cascade_dr(q, b, e, q, qbar).value == pytest.approx(truth1, rel=1e-12)
    # k = 2 on an exact log: behaviour uniform, every ordered pair logged once (the log's frequencies are the
    # behaviour's probabilities). The truth by enumerating the target's lists; the full-list weights never matter
    lists = np.array(list(itertools.permutations(range(4), 2)))
    reward = rel[lists] * [1.0, 0.6]  # position-based: examination 1 and 0.6
    truth2 = sum(pl_probability(target_scores, tuple(lst), 1.0) * (rel[lst[0]] + 0.6 * rel[lst[1]]) for lst in lists)
    scores = np.tile(target_scores, (12, 1))
    b = np.tile([1 / 4, 1 / 12], (12, 1))
    e = op.prefix_propensities(scores, lists, 1.0)
    qbar = op.expected_rewards(scores, np.stack([np.tile(rel, (12, 1)), np.tile(rel * 0.6, (12, 1))], axis=1),
                               lists, 1.0)
    assert op.cascade_dr(reward, b, e, reward, qbar).value == pytest.approx(truth2, rel=1e-12)
    garbage = e.copy()
    garbage[:, 1] = rng.uniform(0, 5, 12)
    assert op.cascade_dr(reward, b, garbage, reward, qbar).value == pytest.approx(truth2, rel=1e-12)
    assert op.ips(reward, b, e).value == pytest.approx(truth2, rel=1e-12)  # the exact log makes IPS exact too
    assert op.ips(reward, b, garbage).value != pytest.approx(truth2, rel=1e-3)  # but IPS needs those weights


def test_estimators_recover_a_known_value_from_a_simulated_log():
    # 6 items, lists of 3, position-based clicks; logging PL(T=1) on one score, target PL(T=0.5) on another
    rel = np.array([0.8, 0.1, 0.5, 0.3, 0.05, 0.6])
    exam = np.array([1.0, 0.5, 0.3])
    behaviour_scores = np.array([0.0, 1.0, 0.5, 0.2, 0.8, -0.3])
    target_scores = np.array([1.5, -0.5, 0.6, 0.2, -1.0, 1.0])
    truth = sum(pl_probability(target_scores / 0.5, lst, 1.0) * float(exam @ rel[list(lst)])
                for lst in itertools.permutations(range(6), 3))
    n = 40000
    rng = np.random.default_rng(8)
    shown, b = op.sample_lists(np.tile(behaviour_scores, (n, 1)), 3, 1.0, rng)
    clicks = (rng.random((n, 3)) < rel[shown] * exam).astype(float)
    e = op.prefix_propensities(np.tile(target_scores, (n, 1)), shown, 0.5)
    q_items = np.tile(rel * 0.8, (n, 1))[:, None, :] * exam[None, :, None]  # a reward model 20% too low
    q = np.take_along_axis(q_items, shown[:, :, None], axis=2)[:, :, 0]
    qbar = op.expected_rewards(np.tile(target_scores, (n, 1)), q_items, shown, 0.5)
    for est in (op.ips(clicks, b, e), op.snips(clicks, b, e), op.cascade_dr(clicks, b, e, q, qbar)):
        assert abs(est.value - truth) < 4 * est.boot_std, est.name
        assert est.boot_std < 0.05 * truth, est.name  # and precise enough that the check above means something
    logging_value = float((rel[shown] * exam).sum(axis=1).mean())
    assert abs(logging_value - truth) > 0.1 * truth  # the target is not the logging policy in disguise
    assert op.clipped_ips(clicks, b, e, 1.0).value < truth  # clipping at 1 drops weight: biased down


def test_obp_reward_interaction_ips_agrees():
    ope = pytest.importorskip("obp.ope")
    n, k = R.shape
    rips = ope.SlateRewardInteractionIPS(len_list=k).estimate_policy_value(
        slate_id=np.repeat(np.arange(n), k), reward=R.ravel(), position=np.tile(np.arange(k), n),
        pscore_cascade=B.ravel(), evaluation_policy_pscore_cascade=E.ravel())
    assert rips == pytest.approx(op.ips(R, B, E).value)


def test_position_weights_and_bad_inputs():
    np.testing.assert_allclose(op.position_weights(3, "dcg"), [1.0, 1 / math.log2(3), 0.5])
    assert op.position_weights(3).tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="position weighting"):
        op.position_weights(3, "ndcg")
    with pytest.raises(ValueError, match="temperature"):
        op.sample_list(SCORES, 2, -1.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="k must be"):
        op.sample_list(SCORES, 5, 1.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="behaviour propensities"):
        op.ips(R, np.zeros_like(B), E)
    with pytest.raises(ValueError, match="alpha"):
        op.ips(R, B, E, np.ones(3))
    with pytest.raises(ValueError, match="confidence"):
        op.snips(R, B, E, confidence=1.0)


def test_feedback_conf_defaults_explore_nothing():
    feedback = load_settings().feedback
    assert feedback.exploration_temperature == 0.0 and feedback.exploration_share == 0.0
    assert (feedback.ope_clip, feedback.ope_bootstrap, feedback.ope_confidence) == (100.0, 200, 0.95)
    assert isinstance(feedback.ope_bootstrap, int) and isinstance(feedback.ope_clip, float)


def test_the_mixture_of_a_fixed_list_and_exploration_sums_to_one_over_all_lists():
    greedy, share, t = np.array([3, 0]), 0.3, 0.7  # a served list that is not the top 2 by score (1, 3)
    lists = list(itertools.permutations(range(4), 2))
    props = {lst: op.mixture_propensities(SCORES, np.array(lst), greedy, t, share) for lst in lists}
    assert sum(p[-1] for p in props.values()) == pytest.approx(1.0, abs=1e-12)
    # by hand: the served list keeps 1 - share on top of its PL probability; another list only its PL share
    assert props[(3, 0)][1] == pytest.approx(0.7 + 0.3 * pl_probability(SCORES, (3, 0), t), rel=1e-12)
    assert props[(3, 1)][0] == pytest.approx(0.7 + 0.3 * pl_probability(SCORES, (3,), t), rel=1e-12)
    assert props[(3, 1)][1] == pytest.approx(0.3 * pl_probability(SCORES, (3, 1), t), rel=1e-12)
    assert props[(1, 3)][0] == pytest.approx(0.3 * pl_probability(SCORES, (1,), t), rel=1e-12)
    np.testing.assert_array_equal(op.mixture_propensities(SCORES, greedy, greedy, t, 0.0), [1.0, 1.0])
    with pytest.raises(ValueError):
        op.mixture_propensities(SCORES, greedy, greedy, t, 1.5)


def test_a_new_rankers_policy_value_on_the_logged_pools_separates_a_better_ranker_from_a_worse_one():
    """The promotion gate's estimate (``ranker_policy_value``): pools of 5 candidates sorted by the champion's noisy
    score (the served list first, as the server logs them), half the answers explored (PL, T=1); a new ranker
    that scores by the true utility is estimated near its closed-form value and above what the log got, one that
    scores by its opposite below it."""
    rng = np.random.default_rng(5)
    n, m, k, exam = 6000, 5, 2, np.array([1.0, 0.5])
    u = rng.normal(size=(n, m))
    z = u + rng.normal(size=(n, m))
    order = np.argsort(-z, axis=1)
    u, z = np.take_along_axis(u, order, axis=1), np.take_along_axis(z, order, axis=1)  # served list first
    rel = 0.5 / (1.0 + np.exp(-2.0 * u))
    shown, b = np.zeros((n, k), dtype=np.int64), np.zeros((n, k))
    for i in range(n):
        shown[i] = np.arange(k) if rng.random() >= 0.5 else op.sample_list(z[i], k, 1.0, rng)[0]
        b[i] = op.mixture_propensities(z[i], shown[i], np.arange(k), 1.0, 0.5)
    clicks = (rng.random((n, k)) < np.take_along_axis(rel, shown, axis=1) * exam).astype(float)
    rows = np.arange(n)[:, None]
    for new, better in ((u, True), (-u, False)):
        est, logged = op.ranker_policy_value(clicks, b, shown, new, 0.0, 0.0, n_boot=300)
        top = np.argsort(-new, axis=1, kind="stable")[:, :k]
        truth = float((rel[rows, top] * exam).sum(axis=1).mean())  # its top 2, every answer
        assert logged == pytest.approx(clicks.sum(axis=1).mean(), rel=1e-12)
        assert abs(est.value - truth) < 4 * est.boot_std and est.ci_low <= truth <= est.ci_high, (better, est, truth)
        assert (est.ci_low > logged) is better and (est.ci_high < logged) is not better, (better, est, logged)
    # padding is ignored, and a row's scale does not matter (the pools are standardised first)
    np.testing.assert_allclose(op.standardised(np.array([[1.0, 2.0, 3.0, -np.inf], [5.0, 5.0, -np.inf, -np.inf]])),
                               [[-1.5 ** 0.5, 0.0, 1.5 ** 0.5, -np.inf], [0.0, 0.0, -np.inf, -np.inf]])
    # replay with another fixed list: (1 - share) while the logged prefix follows it, plus share x PL
    e = op.replay(SCORES[None, :], np.array([[3, 0]]), 0.7, 0.3, fixed=np.array([[3, 0]]))
    np.testing.assert_allclose(e[0], [0.7 + 0.3 * pl_probability(SCORES, (3,), 0.7),
                                      0.7 + 0.3 * pl_probability(SCORES, (3, 0), 0.7)], rtol=1e-12)

"""Learning from feedback, the formulas: Plackett-Luce exploration over a ranked list and off-policy estimators of
a ranking policy's value from a log of lists another policy showed.

**Exploration (Plackett-Luce).** A ranker gives each of a request's n candidates a score s_i. The greedy policy
shows the k best (``temperature`` 0: ``argsort``, ties to the lower index, every list with probability 1). The
exploring policy PL(s, T) fills the positions one at a time, each time drawing among the candidates not yet shown
with probability ``exp(s_i / T) / sum over the remaining j of exp(s_j / T)``. The *prefix propensity* of a shown
list at position p is the probability that the policy shows exactly this list up to and including p: the product of
those conditional probabilities for positions 1..p. Computed per step as ``(s_i - m) / T - log sum_j exp((s_j - m)
/ T)`` with m the largest remaining score (log-sum-exp: no overflow for any T > 0, the sum is at least 1). A
candidate with score -inf is never shown (each list needs k finite scores). ``sample_lists`` draws PL lists with
the Gumbel-top-k trick (the k largest of ``s / T + Gumbel noise`` are a PL sample, in order); a large T tends to
the uniform policy (prefix propensity ``1 / (n (n-1) ... (n-p+1))``), T -> 0 to the greedy one.

**Off-policy estimation.** A log holds, per shown list i and position p = 1..k, the click r_ip (0/1), the logging
(behaviour) policy's prefix propensity b_ip and, computed afterwards for the list as logged, a target policy's
prefix propensity e_ip (``prefix_propensities``). With position weights alpha_p (``position_weights``: all ones,
"clicks", makes the value the expected clicks per list; 1/log2(p+1), "dcg", a position-weighted reward) the target's
value is ``V = E_target[sum_p alpha_p r_p]``. The estimators assume the cascade (reward-interaction) model: the
click at p depends on the items at positions 1..p only, not on what is shown below (McInerney et al. 2020, RIPS;
Kiyohara et al. 2022, cascade DR). The position-based click model (P(click at p) = examination(p) x relevance) is
one such model. Then the prefix weight ``w_ip = e_ip / b_ip`` makes each position unbiased:

- IPS: ``V = mean_i sum_p alpha_p w_ip r_ip``.
- clipped IPS: the same with ``min(w_ip, max_weight)``: less variance, biased down where weights were clipped.
- SNIPS, per position self-normalised: ``V = sum_p alpha_p (sum_i w_ip r_ip) / (sum_i w_ip)``; the weights of a
  position average 1 in expectation, so this divides by their realised mean: a little bias, far less variance.
- cascade DR: ``V = mean_i sum_p alpha_p [w_ip (r_ip - q_ip) + w_i,p-1 qbar_ip]`` with ``w_i0 = 1``, where q_ip is
  a reward model's predicted click of the logged item at p and qbar_ip the model's expected click at p under the
  target given the logged prefix 1..p-1 (``expected_rewards``: exact for PL, the sum over the remaining items of
  their PL probability times their q). Unbiased when either the weights or the reward model are right; with a good
  model the weighted part is only the residual r - q, so most of the IPS noise goes (with a perfect model of
  deterministic rewards the weight at p never matters, only the prefix weight w_i,p-1 before it).

Every estimator returns an :class:`Estimate`: the point value, a percentile bootstrap interval (the lists
resampled with replacement, ``n_boot`` times, seeded) and the effective sample size of the weights it uses,
``(sum_i w_ip)^2 / sum_i w_ip^2`` per position; the overall ESS is the smallest of those (the deepest position's,
in practice: prefix weights are products, so they spread more with depth). The arrays are (n_lists, k); nothing
here loops over lists. The reward model is the caller's: any q arrays of the right shape (the simulator in
``benchmarks/offpolicy_sim.py`` fits a logistic regression on the log).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# position weightings ``position_weights`` knows: clicks = expected clicks per list, dcg = 1 / log2(p + 1)
POSITION_WEIGHTINGS = ("clicks", "dcg")
# bootstrap replicates whose count vectors are multiplied at once (bounds memory at this many x n_lists floats)
_BOOT_CHUNK = 25


@dataclass(frozen=True)
class Estimate:
    """One estimator's answer: ``value`` with its percentile bootstrap interval [ci_low, ci_high] at
    ``confidence``, the bootstrap replicates' standard deviation, and the effective sample size of the weights the
    estimator used (per position, and overall = the smallest position's)."""

    name: str
    value: float
    ci_low: float
    ci_high: float
    boot_std: float
    confidence: float
    ess: float
    ess_per_position: tuple[float, ...]
    n_lists: int

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high,
                "boot_std": self.boot_std, "confidence": self.confidence, "ess": self.ess,
                "ess_per_position": list(self.ess_per_position), "n_lists": self.n_lists}


# --- Plackett-Luce ---------------------------------------------------------------------------------------------

def _as_batch(scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    s = s[None, :] if s.ndim == 1 else s
    if s.ndim != 2:
        raise ValueError(f"scores must be (n,) or (n_lists, n), got shape {np.shape(scores)}")
    if np.isnan(s).any() or np.isposinf(s).any():
        raise ValueError("scores must be finite (or -inf for a candidate never shown)")
    return s


def _check_temperature(temperature: float) -> float:
    t = float(temperature)
    if not t >= 0.0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    return t


def _greedy(s: np.ndarray, k: int) -> np.ndarray:
    """The k best per row, best first, ties to the lower index."""
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def sample_lists(scores: np.ndarray, k: int, temperature: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """PL(scores, temperature) lists of length k for a batch: ``scores`` (n_lists, n) -> (shown (n_lists, k) indices
    into each row in position order, prefix propensities (n_lists, k)). Temperature 0: the greedy lists, propensity
    1."""
    s = _as_batch(scores)
    t = _check_temperature(temperature)
    if not 0 < k <= s.shape[1]:
        raise ValueError(f"k must be between 1 and the {s.shape[1]} candidates, got {k}")
    if t == 0.0:
        return _greedy(s, k), np.ones((s.shape[0], k))
    keys = (s - s.max(axis=1, keepdims=True)) / t + rng.gumbel(size=s.shape)
    top = np.argpartition(-keys, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1, kind="stable")
    shown = np.take_along_axis(top, order, axis=1)
    return shown, prefix_propensities(s, shown, t)


def sample_list(scores: np.ndarray, k: int, temperature: float,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One PL list: ``scores`` (n,) -> (the k shown candidates' indices in position order, their prefix
    propensities (k,))."""
    shown, prop = sample_lists(np.asarray(scores)[None, :], k, temperature, rng)
    return shown[0], prop[0]


def _conditionals(s: np.ndarray, shown: np.ndarray, t: float):
    """Per position p (0-based), yields (p, rows, removed mask before p, log of the PL conditional probability of
    every candidate given the prefix shown[:, :p]) for t > 0."""
    rows = np.arange(s.shape[0])
    removed = np.zeros(s.shape, dtype=bool)
    for p in range(shown.shape[1]):
        rest = np.where(removed, -np.inf, s)
        top = rest.max(axis=1, keepdims=True)
        d = (rest - top) / t
        yield p, rows, removed, d - np.log(np.exp(d).sum(axis=1, keepdims=True))
        removed[rows, shown[:, p]] = True


def prefix_propensities(scores: np.ndarray, shown: np.ndarray, temperature: float) -> np.ndarray:
    """Prefix propensities of given lists under PL(scores, temperature): ``scores`` (n,) or (n_lists, n),
    ``shown`` (k,) or (n_lists, k) -> same shape as ``shown``: at p, the probability of showing exactly
    shown[:p+1]. Temperature 0: 1 while the list agrees with the greedy one, 0 from the first difference on."""
    s = _as_batch(scores)
    t = _check_temperature(temperature)
    sh = np.asarray(shown, dtype=np.int64)
    single = sh.ndim == 1
    sh = sh[None, :] if single else sh
    if sh.shape[0] != s.shape[0]:
        raise ValueError(f"{sh.shape[0]} lists for {s.shape[0]} rows of scores")
    if t == 0.0:
        out = np.cumprod(sh == _greedy(s, sh.shape[1]), axis=1).astype(np.float64)
    else:
        logp = np.empty(sh.shape)
        for p, rows, _, logc in _conditionals(s, sh, t):
            logp[:, p] = logc[rows, sh[:, p]]
        out = np.exp(np.cumsum(logp, axis=1))
    return out[0] if single else out


def mixture_propensities(scores: np.ndarray, shown: np.ndarray, greedy: np.ndarray, temperature: float,
                         share: float) -> np.ndarray:
    """Prefix propensities of one list ``shown`` (k,) under the policy that explores with probability ``share``
    (PL(scores, temperature)) and otherwise shows ``greedy`` (k,), a fixed list (the served one, which need not be
    the top k by score): ``share * PL prefix + (1 - share) * [the prefix is greedy's]``."""
    sh, gr = np.asarray(shown, dtype=np.int64), np.asarray(greedy, dtype=np.int64)
    if sh.shape != gr.shape or not 0.0 <= share <= 1.0:
        raise ValueError(f"shown and greedy must have one shape and share be in [0, 1] (got {sh.shape}, {gr.shape}, "
                         f"{share})")
    pl = prefix_propensities(scores, sh, temperature) if share > 0 else np.zeros(len(sh))
    return share * pl + (1.0 - share) * np.cumprod(sh == gr).astype(np.float64)


def replay(pool_scores: np.ndarray, shown: np.ndarray, temperature: float, share: float,
           fixed: np.ndarray | None = None) -> np.ndarray:
    """Prefix propensities, under a mixture policy (``mixture_propensities``) whose fixed list is ``fixed``
    (n_lists, k) (default: each pool's first k candidates, the served list, as the impressions log pools), of logged
    lists: ``pool_scores`` (n_lists, m), padded with -inf, ``shown`` (n_lists, k) indices into each pool ->
    (n_lists, k)."""
    sh = np.asarray(shown, dtype=np.int64)
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1], got {share}")
    fixed = np.arange(sh.shape[1])[None, :] if fixed is None else np.asarray(fixed, dtype=np.int64)
    served = np.cumprod(sh == fixed, axis=1).astype(np.float64)
    pl = prefix_propensities(pool_scores, sh, temperature) if share > 0 else 0.0
    return share * pl + (1.0 - share) * served


def standardised(pool_scores: np.ndarray) -> np.ndarray:
    """Each row's scores as z-scores over its finite entries (how the server standardises a pool before it
    explores); -inf padding stays -inf, a row of equal scores becomes 0."""
    s = np.asarray(pool_scores, dtype=np.float64)
    finite = np.isfinite(s)
    n = finite.sum(axis=1, keepdims=True)
    mean = np.where(finite, s, 0.0).sum(axis=1, keepdims=True) / np.maximum(n, 1)
    std = np.sqrt(np.where(finite, (s - mean) ** 2, 0.0).sum(axis=1, keepdims=True) / np.maximum(n, 1))
    return np.where(finite, (np.where(finite, s, 0.0) - mean) / np.where(std > 0, std, 1.0), -np.inf)


def ranker_policy_value(reward: np.ndarray, behaviour: np.ndarray, shown: np.ndarray, pool_scores: np.ndarray,
                        temperature: float, share: float, *, n_boot: int = 200, confidence: float = 0.95,
                        seed: int = 0) -> tuple[Estimate, float]:
    """(SNIPS estimate of the expected clicks per list, the logged policy's observed clicks per list) of the policy
    that ranks each logged pool by ``pool_scores`` (n_lists, m; a new ranker's scores, -inf padded): its top k, with
    ``share`` of the lists drawn by Plackett-Luce at ``temperature`` over the standardised scores (how the server
    explores). The pool bounds it: the new policy is judged as a re-ranking of the candidates the logging policy
    logged."""
    r = np.asarray(reward, dtype=np.float64)
    z = standardised(pool_scores)
    e = replay(z, shown, temperature, share, fixed=_greedy(z, r.shape[1]))
    return snips(r, behaviour, e, n_boot=n_boot, confidence=confidence, seed=seed), float(r.sum(axis=1).mean())


def replay_expected_rewards(pool_scores: np.ndarray, q_items: np.ndarray, shown: np.ndarray, temperature: float,
                            share: float) -> np.ndarray:
    """qbar of ``replay``'s mixture: at each position the expected reward of the target's pick given the logged
    prefix, the PL part's (``expected_rewards``) and the served list's (its item at p) weighted by the probability
    each gives that prefix; 0 where the target cannot produce the prefix. ``q_items`` (n_lists, k, m)."""
    sh = np.asarray(shown, dtype=np.int64)
    q = np.asarray(q_items, dtype=np.float64)
    n, k = sh.shape
    ones = np.ones((n, 1))
    served_before = np.hstack([ones, np.cumprod(sh == np.arange(k)[None, :], axis=1)[:, :-1]]).astype(np.float64)
    q_served = q[:, np.arange(k), np.arange(k)]  # the served item at p is the pool's candidate p
    if share > 0:
        pl_before = np.hstack([ones, prefix_propensities(pool_scores, sh, temperature)[:, :-1]])
        e_pl = expected_rewards(pool_scores, q, sh, temperature)
    else:
        pl_before, e_pl = np.zeros((n, k)), np.zeros((n, k))
    num = share * pl_before * e_pl + (1.0 - share) * served_before * q_served
    den = share * pl_before + (1.0 - share) * served_before
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def fit_click_model(z: np.ndarray, position: np.ndarray, clicked: np.ndarray, iterations: int = 25) -> np.ndarray:
    """A logistic regression of a click on (1, standardised score, 1 / log2(position + 1)), by Newton's method with
    a small ridge: the reward model of the doubly robust estimate, from the logged rows. -> coefficients (3,)."""
    x = np.column_stack([np.ones(len(z)), z, 1.0 / np.log2(np.asarray(position, dtype=np.float64) + 1.0)])
    y = np.asarray(clicked, dtype=np.float64)
    beta = np.zeros(3)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(x @ beta)))
        grad = x.T @ (y - p) - 1e-6 * beta
        hess = (x * (p * (1 - p))[:, None]).T @ x + 1e-6 * np.eye(3)
        step = np.linalg.solve(hess, grad)
        beta = beta + step
        if np.abs(step).max() < 1e-10:
            break
    return beta


def click_model(beta: np.ndarray, z: np.ndarray, position: np.ndarray) -> np.ndarray:
    """The fitted click probability of candidates with standardised scores ``z`` at ``position`` (broadcast)."""
    logit = beta[0] + beta[1] * np.asarray(z, dtype=np.float64) + beta[2] / np.log2(np.asarray(position) + 1.0)
    return 1.0 / (1.0 + np.exp(-logit))


def expected_rewards(scores: np.ndarray, q_items: np.ndarray, shown: np.ndarray, temperature: float) -> np.ndarray:
    """qbar for every position: the expected reward at p under PL(scores, temperature)'s choice at p given the
    logged prefix shown[:, :p] (positions 0-based here), ``sum over the remaining j of P(j | prefix) q_j``.
    ``q_items``: each candidate's predicted reward, (n_lists, n) the same at every position or (n_lists, k, n) per
    position. Temperature 0: q of the best remaining candidate (ties to the lower index). -> (n_lists, k)."""
    s = _as_batch(scores)
    t = _check_temperature(temperature)
    sh = np.asarray(shown, dtype=np.int64)
    sh = sh[None, :] if sh.ndim == 1 else sh
    q = np.asarray(q_items, dtype=np.float64)
    q = q[None] if q.ndim == 1 else q
    if q.shape[0] != s.shape[0] or q.shape[-1] != s.shape[1] or (q.ndim == 3 and q.shape[1] != sh.shape[1]):
        raise ValueError(f"q_items shape {q.shape} does not match scores {s.shape} and lists {sh.shape}")
    out = np.empty(sh.shape)
    if t == 0.0:
        rows = np.arange(s.shape[0])
        removed = np.zeros(s.shape, dtype=bool)
        for p in range(sh.shape[1]):
            best = np.argmax(np.where(removed, -np.inf, s), axis=1)
            qp = q[:, p] if q.ndim == 3 else q
            out[:, p] = qp[rows, best]
            removed[rows, sh[:, p]] = True
        return out
    for p, _, _, logc in _conditionals(s, sh, t):
        qp = q[:, p] if q.ndim == 3 else q
        out[:, p] = (np.exp(logc) * qp).sum(axis=1)
    return out


def expected_reward_at(scores: np.ndarray, q_items: np.ndarray, shown: np.ndarray, p: int,
                       temperature: float) -> float:
    """qbar of one list at position ``p`` (1-based): the expected reward of the target's pick at p given the
    prefix shown[:p-1]; ``scores`` and ``q_items`` (n,), ``shown`` at least p - 1 long."""
    if p < 1:
        raise ValueError(f"positions are 1-based, got {p}")
    sh = np.asarray(shown, dtype=np.int64)[:p - 1]
    padded = np.concatenate([sh, [0]])  # the pick at p itself is not needed, only the prefix before it
    return float(expected_rewards(np.asarray(scores)[None, :], np.asarray(q_items)[None, :], padded[None, :],
                                  temperature)[0, p - 1])


# --- estimators ------------------------------------------------------------------------------------------------

def position_weights(k: int, kind: str = "clicks") -> np.ndarray:
    """alpha_p for p = 1..k: "clicks" all ones (the value is the expected clicks per list), "dcg" 1/log2(p+1)."""
    if kind == "clicks":
        return np.ones(k)
    if kind == "dcg":
        return 1.0 / np.log2(np.arange(2, k + 2))
    raise ValueError(f"position weighting must be one of {POSITION_WEIGHTINGS}, got {kind!r}")


def effective_sample_size(weights: np.ndarray) -> tuple[np.ndarray, float]:
    """(per position ``(sum_i w_ip)^2 / sum_i w_ip^2``, overall = the smallest of them) for weights (n_lists, k)."""
    w = np.asarray(weights, dtype=np.float64)
    sq = (w * w).sum(axis=0)
    per = np.where(sq > 0, w.sum(axis=0) ** 2 / np.where(sq > 0, sq, 1.0), 0.0)
    return per, float(per.min())


def _inputs(reward, behaviour, target, alpha) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r = np.asarray(reward, dtype=np.float64)
    b = np.asarray(behaviour, dtype=np.float64)
    e = np.asarray(target, dtype=np.float64)
    if r.ndim != 2 or r.shape != b.shape or r.shape != e.shape:
        raise ValueError(f"reward, behaviour and target propensities must share one (n_lists, k) shape, got "
                         f"{r.shape}, {b.shape}, {e.shape}")
    if not (b > 0).all():
        raise ValueError("behaviour propensities must be > 0 (a logged list had a chance to be shown)")
    a = np.ones(r.shape[1]) if alpha is None else np.asarray(alpha, dtype=np.float64)
    if a.shape != (r.shape[1],):
        raise ValueError(f"alpha must have one weight per position ({r.shape[1]}), got shape {a.shape}")
    return r, e / b, a


def _bootstrap(name: str, columns: np.ndarray, statistic, weights: np.ndarray, n_boot: int, confidence: float,
               seed: int) -> Estimate:
    """Point value ``statistic(column sums, n)`` and its percentile bootstrap over the lists (the rows of
    ``columns``): each replicate's column sums are its resampling counts times the columns."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    if n_boot < 2:
        raise ValueError(f"n_boot must be at least 2, got {n_boot}")
    n = columns.shape[0]
    value = float(statistic(columns.sum(axis=0)[None, :], n)[0])
    rng = np.random.default_rng(seed)
    reps = []
    for start in range(0, n_boot, _BOOT_CHUNK):
        size = min(_BOOT_CHUNK, n_boot - start)
        counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(size)]).astype(np.float64)
        reps.append(statistic(counts @ columns, n))
    boot = np.concatenate(reps)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(boot, [tail, 1.0 - tail])
    per, overall = effective_sample_size(weights)
    return Estimate(name=name, value=value, ci_low=float(low), ci_high=float(high), boot_std=float(boot.std(ddof=1)),
                    confidence=confidence, ess=overall, ess_per_position=tuple(float(x) for x in per), n_lists=n)


def _mean(sums: np.ndarray, n: int) -> np.ndarray:
    return sums[:, 0] / n


def ips(reward: np.ndarray, behaviour: np.ndarray, target: np.ndarray, alpha: np.ndarray | None = None, *,
        max_weight: float | None = None, n_boot: int = 200, confidence: float = 0.95, seed: int = 0) -> Estimate:
    """IPS with prefix weights: ``mean_i sum_p alpha_p w_ip r_ip``, ``w = target / behaviour`` (clipped at
    ``max_weight`` when given). Arrays (n_lists, k); ``alpha`` (k,), default all ones."""
    r, w, a = _inputs(reward, behaviour, target, alpha)
    name = "ips"
    if max_weight is not None:
        if not max_weight > 0:
            raise ValueError(f"max_weight must be > 0, got {max_weight}")
        w, name = np.minimum(w, max_weight), "clipped_ips"
    return _bootstrap(name, ((w * r) @ a)[:, None], _mean, w, n_boot, confidence, seed)


def clipped_ips(reward: np.ndarray, behaviour: np.ndarray, target: np.ndarray, max_weight: float,
                alpha: np.ndarray | None = None, *, n_boot: int = 200, confidence: float = 0.95,
                seed: int = 0) -> Estimate:
    """IPS with every prefix weight clipped at ``max_weight``."""
    return ips(reward, behaviour, target, alpha, max_weight=max_weight, n_boot=n_boot, confidence=confidence,
               seed=seed)


def snips(reward: np.ndarray, behaviour: np.ndarray, target: np.ndarray, alpha: np.ndarray | None = None, *,
          n_boot: int = 200, confidence: float = 0.95, seed: int = 0) -> Estimate:
    """Self-normalised IPS per position: ``sum_p alpha_p (sum_i w_ip r_ip) / (sum_i w_ip)`` (a position whose
    weights are all 0 adds 0)."""
    r, w, a = _inputs(reward, behaviour, target, alpha)
    k = r.shape[1]

    def stat(sums: np.ndarray, n: int) -> np.ndarray:
        del n
        num, den = sums[:, :k], sums[:, k:]
        return (np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0) * a).sum(axis=1)

    return _bootstrap("snips", np.hstack([w * r, w]), stat, w, n_boot, confidence, seed)


def cascade_dr(reward: np.ndarray, behaviour: np.ndarray, target: np.ndarray, q: np.ndarray, qbar: np.ndarray,
               alpha: np.ndarray | None = None, *, max_weight: float | None = None, n_boot: int = 200,
               confidence: float = 0.95, seed: int = 0) -> Estimate:
    """Cascade doubly robust: ``mean_i sum_p alpha_p [w_ip (r_ip - q_ip) + w_i,p-1 qbar_ip]``, ``w_i0 = 1``.
    ``q``: the reward model's prediction for the logged item at each position; ``qbar``: its expectation under the
    target given the logged prefix (``expected_rewards``). Weights clipped at ``max_weight`` when given."""
    r, w, a = _inputs(reward, behaviour, target, alpha)
    qa, qb = np.asarray(q, dtype=np.float64), np.asarray(qbar, dtype=np.float64)
    if qa.shape != r.shape or qb.shape != r.shape:
        raise ValueError(f"q and qbar must be {r.shape}, got {qa.shape} and {qb.shape}")
    if max_weight is not None:
        w = np.minimum(w, max_weight)
    before = np.hstack([np.ones((r.shape[0], 1)), w[:, :-1]])
    per_list = (w * (r - qa) + before * qb) @ a
    return _bootstrap("cascade_dr", per_list[:, None], _mean, w, n_boot, confidence, seed)

"""Chi-square goodness of fit of sampled outcomes to an exact law, and the power of that same
test against a given wrong law, so that a sample size can be chosen rather than hoped for."""

from scipy.stats import chi2, chisquare, ncx2


def _bins(law: dict, n: int) -> list[list]:
    """The outcomes with expected count >= 5 one bin each, the rest pooled into one last bin."""
    kept = [[outcome] for outcome, p in law.items() if p * n >= 5]
    return kept + [[outcome for outcome, p in law.items() if p * n < 5]]


def _mass(law: dict, outcomes: list) -> float:
    return sum(law.get(outcome, 0.0) for outcome in outcomes)


def p_value(counts: dict, law: dict) -> float:
    """Chi-square p-value of `counts` (outcome -> times seen) under `law` (outcome -> probability);
    outcomes the law does not list count in the pooled bin, so seeing one it calls impossible gives 0."""
    n = sum(counts.values())
    bins = _bins(law, n)
    observed = [sum(counts.get(outcome, 0) for outcome in b) for b in bins]
    observed[-1] += n - sum(observed)
    expected = [_mass(law, b) for b in bins]
    if expected[-1] == 0:
        if observed[-1]:
            return 0.0
        observed, expected = observed[:-1], expected[:-1]
    total = sum(expected)  # float rounding: make both sum to n exactly
    return float(chisquare(observed, [e * n / total for e in expected]).pvalue)


def power(law: dict, wrong: dict, n: int, alpha: float = 1e-6) -> float:
    """The chance that n samples from `wrong` give p_value < alpha under `law`, by the noncentral
    chi-square approximation (noncentrality n * sum over bins of (wrong - law)^2 / law); a pooled
    bin the law gives no mass is left out, which can only understate the power."""
    bins = _bins(law, n)
    wrong_mass = [_mass(wrong, b) for b in bins[:-1]]
    wrong_mass.append(1.0 - sum(wrong_mass))
    pairs = [(w, _mass(law, b)) for w, b in zip(wrong_mass, bins) if _mass(law, b) > 0]
    shift = n * sum((w - p) ** 2 / p for w, p in pairs)
    df = len(pairs) - 1
    return float(ncx2.sf(chi2.isf(alpha, df), df, shift))

"""Statistical helpers shared by the sampler tests."""
import numpy as np
import scipy.stats

# A correct sampler fails a test at level 1e-3 once in a thousand seeds; the
# seeds are fixed, so a pass stays a pass, and a real error (a wrong branch
# probability of even 2% on one node) makes p astronomically small at 200k draws.
P_THRESHOLD = 1e-3


def chi_square_p_value(counts, probs, min_expected=5.0):
    """Pearson chi-square p-value, merging classes whose expected count is small."""
    n = counts.sum()
    expected = probs * n
    order = np.argsort(expected)
    small = order[expected[order] < min_expected]
    big = np.setdiff1d(np.arange(len(probs)), small)
    obs = np.append(counts[big], counts[small].sum())
    exp = np.append(expected[big], expected[small].sum())
    keep = exp > 0
    return scipy.stats.chisquare(obs[keep], exp[keep] * obs[keep].sum() / exp[keep].sum()).pvalue

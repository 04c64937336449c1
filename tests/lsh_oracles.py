"""NumPy oracles for the LSH sampler: hash codes and the exact proposal."""
import numpy as np

_MASK = (1 << 64) - 1


def _mix(a, b):
    """The op's fixed DWTA probe function (splitmix64's finaliser), in Python ints."""
    z = (a * 0x9e3779b97f4a7c15 + b + 0x632be59bd9b4e019) & _MASK
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & _MASK
    return z ^ (z >> 31)


def hash_values(sampler, x):
    """[n, L K] hash values of rows x [n, dim] and [n] margins.

    The margin is the smallest |r . x| (SimHash) or gap between the two
    largest bin values (DWTA) of the row: below ~1e-4 float32 and float64 may
    disagree, so callers skip such rows.
    """
    x = np.asarray(x, np.float64)
    params = sampler.hash_params.numpy().astype(np.float64)
    if sampler.family == "simhash":
        dots = x @ params.T
        return (dots >= 0).astype(np.int64), np.abs(dots).min(1)
    coords = params.astype(np.int64)  # [L K, bin_size]
    values = x[:, coords]  # [n, L K, bin_size]
    n, num_hashes = values.shape[:2]
    out = np.zeros([n, num_hashes], np.int64)
    margins = np.full(n, np.inf)
    for r in range(n):
        fill = []
        for j in range(num_hashes):
            v = values[r, j]
            nonzero = np.nonzero(v != 0)[0]
            if len(nonzero) == 0:
                fill.append(-1)
                continue
            best = nonzero[np.argmax(v[nonzero])]  # first of ties, like the op
            fill.append(int(best))
            top = np.sort(v[nonzero])[::-1]
            if len(top) > 1:
                margins[r] = min(margins[r], top[0] - top[1])
        for j in range(num_hashes):
            value, probe = fill[j], 1
            while value == -1 and probe <= 64:
                value = fill[_mix(j, probe) % num_hashes]
                probe += 1
            out[r, j] = 0 if value == -1 else value
    return out, margins


def codes(sampler, x):
    """[n, L] codes of rows x and [n] margins (see hash_values)."""
    values, margins = hash_values(sampler, x)
    bits = 1 if sampler.family == "simhash" else int(np.log2(sampler.bin_size))
    values = values.reshape(len(values), sampler.num_tables, sampler.num_hashes)
    shifts = bits * np.arange(sampler.num_hashes)
    return (values << shifts).sum(2), margins


def log_prob(sampler, query_codes):
    """[batch, C] float64 log q from the bucket contents alone (not `codes`)."""
    buckets, counts = sampler.buckets.numpy(), sampler.counts.numpy()
    num_tables, num_buckets, eps = sampler.num_tables, sampler.num_buckets, sampler.epsilon
    num_classes = sampler.num_classes
    out = np.zeros([len(query_codes), num_classes])
    for b, row in enumerate(query_codes):
        empty, in_buckets = 0, np.zeros(num_classes)
        for table, code in enumerate(row):
            bucket = table * num_buckets + code
            members = buckets[bucket, :counts[bucket]]
            if len(members) == 0:
                empty += 1
            else:
                in_buckets[members] += 1.0 / len(members)
        out[b] = ((eps + (1 - eps) * empty / num_tables) / num_classes
                  + (1 - eps) / num_tables * in_buckets)
    return np.log(out)

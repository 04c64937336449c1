#include "custom_ops/core/adversarial_tree_fit.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include "custom_ops/core/adversarial_tree.h"
#include "custom_ops/core/multiversion.h"

namespace tf_sampled {
namespace {

// Examples per chunk of a Newton pass. Chunks are fixed, so the sums (and
// the fitted tree) do not depend on how chunks are spread over threads.
constexpr int64_t kChunk = 4096;

// A node's classes are order[class_begin, class_end) and its examples the
// rows [ex_begin, ex_end) of the class-sorted feature copy.
struct NodeTask {
  int64_t node = 0;
  int64_t class_begin = 0, class_end = 0;
  int64_t ex_begin = 0, ex_end = 0;
};

// Sums of one Newton pass: objective, gradient [m], Hessian [m, m] (upper
// triangle filled), m = k + 1.
struct Moments {
  double f = 0;
  std::vector<double> g, h;
  explicit Moments(int64_t m) : g(m, 0.0), h(m * m, 0.0) {}
  void Add(const Moments& o) {
    f += o.f;
    for (size_t i = 0; i < g.size(); ++i) g[i] += o.g[i];
    for (size_t i = 0; i < h.size(); ++i) h[i] += o.h[i];
  }
};

// Solves A x = b for symmetric positive definite A [m, m] (upper triangle
// read) by Cholesky; A and b are overwritten. Returns false if A is not
// numerically positive definite.
bool SolveSpd(int64_t m, double* a, double* b) {
  for (int64_t j = 0; j < m; ++j) {
    for (int64_t i = j; i < m; ++i) {
      double s = a[j * m + i];  // upper (j, i) == lower (i, j)
      for (int64_t p = 0; p < j; ++p) s -= a[i * m + p] * a[j * m + p];
      if (i == j) {
        if (!(s > 0)) return false;
        a[j * m + j] = std::sqrt(s);
      } else {
        a[i * m + j] = s / a[j * m + j];  // lower triangle holds L
      }
    }
  }
  for (int64_t i = 0; i < m; ++i) {  // L y = b
    double s = b[i];
    for (int64_t p = 0; p < i; ++p) s -= a[i * m + p] * b[p];
    b[i] = s / a[i * m + i];
  }
  for (int64_t i = m - 1; i >= 0; --i) {  // L^T x = y
    double s = b[i];
    for (int64_t p = i + 1; p < m; ++p) s -= a[p * m + i] * b[p];
    b[i] = s / a[i * m + i];
  }
  return true;
}

class Fitter {
 public:
  Fitter(const float* features, const int64_t* labels, int64_t n, int64_t k,
         int64_t num_classes, const AdversarialTreeFitOptions& options,
         const ParallelRange& parallel_for, float* params,
         int64_t* leaf_of_class, int64_t* class_of_leaf)
      : n_(n),
        k_(k),
        m_(k + 1),
        c_(num_classes),
        options_(options),
        parallel_for_(parallel_for),
        params_(params),
        leaf_of_class_(leaf_of_class),
        class_of_leaf_(class_of_leaf) {
    // Counting sort of the examples by class.
    count_.assign(c_, 0);
    for (int64_t i = 0; i < n_; ++i) ++count_[labels[i]];
    start_.assign(c_, 0);
    for (int64_t c = 1; c < c_; ++c) start_[c] = start_[c - 1] + count_[c - 1];
    std::vector<int64_t> cursor = start_;
    x_.resize(n_ * k_);
    cls_.resize(n_);
    for (int64_t i = 0; i < n_; ++i) {
      const int64_t pos = cursor[labels[i]]++;
      std::memcpy(&x_[pos * k_], features + i * k_, k_ * sizeof(float));
      cls_[pos] = labels[i];
    }
    x_scratch_.resize(n_ * k_);
    cls_scratch_.resize(n_);
    order_.resize(c_);
    std::iota(order_.begin(), order_.end(), 0);
    order_scratch_.resize(c_);
    right_.assign(c_, 0);
    std::fill(params_, params_ + c_ * m_, 0.0f);
  }

  void Run() {
    std::vector<NodeTask> level = {{1, 0, c_, 0, n_}};
    while (!level.empty()) {
      const int64_t tasks = static_cast<int64_t>(level.size());
      std::vector<NodeTask> children(2 * tasks);
      // Many nodes: one node per work item. Few (upper levels): nodes one
      // after another, each Newton pass split over example chunks.
      const bool by_node = tasks >= 32;
      auto fit_range = [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) {
          FitNode(level[t], !by_node, &children[2 * t]);
        }
      };
      if (by_node) {
        ParallelFor(tasks, (n_ / tasks + 1) * m_ * m_ * 8, fit_range);
      } else {
        fit_range(0, tasks);
      }
      level.clear();
      for (const NodeTask& child : children) {
        if (child.class_end - child.class_begin >= 2) level.push_back(child);
      }
    }
  }

 private:
  template <typename Fn>
  void ParallelFor(int64_t total, int64_t cost, Fn&& fn) {
    if (parallel_for_ && total > 1) {
      parallel_for_(total, cost, fn);
    } else {
      fn(0, total);
    }
  }

  // Objective, gradient and Hessian of the node's ridge-free logistic loss
  // at theta over the examples [begin, end), added into `out`.
  TF_SAMPLED_MULTIVERSION
  void Accumulate(int64_t begin, int64_t end, const double* theta,
                  Moments* out) const {
    const int64_t k = k_, m = m_;
    double* g = out->g.data();
    double* h = out->h.data();
    std::vector<double> xh(m);
    xh[k] = 1.0;
    double f = 0;
    for (int64_t i = begin; i < end; ++i) {
      const float* x = &x_[i * k];
      double z = theta[k];
      for (int64_t a = 0; a < k; ++a) {
        xh[a] = x[a];
        z += theta[a] * xh[a];
      }
      const double t = right_[cls_[i]];
      // -log sigma(z) + (1 - t) z = -log sigma(+-z) for the target side;
      // one exp serves the loss and p = sigma(z).
      const double e_abs = std::exp(-std::abs(z));
      f += -(std::min(z, 0.0) - std::log1p(e_abs)) + (1.0 - t) * z;
      const double p = z >= 0 ? 1.0 / (1.0 + e_abs) : e_abs / (1.0 + e_abs);
      const double e = p - t;
      const double r = p * (1.0 - p);
      for (int64_t a = 0; a < m; ++a) {
        g[a] += e * xh[a];
        const double ra = r * xh[a];
        double* row = h + a * m;
        for (int64_t b = a; b < m; ++b) row[b] += ra * xh[b];
      }
    }
    out->f += f;
  }

  // One pass over a node's examples (chunked; chunks in parallel if asked).
  Moments Pass(const NodeTask& t, const double* theta, bool parallel) {
    const int64_t size = t.ex_end - t.ex_begin;
    const int64_t chunks = (size + kChunk - 1) / kChunk;
    std::vector<Moments> parts(chunks, Moments(m_));
    auto run = [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        const int64_t lo = t.ex_begin + c * kChunk;
        Accumulate(lo, std::min(lo + kChunk, t.ex_end), theta, &parts[c]);
      }
    };
    if (parallel) {
      ParallelFor(chunks, kChunk * m_ * m_, run);
    } else {
      run(0, chunks);
    }
    Moments total(m_);
    for (const Moments& part : parts) total.Add(part);
    for (int64_t a = 0; a < m_; ++a) {
      total.f += options_.l2 * theta[a] * theta[a];
      total.g[a] += 2 * options_.l2 * theta[a];
      total.h[a * m_ + a] += 2 * options_.l2;
    }
    return total;
  }

  // `steps` Newton steps from theta; a step that raised the objective is
  // halved back towards the previous point (checked on the next pass).
  void Newton(const NodeTask& t, int64_t steps, bool parallel,
              std::vector<double>* theta) {
    std::vector<double> previous = *theta;
    double f_previous = std::numeric_limits<double>::infinity();
    int64_t backoffs = 0;
    for (int64_t s = 0; s < steps;) {
      Moments mom = Pass(t, theta->data(), parallel);
      if (mom.f > f_previous && backoffs < 30) {
        ++backoffs;
        for (int64_t a = 0; a < m_; ++a) {
          (*theta)[a] = 0.5 * ((*theta)[a] + previous[a]);
        }
        continue;
      }
      previous = *theta;
      f_previous = mom.f;
      if (!SolveSpd(m_, mom.h.data(), mom.g.data())) return;
      for (int64_t a = 0; a < m_; ++a) (*theta)[a] -= mom.g[a];
      ++s;
    }
  }

  // Ranks the node's classes by delta (descending, ties by class id) and
  // sends the first `num_right` right. Returns whether anything moved.
  bool Assign(const NodeTask& t, const std::vector<double>& delta,
              int64_t num_right) {
    const int64_t size = t.class_end - t.class_begin;
    std::vector<int64_t> idx(size);
    std::iota(idx.begin(), idx.end(), 0);
    const int64_t* classes = &order_[t.class_begin];
    std::sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) {
      if (delta[a] != delta[b]) return delta[a] > delta[b];
      return classes[a] < classes[b];
    });
    bool changed = false;
    for (int64_t r = 0; r < size; ++r) {
      const uint8_t side = r < num_right;
      uint8_t& slot = right_[classes[idx[r]]];
      changed |= slot != side;
      slot = side;
    }
    return changed;
  }

  void FitNode(const NodeTask& t, bool parallel, NodeTask* children) {
    const int64_t num_classes = t.class_end - t.class_begin;
    const int64_t num_left = LeavesUnder(2 * t.node, c_);
    const int64_t num_right = num_classes - num_left;
    const int64_t* classes = &order_[t.class_begin];
    std::vector<double> theta(m_, 0.0);
    if (t.ex_end == t.ex_begin) {
      // No data: spread the mass evenly over the node's classes.
      theta[k_] = std::log(double(num_right) / double(num_left));
      for (int64_t j = 0; j < num_classes; ++j) right_[classes[j]] = j >= num_left;
    } else {
      // Per-class feature sums s_y [num_classes, k].
      std::vector<double> sums(num_classes * k_, 0.0);
      for (int64_t j = 0; j < num_classes; ++j) {
        const int64_t c = classes[j];
        double* s = &sums[j * k_];
        for (int64_t i = start_[c]; i < start_[c] + count_[c]; ++i) {
          for (int64_t a = 0; a < k_; ++a) s[a] += x_[i * k_ + a];
        }
      }
      std::vector<double> delta(num_classes);
      const std::vector<double> u = TopEigenvector(sums, num_classes);
      for (int64_t j = 0; j < num_classes; ++j) {
        delta[j] = 0;
        for (int64_t a = 0; a < k_; ++a) delta[j] += u[a] * sums[j * k_ + a];
      }
      Assign(t, delta, num_right);
      for (int64_t it = 0; it < options_.num_iterations; ++it) {
        Newton(t, options_.newton_steps, parallel, &theta);
        for (int64_t j = 0; j < num_classes; ++j) {
          delta[j] = theta[k_] * double(count_[classes[j]]);
          for (int64_t a = 0; a < k_; ++a) delta[j] += theta[a] * sums[j * k_ + a];
        }
        if (!Assign(t, delta, num_right)) break;
        // The regression must match the final assignment.
        if (it + 1 == options_.num_iterations) {
          Newton(t, options_.newton_steps, parallel, &theta);
        }
      }
    }
    float* row = params_ + t.node * m_;
    for (int64_t a = 0; a < m_; ++a) row[a] = static_cast<float>(theta[a]);
    const int64_t ex_left = Partition(t);
    children[0] = {2 * t.node, t.class_begin, t.class_begin + num_left,
                   t.ex_begin, t.ex_begin + ex_left};
    children[1] = {2 * t.node + 1, t.class_begin + num_left, t.class_end,
                   t.ex_begin + ex_left, t.ex_end};
    for (int i = 0; i < 2; ++i) {
      if (children[i].node >= c_) {  // a leaf: one class
        const int64_t slot = children[i].node - c_;
        const int64_t c = order_[children[i].class_begin];
        leaf_of_class_[c] = slot;
        class_of_leaf_[slot] = c;
      }
    }
  }

  // Top eigenvector of the covariance of the per-class sums (power
  // iteration); zeros when the sums do not vary.
  std::vector<double> TopEigenvector(const std::vector<double>& sums,
                                     int64_t rows) const {
    std::vector<double> mean(k_, 0.0), cov(k_ * k_, 0.0), u(k_), next(k_);
    for (int64_t j = 0; j < rows; ++j) {
      for (int64_t a = 0; a < k_; ++a) mean[a] += sums[j * k_ + a] / rows;
    }
    for (int64_t j = 0; j < rows; ++j) {
      for (int64_t a = 0; a < k_; ++a) {
        const double da = sums[j * k_ + a] - mean[a];
        for (int64_t b = 0; b < k_; ++b) {
          cov[a * k_ + b] += da * (sums[j * k_ + b] - mean[b]);
        }
      }
    }
    // A start vector with no symmetry that a covariance could be orthogonal to.
    for (int64_t a = 0; a < k_; ++a) u[a] = 1.0 + 0.1 * a;
    for (int iter = 0; iter < 64; ++iter) {
      double norm = 0;
      for (int64_t a = 0; a < k_; ++a) {
        next[a] = 0;
        for (int64_t b = 0; b < k_; ++b) next[a] += cov[a * k_ + b] * u[b];
        norm += next[a] * next[a];
      }
      norm = std::sqrt(norm);
      if (!(norm > 0) || !std::isfinite(norm)) {
        std::fill(u.begin(), u.end(), 0.0);
        return u;
      }
      for (int64_t a = 0; a < k_; ++a) u[a] = next[a] / norm;
    }
    return u;
  }

  // Reorders the node's classes (left ones first, each side in its previous
  // order) and their example blocks. Returns the number of left examples.
  int64_t Partition(const NodeTask& t) {
    int64_t* classes = &order_[t.class_begin];
    int64_t* out = &order_scratch_[t.class_begin];
    const int64_t size = t.class_end - t.class_begin;
    int64_t filled = 0;
    for (int side = 0; side < 2; ++side) {
      for (int64_t j = 0; j < size; ++j) {
        if (right_[classes[j]] == side) out[filled++] = classes[j];
      }
    }
    int64_t pos = t.ex_begin, ex_left = 0;
    for (int64_t j = 0; j < size; ++j) {
      const int64_t c = out[j];
      const int64_t count = count_[c];
      std::memcpy(&x_scratch_[pos * k_], &x_[start_[c] * k_],
                  count * k_ * sizeof(float));
      std::fill(&cls_scratch_[pos], &cls_scratch_[pos] + count, c);
      start_[c] = pos;
      pos += count;
      if (!right_[c]) ex_left += count;
    }
    const int64_t ex = t.ex_end - t.ex_begin;
    std::memcpy(&x_[t.ex_begin * k_], &x_scratch_[t.ex_begin * k_],
                ex * k_ * sizeof(float));
    std::copy(&cls_scratch_[t.ex_begin], &cls_scratch_[t.ex_begin] + ex,
              &cls_[t.ex_begin]);
    std::copy(out, out + size, classes);
    return ex_left;
  }

  const int64_t n_, k_, m_, c_;
  const AdversarialTreeFitOptions options_;
  const ParallelRange& parallel_for_;
  float* params_;
  int64_t* leaf_of_class_;
  int64_t* class_of_leaf_;
  std::vector<int64_t> count_, start_, cls_, cls_scratch_, order_, order_scratch_;
  std::vector<float> x_, x_scratch_;
  std::vector<uint8_t> right_;
};

}  // namespace

void FitAdversarialTree(const float* features, const int64_t* labels, int64_t n, int64_t k,
                        int64_t num_classes, const AdversarialTreeFitOptions& options,
                        const ParallelRange& parallel_for, float* params,
                        int64_t* leaf_of_class, int64_t* class_of_leaf) {
  Fitter fitter(features, labels, n, k, num_classes, options, parallel_for,
                params, leaf_of_class, class_of_leaf);
  fitter.Run();
}

}  // namespace tf_sampled

// The sparse optimizer steps: the rows an IndexedSlices gradient touches are
// grouped (duplicates summed), then updated in place, groups split over the
// thread pool. TensorFlow's ResourceScatterSub, which Keras' sparse updates
// use, walks the rows one at a time on one thread.
#include <utility>
#include <vector>

#include "custom_ops/core/group_by_key.h"
#include "custom_ops/core/sparse_row_update.h"
#include "custom_ops/kernels/common.h"
#include "tensorflow/core/framework/tensor_shape.h"

namespace tf_sampled {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::TensorShapeUtils;

namespace {

struct RuleInputs {
  std::vector<const char*> variables;  // var first, then its slots
  std::vector<const char*> scalars;    // lr first
};

RuleInputs InputsOf(RowRule rule) {
  switch (rule) {
    case RowRule::kSgd:
      return {{"var"}, {"lr"}};
    case RowRule::kLazyAdam:
      return {{"var", "m", "v"}, {"lr", "beta1", "beta2", "epsilon"}};
    case RowRule::kAdagrad:
      return {{"var", "accumulator"}, {"lr", "epsilon"}};
  }
  return {};
}

}  // namespace

template <RowRule kRule, typename Index>
class SparseApplyOp : public OpKernel {
 public:
  explicit SparseApplyOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const RuleInputs names = InputsOf(kRule);
    const int num_vars = static_cast<int>(names.variables.size());
    const Tensor& indices = ctx->input(num_vars);
    const Tensor& grads = ctx->input(num_vars + 1);
    OP_REQUIRES_OK(ctx, CheckRank(indices, 1, "indices"));
    OP_REQUIRES(ctx, grads.dims() >= 1 && grads.dim_size(0) == indices.dim_size(0),
                errors::InvalidArgument(
                    "grads must have one row per index (", indices.dim_size(0),
                    "), got shape ", grads.shape().DebugString()));
    float scalars[4] = {0, 0, 0, 0};
    for (size_t s = 0; s < names.scalars.size(); ++s) {
      const Tensor& t = ctx->input(num_vars + 2 + static_cast<int>(s));
      OP_REQUIRES(ctx, TensorShapeUtils::IsScalar(t.shape()),
                  errors::InvalidArgument(names.scalars[s],
                                          " must be a scalar, got shape ",
                                          t.shape().DebugString()));
      scalars[s] = t.scalar<float>()();
      OP_REQUIRES(ctx, std::isfinite(scalars[s]),
                  errors::InvalidArgument(names.scalars[s], " must be finite, got ",
                                          scalars[s]));
    }

    std::vector<std::pair<int, const char*>> inputs;
    for (int i = 0; i < num_vars; ++i) inputs.emplace_back(i, names.variables[i]);
    LockedVariables vars;
    OP_REQUIRES_OK(ctx, vars.Lock(ctx, inputs, LockedVariables::Access::kWrite));
    for (int i = 0; i < num_vars; ++i) {
      OP_REQUIRES_OK(ctx, CheckDtype(vars.tensor(i), ::tensorflow::DT_FLOAT,
                                     names.variables[i]));
    }
    const Tensor& var = vars.tensor(0);
    OP_REQUIRES(ctx, var.dims() >= 1,
                errors::InvalidArgument("var must have rank >= 1 (rows first), got "
                                        "shape ", var.shape().DebugString()));
    for (int i = 1; i < num_vars; ++i) {
      OP_REQUIRES(ctx, vars.tensor(i).shape() == var.shape(),
                  errors::InvalidArgument(
                      names.variables[i], " must have var's shape ",
                      var.shape().DebugString(), ", got ",
                      vars.tensor(i).shape().DebugString()));
    }
    ::tensorflow::TensorShape row_shape = var.shape();
    row_shape.RemoveDim(0);
    ::tensorflow::TensorShape grad_row_shape = grads.shape();
    grad_row_shape.RemoveDim(0);
    OP_REQUIRES(ctx, grad_row_shape == row_shape,
                errors::InvalidArgument(
                    "grads rows must have var's row shape ", row_shape.DebugString(),
                    " (var ", var.shape().DebugString(), "), got grads shape ",
                    grads.shape().DebugString()));
    const int64_t num_rows = var.dim_size(0);
    const auto ids = indices.flat<Index>();
    const int64_t n = ids.size();
    std::vector<int64_t> keys(n);
    for (int64_t i = 0; i < n; ++i) {
      keys[i] = static_cast<int64_t>(ids(i));
      OP_REQUIRES(ctx, keys[i] >= 0 && keys[i] < num_rows,
                  errors::InvalidArgument("indices must be in [0, ", num_rows,
                                          ") (var's rows), got ", keys[i],
                                          " at position ", i));
    }
    const int64_t row_size = row_shape.num_elements();
    if (n == 0 || row_size == 0) return;

    RowTable table;
    table.row_size = row_size;
    float* buffers[3] = {nullptr, nullptr, nullptr};
    for (int i = 0; i < num_vars; ++i) {
      Tensor* t = nullptr;
      OP_REQUIRES_OK(ctx, vars.MutableTensor(ctx, i, &t));
      buffers[i] = t->flat<float>().data();
    }
    table.var = buffers[0];
    table.slot1 = buffers[1];
    table.slot2 = buffers[2];
    RowRuleParams params;
    params.lr = scalars[0];
    if (kRule == RowRule::kLazyAdam) {
      params.beta1 = scalars[1];
      params.beta2 = scalars[2];
      params.epsilon = scalars[3];
    } else if (kRule == RowRule::kAdagrad) {
      params.epsilon = scalars[1];
    }

    KeyGroups groups;
    GroupByKey(std::move(keys), num_rows - 1, &groups);
    const int64_t num_groups = static_cast<int64_t>(groups.ids.size());
    const float* grad_data = grads.flat<float>().data();
    const int64_t cost = (n / num_groups + 2 * num_vars) * row_size * 2;
    ParallelFor(ctx, num_groups, cost, [&](int64_t begin, int64_t end) {
      ApplyRowGroups(kRule, params, groups, grad_data, table, begin, end);
    });
  }
};

#define TF_SAMPLED_REGISTER_SPARSE_APPLY(name, rule)                          \
  REGISTER_KERNEL_BUILDER(Name("TfSampled>" name)                             \
                              .Device(DEVICE_CPU)                             \
                              .TypeConstraint<int32_t>("Tindices"),           \
                          SparseApplyOp<rule, int32_t>);                      \
  REGISTER_KERNEL_BUILDER(Name("TfSampled>" name)                             \
                              .Device(DEVICE_CPU)                             \
                              .TypeConstraint<int64_t>("Tindices"),           \
                          SparseApplyOp<rule, int64_t>);

TF_SAMPLED_REGISTER_SPARSE_APPLY("SparseApplySgd", RowRule::kSgd)
TF_SAMPLED_REGISTER_SPARSE_APPLY("SparseApplyLazyAdam", RowRule::kLazyAdam)
TF_SAMPLED_REGISTER_SPARSE_APPLY("SparseApplyAdagrad", RowRule::kAdagrad)

#undef TF_SAMPLED_REGISTER_SPARSE_APPLY

}  // namespace tf_sampled

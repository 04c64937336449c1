// Fitting the auxiliary tree: validation, then the core's greedy fit on the
// op's CPU thread pool.
#include "custom_ops/core/adversarial_tree_fit.h"
#include "custom_ops/kernels/adversarial_common.h"

namespace tf_sampled {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::TensorShape;

class AdversarialTreeFitOp : public OpKernel {
 public:
  explicit AdversarialTreeFitOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_classes", &num_classes_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_iterations", &options_.num_iterations));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("newton_steps", &options_.newton_steps));
    float l2;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("l2", &l2));
    options_.l2 = l2;
    OP_REQUIRES(ctx, num_classes_ >= 2 && num_classes_ <= kMaxAdversarialClasses,
                errors::InvalidArgument("num_classes must be in [2, 2^48], got ",
                                        num_classes_));
    OP_REQUIRES(ctx, options_.num_iterations >= 1 && options_.num_iterations <= 1000,
                errors::InvalidArgument("num_iterations must be in [1, 1000], got ",
                                        options_.num_iterations));
    OP_REQUIRES(ctx, options_.newton_steps >= 1 && options_.newton_steps <= 1000,
                errors::InvalidArgument("newton_steps must be in [1, 1000], got ",
                                        options_.newton_steps));
    // A positive ridge keeps every Newton system positive definite.
    OP_REQUIRES(ctx, l2 > 0 && std::isfinite(l2),
                errors::InvalidArgument("l2 must be positive and finite, got ", l2));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& features = ctx->input(0);
    const Tensor& labels = ctx->input(1);
    OP_REQUIRES_OK(ctx, CheckRank(features, 2, "features"));
    OP_REQUIRES_OK(ctx, CheckRank(labels, 1, "labels"));
    const int64_t n = features.dim_size(0);
    const int64_t k = features.dim_size(1);
    OP_REQUIRES(ctx, labels.dim_size(0) == n,
                errors::InvalidArgument(
                    "labels must have one entry per row of features (", n,
                    "), got shape ", labels.shape().DebugString()));
    OP_REQUIRES(ctx, k >= 1 && k <= 4096,
                errors::InvalidArgument(
                    "features must have between 1 and 4096 columns (the "
                    "projection dim), got shape ", features.shape().DebugString()));
    OP_REQUIRES(ctx, n >= num_classes_,
                errors::InvalidArgument(
                    "features must have at least num_classes (", num_classes_,
                    ") rows (examples) to fit the tree, got ", n));
    OP_REQUIRES_OK(ctx, CheckFinite(features.flat<float>().data(),
                                    features.NumElements(), "features"));
    OP_REQUIRES_OK(ctx, CheckClassIds(labels, num_classes_, "labels"));

    Tensor *params_t, *leaf_of_class_t, *class_of_leaf_t;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({num_classes_, k + 1}),
                                             &params_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({num_classes_}),
                                             &leaf_of_class_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({num_classes_}),
                                             &class_of_leaf_t));
    FitAdversarialTree(features.flat<float>().data(), labels.flat<int64_t>().data(), n, k,
                       num_classes_, options_, OpParallelRange(ctx),
                       params_t->flat<float>().data(), leaf_of_class_t->flat<int64_t>().data(),
                       class_of_leaf_t->flat<int64_t>().data());
  }

 private:
  int64_t num_classes_;
  AdversarialTreeFitOptions options_;
};

REGISTER_KERNEL_BUILDER(Name("TfSampled>AdversarialTreeFit").Device(DEVICE_CPU),
                        AdversarialTreeFitOp);

}  // namespace tf_sampled

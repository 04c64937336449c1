// The fused per-example sampled softmax loss (table as a tensor or read in
// place from variables) and its gradient w.r.t. the rows it read.
#include <string>

#include "custom_ops/core/sampled_softmax.h"
#include "custom_ops/kernels/common.h"

namespace tf_sampled {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::TensorShape;

namespace {

absl::Status CheckNonEmptyColumns(const Tensor& t, const char* name,
                                  const char* what) {
  if (t.dim_size(1) < 1) {
    return errors::InvalidArgument(name, " must have at least one column (",
                                   what, "), got shape ",
                                   t.shape().DebugString());
  }
  return absl::OkStatus();
}

absl::Status CheckRows(const Tensor& t, int64_t batch, const char* name) {
  if (t.dim_size(0) != batch) {
    return errors::InvalidArgument(name, " must have ", batch,
                                   " rows (the batch of inputs), got shape ",
                                   t.shape().DebugString());
  }
  return absl::OkStatus();
}

// Checks the per-example inputs (0 and 3..6) against a table of
// `num_classes` rows of width `dim` and fills `batch`.
absl::Status ParseBatch(OpKernelContext* ctx, int64_t num_classes, int64_t dim,
                        SampledBatch* batch) {
  const Tensor& inputs = ctx->input(0);
  const Tensor& labels = ctx->input(3);
  const Tensor& sampled = ctx->input(4);
  const Tensor& sampled_log_count = ctx->input(5);
  const Tensor& true_log_count = ctx->input(6);
  TF_RETURN_IF_ERROR(CheckRank(inputs, 2, "inputs"));
  TF_RETURN_IF_ERROR(CheckRank(labels, 2, "labels"));
  TF_RETURN_IF_ERROR(CheckRank(sampled, 2, "sampled"));
  TF_RETURN_IF_ERROR(CheckRank(sampled_log_count, 2, "sampled_log_count"));
  TF_RETURN_IF_ERROR(CheckRank(true_log_count, 2, "true_log_count"));
  const int64_t b = inputs.dim_size(0);
  if (b < 1) {
    return errors::InvalidArgument(
        "inputs must have at least one row (an empty batch has no loss), got "
        "shape ", inputs.shape().DebugString());
  }
  if (inputs.dim_size(1) != dim) {
    return errors::InvalidArgument("inputs must have ", dim,
                                   " columns like the rows of weights, got shape ",
                                   inputs.shape().DebugString());
  }
  TF_RETURN_IF_ERROR(CheckRows(labels, b, "labels"));
  TF_RETURN_IF_ERROR(CheckRows(sampled, b, "sampled"));
  TF_RETURN_IF_ERROR(CheckNonEmptyColumns(labels, "labels", "num_true >= 1"));
  TF_RETURN_IF_ERROR(CheckNonEmptyColumns(sampled, "sampled", "num_sampled >= 1"));
  if (sampled_log_count.shape() != sampled.shape()) {
    return errors::InvalidArgument(
        "sampled_log_count must have the shape of sampled ",
        sampled.shape().DebugString(), ", got ",
        sampled_log_count.shape().DebugString());
  }
  if (true_log_count.shape() != labels.shape()) {
    return errors::InvalidArgument("true_log_count must have the shape of labels ",
                                   labels.shape().DebugString(), ", got ",
                                   true_log_count.shape().DebugString());
  }
  TF_RETURN_IF_ERROR(CheckClassIds(labels, num_classes, "labels"));
  TF_RETURN_IF_ERROR(CheckClassIds(sampled, num_classes, "sampled"));
  TF_RETURN_IF_ERROR(CheckFinite(sampled_log_count.flat<float>().data(),
                                 sampled_log_count.NumElements(),
                                 "sampled_log_count (log S q of the candidates)"));
  TF_RETURN_IF_ERROR(CheckFinite(true_log_count.flat<float>().data(),
                                 true_log_count.NumElements(),
                                 "true_log_count (log S q of the labels)"));
  batch->inputs = inputs.flat<float>().data();
  batch->labels = labels.flat<int64_t>().data();
  batch->sampled = sampled.flat<int64_t>().data();
  batch->sampled_log_count = sampled_log_count.flat<float>().data();
  batch->true_log_count = true_log_count.flat<float>().data();
  batch->batch = b;
  batch->num_true = labels.dim_size(1);
  batch->num_sampled = sampled.dim_size(1);
  return absl::OkStatus();
}

// Checks weights [C, d] and biases ([C], or none) and fills `table`.
absl::Status ParseTable(const Tensor& weights, const Tensor* biases,
                        SoftmaxTable* table) {
  TF_RETURN_IF_ERROR(CheckDtype(weights, ::tensorflow::DT_FLOAT, "weights"));
  TF_RETURN_IF_ERROR(CheckRank(weights, 2, "weights"));
  if (weights.dim_size(0) < 1 || weights.dim_size(1) < 1) {
    return errors::InvalidArgument(
        "weights must be a non-empty [num_classes, dim] matrix, got shape ",
        weights.shape().DebugString());
  }
  table->weights = weights.flat<float>().data();
  table->num_classes = weights.dim_size(0);
  table->d = weights.dim_size(1);
  table->biases = nullptr;
  if (biases != nullptr) {
    TF_RETURN_IF_ERROR(CheckDtype(*biases, ::tensorflow::DT_FLOAT, "biases"));
    TF_RETURN_IF_ERROR(CheckRank(*biases, 1, "biases"));
    if (biases->dim_size(0) != table->num_classes) {
      return errors::InvalidArgument("biases must have shape [",
                                     table->num_classes,
                                     "] like the rows of weights, got ",
                                     biases->shape().DebugString());
    }
    table->biases = biases->flat<float>().data();
  }
  return absl::OkStatus();
}

}  // namespace

// Shared by the tensor and the resource forms: subclasses say where the
// table comes from.
class SampledSoftmaxLossOpBase : public OpKernel {
 public:
  explicit SampledSoftmaxLossOpBase(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("remove_accidental_hits",
                                     &options_.remove_accidental_hits));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("subtract_log_q_true",
                                     &options_.subtract_log_q_true));
  }

 protected:
  void Run(OpKernelContext* ctx, const SoftmaxTable& table) {
    SampledBatch batch;
    OP_REQUIRES_OK(ctx, ParseBatch(ctx, table.num_classes, table.d, &batch));
    const int64_t b = batch.batch;
    Tensor* loss = nullptr;
    Tensor* logit_grads = nullptr;
    Tensor* input_grads = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({b}), &loss));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({b, batch.Columns()}),
                                             &logit_grads));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({b, table.d}),
                                             &input_grads));
    float* loss_data = loss->flat<float>().data();
    float* logit_data = logit_grads->flat<float>().data();
    float* input_data = input_grads->flat<float>().data();
    // Two passes over each column's row (logit, then gradient) plus exps.
    const int64_t cost = batch.Columns() * (4 * table.d + 40);
    ParallelFor(ctx, b, cost, [&](int64_t begin, int64_t end) {
      SampledSoftmaxForward(table, batch, options_, begin, end, loss_data,
                            logit_data, input_data);
    });
  }

 private:
  SampledLossOptions options_;
};

class SampledSoftmaxLossOp : public SampledSoftmaxLossOpBase {
 public:
  using SampledSoftmaxLossOpBase::SampledSoftmaxLossOpBase;

  void Compute(OpKernelContext* ctx) override {
    const Tensor& biases = ctx->input(2);
    // A [0] biases tensor means no biases.
    const bool has_biases = !(biases.dims() == 1 && biases.dim_size(0) == 0);
    SoftmaxTable table;
    OP_REQUIRES_OK(ctx, ParseTable(ctx->input(1), has_biases ? &biases : nullptr,
                                   &table));
    Run(ctx, table);
  }
};

class ResourceSampledSoftmaxLossOp : public SampledSoftmaxLossOpBase {
 public:
  explicit ResourceSampledSoftmaxLossOp(OpKernelConstruction* ctx)
      : SampledSoftmaxLossOpBase(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("has_biases", &has_biases_));
  }

  void Compute(OpKernelContext* ctx) override {
    // Read in place under shared locks: a dense read of a variable that saw
    // a sparse update would copy the whole table on every step.
    LockedVariables variables;
    if (has_biases_) {
      OP_REQUIRES_OK(ctx, variables.Lock(ctx, {{1, "weights"}, {2, "biases"}}));
    } else {
      OP_REQUIRES_OK(ctx, variables.Lock(ctx, {{1, "weights"}}));
    }
    SoftmaxTable table;
    OP_REQUIRES_OK(ctx, ParseTable(variables.tensor(0),
                                   has_biases_ ? &variables.tensor(1) : nullptr,
                                   &table));
    Run(ctx, table);
  }

 private:
  bool has_biases_ = true;
};

class SampledSoftmaxLossGradOp : public OpKernel {
 public:
  using OpKernel::OpKernel;

  void Compute(OpKernelContext* ctx) override {
    const Tensor& loss_grad = ctx->input(0);
    const Tensor& logit_grads = ctx->input(1);
    const Tensor& inputs = ctx->input(2);
    const Tensor& labels = ctx->input(3);
    const Tensor& sampled = ctx->input(4);
    OP_REQUIRES_OK(ctx, CheckRank(loss_grad, 1, "loss_grad"));
    OP_REQUIRES_OK(ctx, CheckRank(logit_grads, 2, "logit_grads"));
    OP_REQUIRES_OK(ctx, CheckRank(inputs, 2, "inputs"));
    OP_REQUIRES_OK(ctx, CheckRank(labels, 2, "labels"));
    OP_REQUIRES_OK(ctx, CheckRank(sampled, 2, "sampled"));
    const int64_t b = inputs.dim_size(0);
    OP_REQUIRES(ctx, loss_grad.dim_size(0) == b,
                errors::InvalidArgument("loss_grad must have shape [", b,
                                        "] (the batch of inputs), got ",
                                        loss_grad.shape().DebugString()));
    OP_REQUIRES_OK(ctx, CheckRows(labels, b, "labels"));
    OP_REQUIRES_OK(ctx, CheckRows(sampled, b, "sampled"));
    const int64_t columns = labels.dim_size(1) + sampled.dim_size(1);
    OP_REQUIRES(ctx,
                logit_grads.dim_size(0) == b && logit_grads.dim_size(1) == columns,
                errors::InvalidArgument(
                    "logit_grads must have shape [", b, ", ", columns,
                    "] (labels' and sampled's columns), got ",
                    logit_grads.shape().DebugString()));
    // The ids only index the output rows here: any non-negative id is safe.
    int64_t max_id = -1;
    for (const Tensor* ids : {&labels, &sampled}) {
      const auto flat = ids->flat<int64_t>();
      for (int64_t i = 0; i < flat.size(); ++i) {
        OP_REQUIRES(ctx, flat(i) >= 0,
                    errors::InvalidArgument(ids == &labels ? "labels" : "sampled",
                                            " must be >= 0, got ", flat(i),
                                            " at flat index ", i));
        max_id = std::max(max_id, flat(i));
      }
    }
    SampledBatch batch;
    batch.inputs = inputs.flat<float>().data();
    batch.labels = labels.flat<int64_t>().data();
    batch.sampled = sampled.flat<int64_t>().data();
    batch.batch = b;
    batch.num_true = labels.dim_size(1);
    batch.num_sampled = sampled.dim_size(1);
    RowGroups groups;
    GroupColumnsByRow(batch, max_id, &groups);
    const int64_t rows = static_cast<int64_t>(groups.ids.size());
    const int64_t d = inputs.dim_size(1);
    Tensor* row_ids = nullptr;
    Tensor* row_grads = nullptr;
    Tensor* bias_grads = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({rows}), &row_ids));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({rows, d}), &row_grads));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({rows}), &bias_grads));
    std::copy(groups.ids.begin(), groups.ids.end(), row_ids->flat<int64_t>().data());
    const float* loss_grad_data = loss_grad.flat<float>().data();
    const float* logit_data = logit_grads.flat<float>().data();
    float* row_data = row_grads->flat<float>().data();
    float* bias_data = bias_grads->flat<float>().data();
    const int64_t cost = 2 * d * (b * columns / std::max<int64_t>(rows, 1) + 1);
    ParallelFor(ctx, rows, cost, [&](int64_t begin, int64_t end) {
      AccumulateRowGradients(groups, batch, d, loss_grad_data, logit_data, begin,
                             end, row_data, bias_data);
    });
  }
};

REGISTER_KERNEL_BUILDER(
    Name("TfSampled>SampledSoftmaxLoss").Device(DEVICE_CPU), SampledSoftmaxLossOp);
REGISTER_KERNEL_BUILDER(
    Name("TfSampled>ResourceSampledSoftmaxLoss").Device(DEVICE_CPU),
    ResourceSampledSoftmaxLossOp);
REGISTER_KERNEL_BUILDER(
    Name("TfSampled>SampledSoftmaxLossGrad").Device(DEVICE_CPU),
    SampledSoftmaxLossGradOp);

}  // namespace tf_sampled

#include "custom_ops/kernels/lsh_common.h"

#include <cmath>

namespace tf_sampled {

absl::Status ParsePositive(OpKernelConstruction* ctx, const char* name,
                           int64_t* value) {
  TF_RETURN_IF_ERROR(ctx->GetAttr(name, value));
  if (*value < 1) {
    return errors::InvalidArgument(name, " must be >= 1, got ", *value);
  }
  return absl::OkStatus();
}

absl::Status ParseEpsilon(OpKernelConstruction* ctx, float* epsilon) {
  TF_RETURN_IF_ERROR(ctx->GetAttr("epsilon", epsilon));
  if (!(*epsilon > 0) || !(*epsilon <= 1)) {
    return errors::InvalidArgument(
        "epsilon must be in (0, 1] (every class needs a non-zero "
        "probability), got ", *epsilon);
  }
  return absl::OkStatus();
}

absl::Status LshAttrs::Parse(OpKernelConstruction* ctx) {
  std::string name;
  TF_RETURN_IF_ERROR(ctx->GetAttr("family", &name));
  if (!ParseHashFamily(name, &family)) {
    return errors::InvalidArgument("Unknown family: '", name, "'");
  }
  TF_RETURN_IF_ERROR(ParsePositive(ctx, "num_tables", &num_tables));
  TF_RETURN_IF_ERROR(ParsePositive(ctx, "num_hashes", &num_hashes));
  TF_RETURN_IF_ERROR(ctx->GetAttr("bin_size", &bin_size));
  if (num_tables > kMaxLshTables) {
    return errors::InvalidArgument("num_tables must be <= ", kMaxLshTables,
                                   ", got ", num_tables);
  }
  if (family == HashFamily::kDwta &&
      (bin_size < 2 || bin_size > kMaxBinSize || (bin_size & (bin_size - 1)))) {
    return errors::InvalidArgument(
        "bin_size must be a power of two in [2, ", kMaxBinSize,
        "] for the dwta family, got ", bin_size);
  }
  HashSpec spec;
  spec.family = family;
  spec.num_hashes = num_hashes;
  spec.bin_size = bin_size;
  if (spec.CodeBits() > kMaxCodeBits) {
    return errors::InvalidArgument(
        "num_hashes (K) = ", num_hashes, " is too large for the hash width: ",
        spec.BitsPerHash(), " bit(s) per hash make codes of more than ",
        kMaxCodeBits, " bits");
  }
  return absl::OkStatus();
}

int64_t LshAttrs::NumBuckets() const {
  HashSpec spec;
  spec.family = family;
  spec.num_hashes = num_hashes;
  spec.bin_size = bin_size;
  return int64_t{1} << spec.CodeBits();
}

absl::Status LshAttrs::MakeSpec(const Tensor& params, int64_t dim,
                                HashSpec* spec) const {
  TF_RETURN_IF_ERROR(CheckRank(params, 2, "hash_params"));
  spec->family = family;
  spec->num_tables = num_tables;
  spec->num_hashes = num_hashes;
  spec->bin_size = bin_size;
  spec->dim = dim;
  if (dim < 1) {
    return errors::InvalidArgument("rows to hash must have at least 1 column, got ",
                                   dim);
  }
  if (params.dim_size(0) != spec->NumHashes() ||
      params.dim_size(1) != spec->ParamCols()) {
    return errors::InvalidArgument(
        "hash_params must have shape [", spec->NumHashes(), ", ",
        spec->ParamCols(), "] (num_tables * num_hashes, ",
        family == HashFamily::kSimHash ? "dim" : "bin_size", "), got ",
        params.shape().DebugString());
  }
  spec->params = params.flat<float>().data();
  TF_RETURN_IF_ERROR(CheckFinite(spec->params, params.NumElements(), "hash_params"));
  if (family == HashFamily::kDwta) {
    const int64_t bad = FirstBadDwtaParam(*spec);
    if (bad >= 0) {
      return errors::InvalidArgument(
          "hash_params of the dwta family must be whole coordinate indices in "
          "[0, ", dim, "), got ", spec->params[bad], " at flat index ", bad);
    }
  }
  return absl::OkStatus();
}

absl::Status LshTables::Parse(OpKernelContext* ctx, const LshAttrs& attrs,
                              int embeddings_input) {
  std::vector<std::pair<int, const char*>> inputs = {
      {0, "buckets"}, {1, "counts"}, {2, "codes"}};
  if (embeddings_input >= 0) inputs.push_back({embeddings_input, "embeddings"});
  TF_RETURN_IF_ERROR(variables.Lock(ctx, inputs));
  const Tensor& buckets = variables.tensor(0);
  const Tensor& counts = variables.tensor(1);
  const Tensor& codes = variables.tensor(2);
  TF_RETURN_IF_ERROR(CheckDtype(buckets, ::tensorflow::DT_INT32, "buckets"));
  TF_RETURN_IF_ERROR(CheckDtype(counts, ::tensorflow::DT_INT32, "counts"));
  TF_RETURN_IF_ERROR(CheckDtype(codes, ::tensorflow::DT_INT32, "codes"));
  TF_RETURN_IF_ERROR(CheckRank(buckets, 2, "buckets"));
  TF_RETURN_IF_ERROR(CheckRank(counts, 1, "counts"));
  TF_RETURN_IF_ERROR(CheckRank(codes, 2, "codes"));
  TableShape& shape = view.shape;
  shape.num_tables = attrs.num_tables;
  shape.num_buckets = attrs.NumBuckets();
  shape.num_classes = codes.dim_size(0);
  shape.bucket_size = buckets.dim_size(1);
  if (shape.num_tables > kMaxLshSlots / shape.num_buckets ||
      buckets.dim_size(0) != shape.num_tables * shape.num_buckets ||
      shape.bucket_size < 1) {
    return errors::InvalidArgument(
        "buckets must have shape [num_tables * 2^code_bits, bucket_size] = [",
        shape.num_tables, " * ", shape.num_buckets,
        ", >= 1] for these hash attributes, got ", buckets.shape().DebugString());
  }
  if (counts.dim_size(0) != buckets.dim_size(0)) {
    return errors::InvalidArgument("counts must have shape [", buckets.dim_size(0),
                                   "] like buckets' rows, got ",
                                   counts.shape().DebugString());
  }
  if (shape.num_classes < 1 || shape.num_classes > kMaxLshClasses ||
      codes.dim_size(1) != shape.num_tables) {
    return errors::InvalidArgument(
        "codes must have shape [num_classes, num_tables] with num_tables = ",
        shape.num_tables, " and 1 <= num_classes <= ", kMaxLshClasses, ", got ",
        codes.shape().DebugString());
  }
  view.buckets = buckets.flat<int32_t>().data();
  view.counts = counts.flat<int32_t>().data();
  view.codes = codes.flat<int32_t>().data();
  if (embeddings_input >= 0) {
    const Tensor& table = variables.tensor(3);
    TF_RETURN_IF_ERROR(CheckDtype(table, ::tensorflow::DT_FLOAT, "embeddings"));
    TF_RETURN_IF_ERROR(CheckRank(table, 2, "embeddings"));
    if (table.dim_size(0) != shape.num_classes) {
      return errors::InvalidArgument(
          "embeddings must have ", shape.num_classes,
          " rows like codes, got shape ", table.shape().DebugString());
    }
    embeddings = table.flat<float>().data();
    dim = table.dim_size(1);
  }
  return absl::OkStatus();
}

absl::Status BadCountError(const TableShape& shape, int64_t bucket,
                           const int32_t* counts) {
  return errors::InvalidArgument(
      "counts must be in [0, bucket_size=", shape.bucket_size, "], got ",
      counts[bucket], " for bucket row ", bucket);
}

absl::Status BadMemberError(int64_t query) {
  return errors::InvalidArgument(
      "buckets must hold class ids in [0, num_classes): a member read for "
      "query ", query, " is outside");
}

}  // namespace tf_sampled

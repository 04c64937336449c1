// Building the LSH tables from the embeddings, and re-inserting changed rows.
#include <algorithm>
#include <vector>

#include "custom_ops/core/lsh_tables.h"
#include "custom_ops/kernels/lsh_common.h"

namespace tf_sampled {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::TensorShape;

namespace {

// Hashes rows ids[r] (or r when ids is null) of the [C, dim] embeddings into
// codes [n, L] on the thread pool. Returns the first row (index r) that is
// not finite, or -1.
int64_t HashRows(OpKernelContext* ctx, const HashSpec& spec, const float* embeddings,
                 const int64_t* ids, int64_t n, int32_t* codes) {
  ShardFailure failure;
  ParallelFor(ctx, n, spec.NumHashes() * spec.ParamCols(),
              [&](int64_t begin, int64_t end) {
                std::vector<int32_t> values(spec.NumHashes()), fill(spec.NumHashes());
                for (int64_t r = begin; r < end; ++r) {
                  const int64_t row = ids == nullptr ? r : ids[r];
                  if (!HashRow(spec, embeddings + row * spec.dim,
                               codes + r * spec.num_tables, values.data(), fill.data())) {
                    failure.Record(r);
                    return;
                  }
                }
              });
  return failure.failed() ? failure.item() : -1;
}

// The random choices of table `table` (which classes an overflowing bucket
// keeps, which member a re-inserted row evicts) depend only on the seed
// attributes, so the same seed builds the same tables every time.
uint64_t TableSeed(int64_t seed, int64_t seed2, int64_t table) {
  Random mix(uint64_t(seed) * 0x9e3779b97f4a7c15ULL ^ uint64_t(seed2));
  return mix.Next() + uint64_t(table) * 0xbf58476d1ce4e5b9ULL;
}

absl::Status NonFiniteEmbeddingError(int64_t row) {
  return errors::InvalidArgument("embeddings must be finite: row ", row,
                                 " holds a NaN/Inf value");
}

}  // namespace

class LshBuildOp : public OpKernel {
 public:
  explicit LshBuildOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, attrs_.Parse(ctx));
    OP_REQUIRES_OK(ctx, ParsePositive(ctx, "bucket_size", &bucket_size_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("seed", &seed_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("seed2", &seed2_));
  }

  void Compute(OpKernelContext* ctx) override {
    LockedVariables variables;
    OP_REQUIRES_OK(ctx, variables.Lock(ctx, {{0, "embeddings"}}));
    const Tensor& embeddings = variables.tensor(0);
    OP_REQUIRES_OK(ctx, CheckDtype(embeddings, ::tensorflow::DT_FLOAT, "embeddings"));
    OP_REQUIRES_OK(ctx, CheckRank(embeddings, 2, "embeddings"));
    const int64_t num_classes = embeddings.dim_size(0);
    OP_REQUIRES(ctx, num_classes >= 1 && num_classes <= kMaxLshClasses,
                errors::InvalidArgument(
                    "embeddings must have between 1 and ", kMaxLshClasses,
                    " rows (class ids are int32), got shape ",
                    embeddings.shape().DebugString()));
    HashSpec spec;
    OP_REQUIRES_OK(ctx, attrs_.MakeSpec(ctx->input(1), embeddings.dim_size(1), &spec));
    TableShape shape;
    shape.num_classes = num_classes;
    shape.num_tables = attrs_.num_tables;
    shape.num_buckets = attrs_.NumBuckets();
    shape.bucket_size = bucket_size_;
    // Checked as divisions: the products can overflow int64.
    OP_REQUIRES(ctx,
                shape.num_buckets <= kMaxLshSlots / shape.num_tables &&
                    bucket_size_ <= kMaxLshSlots / (shape.num_tables * shape.num_buckets),
                errors::InvalidArgument(
                    "num_tables * 2^code_bits * bucket_size = ", shape.num_tables,
                    " * ", shape.num_buckets, " * ", bucket_size_,
                    " bucket slots is more than ", kMaxLshSlots,
                    "; lower num_hashes, num_tables or bucket_size"));
    OP_REQUIRES(ctx, num_classes <= kMaxLshSlots / shape.num_tables,
                errors::InvalidArgument(
                    "num_classes * num_tables = ", num_classes, " * ",
                    shape.num_tables, " codes is more than ", kMaxLshSlots,
                    "; lower num_tables"));
    Tensor *buckets_t, *counts_t, *codes_t;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            0, TensorShape({shape.NumBucketRows(), bucket_size_}),
                            &buckets_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({shape.NumBucketRows()}),
                                             &counts_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            2, TensorShape({num_classes, shape.num_tables}), &codes_t));
    int32_t* codes = codes_t->flat<int32_t>().data();
    const int64_t bad_row = HashRows(ctx, spec, embeddings.flat<float>().data(),
                                     nullptr, num_classes, codes);
    OP_REQUIRES(ctx, bad_row < 0, NonFiniteEmbeddingError(bad_row));

    int32_t* buckets = buckets_t->flat<int32_t>().data();
    int32_t* counts = counts_t->flat<int32_t>().data();
    ParallelFor(ctx, shape.num_tables, 4 * num_classes + shape.num_buckets * bucket_size_,
                [&](int64_t begin, int64_t end) {
                  std::vector<int64_t> seen;
                  for (int64_t l = begin; l < end; ++l) {
                    Random rng(TableSeed(seed_, seed2_, l));
                    FillTable(shape, codes, l, &rng, buckets, counts, &seen);
                  }
                });
  }

 private:
  LshAttrs attrs_;
  int64_t bucket_size_, seed_, seed2_;
};

class LshUpdateOp : public OpKernel {
 public:
  explicit LshUpdateOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, attrs_.Parse(ctx));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("seed", &seed_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("seed2", &seed2_));
  }

  void Compute(OpKernelContext* ctx) override {
    LshTables tables;
    OP_REQUIRES_OK(ctx, tables.Parse(ctx, attrs_, /*embeddings_input=*/3));
    const TableShape& shape = tables.view.shape;
    HashSpec spec;
    OP_REQUIRES_OK(ctx, attrs_.MakeSpec(ctx->input(4), tables.dim, &spec));
    const Tensor& ids_t = ctx->input(5);
    OP_REQUIRES_OK(ctx, CheckRank(ids_t, 1, "ids"));
    OP_REQUIRES_OK(ctx, CheckClassIds(ids_t, shape.num_classes, "ids"));
    const auto flat_ids = ids_t.flat<int64_t>();
    std::vector<int64_t> ids(flat_ids.data(), flat_ids.data() + flat_ids.size());
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    const int64_t n = ids.size();
    // Re-insertion reads the stored codes as bucket numbers.
    for (int64_t id : ids) {
      for (int64_t l = 0; l < shape.num_tables; ++l) {
        const int32_t code = tables.view.codes[id * shape.num_tables + l];
        OP_REQUIRES(ctx, code >= 0 && code < shape.num_buckets,
                    errors::InvalidArgument(
                        "codes must be in [0, ", shape.num_buckets, "), got ", code,
                        " for class ", id, " in table ", l));
      }
    }

    Tensor *unique_t, *new_codes_t;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({n}), &unique_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({n, shape.num_tables}),
                                             &new_codes_t));
    std::copy(ids.begin(), ids.end(), unique_t->flat<int64_t>().data());
    int32_t* new_codes = new_codes_t->flat<int32_t>().data();
    const int64_t bad_row = HashRows(ctx, spec, tables.embeddings, ids.data(), n, new_codes);
    OP_REQUIRES(ctx, bad_row < 0, NonFiniteEmbeddingError(ids[bad_row < 0 ? 0 : bad_row]));

    std::vector<std::vector<BucketEdit>> edits(shape.num_tables);
    ShardFailure bad_bucket;
    ParallelFor(ctx, shape.num_tables, 16 * n + 1, [&](int64_t begin, int64_t end) {
      for (int64_t l = begin; l < end; ++l) {
        Random rng(TableSeed(seed_, seed2_, l));
        int64_t bucket;
        if (!ReinsertTable(shape, tables.view.buckets, tables.view.counts,
                           tables.view.codes, ids.data(), new_codes, n, l, &rng,
                           &edits[l], &bucket)) {
          bad_bucket.Record(bucket);
        }
      }
    });
    OP_REQUIRES(ctx, !bad_bucket.failed(),
                BadCountError(shape, bad_bucket.item(), tables.view.counts));

    int64_t k = 0;
    for (const auto& table_edits : edits) k += table_edits.size();
    Tensor *bucket_ids_t, *rows_t, *counts_t;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({k}), &bucket_ids_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            3, TensorShape({k, shape.bucket_size}), &rows_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, TensorShape({k}), &counts_t));
    int64_t* bucket_ids = bucket_ids_t->flat<int64_t>().data();
    int32_t* rows = rows_t->flat<int32_t>().data();
    int32_t* counts = counts_t->flat<int32_t>().data();
    int64_t i = 0;
    for (const auto& table_edits : edits) {
      for (const BucketEdit& edit : table_edits) {
        bucket_ids[i] = edit.bucket;
        counts[i] = static_cast<int32_t>(edit.members.size());
        int32_t* row = rows + i * shape.bucket_size;
        std::fill(row, row + shape.bucket_size, -1);
        std::copy(edit.members.begin(), edit.members.end(), row);
        ++i;
      }
    }
  }

 private:
  LshAttrs attrs_;
  int64_t seed_, seed2_;
};

REGISTER_KERNEL_BUILDER(Name("TfSampled>LshBuild").Device(DEVICE_CPU), LshBuildOp);
REGISTER_KERNEL_BUILDER(Name("TfSampled>LshUpdate").Device(DEVICE_CPU), LshUpdateOp);

}  // namespace tf_sampled

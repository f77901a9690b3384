// This compilation's entry points, as the table fused.cc picks from at load time (included last, see simd.h).
static void AttentionRows(const float* q, const float* k, const float* v, int N, int M, int d, size_t ld, float scale, int i0,
                          int i1, float* out, float* lse) {
  const Head h(k, v, N, M, d, ld, false);
  ForwardRows(h, q, ld, scale, i0, i1, out, lse);
}

static void AttentionGradRows(const float* q, const float* k, const float* v, const float* o, const float* lse, const float* dout,
                              int N, int M, int d, size_t ld, float scale, int i0, int i1, float* dq, float* dKp, float* dVp) {
  const Head h(k, v, N, M, d, ld, true);
  BackwardRows(h, q, o, lse, dout, ld, scale, i0, i1, dq, dKp, dVp);
}

const KernelTable kTable = {AttentionRows, AttentionGradRows, PaddedWidth, GroupNormForward, GroupNormBackward, AdamWUpdate, SiluForward, SiluBackward, LayerNormRows, LayerNormGradRows,
                           GegluRows, GegluGradRows, AddArrays, GemmRows};

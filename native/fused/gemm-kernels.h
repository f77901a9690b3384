// The linear layer's product (ControlnetTsMatMul in fused.cc), compiled per ISA (see simd.h): rows of C = A·B (+ bias),
// A [M, K] and B [K, N] row-major. The layers' products are small and skinny (K and N 32–512, M a few thousand
// tokens), where TensorFlow's MatMul (Eigen's contraction) ran 1.5–2× torch's time and splits even a 2-MFLOP product
// across its pool; here a register block of rows × two vectors walks K with one broadcast and two FMAs per row and
// step, B staying in L1/L2 across the rows. The AVX-512 copy takes 8 rows × 2 zmm (16 of its 32 registers): 1.5–1.9×
// the 4 rows × 2 ymm of the AVX2 copy on the AVX-512 host (1 thread, [4096,32]·[32,32] to [1024,64]·[64,512]).
// Every copy adds bias + Σ_k in k order with one FMA per step, so the AVX2 and AVX-512 copies agree bit for bit.

// One block of R rows × NV vectors of V (v8, or the copy's widest vw): acc = bias (or 0) + Σ_k A[r][k]·B[k][n..).
template <typename V, int R, int NV>
static inline void GemmBlock(const float* A, int64_t lda, const float* B, int64_t N, int K, const float* bias, int64_t n, float* C, int64_t ldc) {
  constexpr int L = sizeof(V) / sizeof(float);
  V acc[R][NV];
  for (int j = 0; j < NV; j++) {
    const V b0 = bias ? load<V>(bias + n + L * j) : splat<V>(0.f);
    for (int r = 0; r < R; r++) acc[r][j] = b0;
  }
  for (int k = 0; k < K; k++) {
    V b[NV];
    for (int j = 0; j < NV; j++) b[j] = load<V>(B + k * N + n + L * j);
    for (int r = 0; r < R; r++) {
      const V a = splat<V>(A[r * lda + k]);
      for (int j = 0; j < NV; j++) acc[r][j] += a * b[j];
    }
  }
  for (int r = 0; r < R; r++)
    for (int j = 0; j < NV; j++) store(C + r * ldc + n + L * j, acc[r][j]);
}

// Rows per block: 2·R accumulators, two B vectors and the broadcast within the register file (16 ymm; 32 zmm).
constexpr int kGemmRows = kLanes == 16 ? 8 : 4;

// R rows: blocks of two and then one widest vector, an 8-column block (the AVX-512 copy's half vector), then the last
// N % 8 columns one by one.
template <int R>
static inline void GemmRowBlock(const float* A, int64_t lda, const float* B, int64_t N, int K, const float* bias, float* C, int64_t ldc) {
  int64_t n = 0;
  for (; n + 2 * kLanes <= N; n += 2 * kLanes) GemmBlock<vw, R, 2>(A, lda, B, N, K, bias, n, C, ldc);
  for (; n + kLanes <= N; n += kLanes) GemmBlock<vw, R, 1>(A, lda, B, N, K, bias, n, C, ldc);
  for (; n + 8 <= N; n += 8) GemmBlock<v8, R, 1>(A, lda, B, N, K, bias, n, C, ldc);
  for (; n < N; n++)
    for (int r = 0; r < R; r++) {
      float s = bias ? bias[n] : 0.f;
      for (int k = 0; k < K; k++) s += A[r * lda + k] * B[k * N + n];
      C[r * ldc + n] = s;
    }
}

// Rows [r0, r1) of C [M, N] = A [M, K] · B [K, N] (+ bias [N] when not null).
static void GemmRows(const float* A, const float* B, const float* bias, int64_t r0, int64_t r1, int K, int64_t N, float* C) {
  int64_t r = r0;
  for (; r + kGemmRows <= r1; r += kGemmRows) GemmRowBlock<kGemmRows>(A + r * K, K, B, N, K, bias, C + r * N, N);
  for (; r < r1; r++) GemmRowBlock<1>(A + r * K, K, B, N, K, bias, C + r * N, N);
}

// The linear layer's product (ControlnetTsMatMul in fused.cc), compiled per ISA (see simd.h): rows of C = A·B (+ bias),
// A [M, K] and B [K, N] row-major. The layers' products are small and skinny (K and N 32–512, M a few thousand
// tokens), where TensorFlow's MatMul (Eigen's contraction) ran 1.5–2× torch's time and splits even a 2-MFLOP product
// across its pool; here a 4-row × 16-column register block walks K with one broadcast and two FMAs per row and step,
// B staying in L1/L2 across the rows.

// One block of R (1–4) rows × W (8 or 16) columns: acc = bias (or 0) + Σ_k A[r][k]·B[k][n..n+W).
template <int R, int W>
static inline void GemmBlock(const float* A, int64_t lda, const float* B, int64_t N, int K, const float* bias, int64_t n, float* C, int64_t ldc) {
  v8 acc[R][W / 8];
  for (int j = 0; j < W / 8; j++) {
    const v8 b0 = bias ? load(bias + n + 8 * j) : splat(0.f);
    for (int r = 0; r < R; r++) acc[r][j] = b0;
  }
  for (int k = 0; k < K; k++) {
    v8 b[W / 8];
    for (int j = 0; j < W / 8; j++) b[j] = load(B + k * N + n + 8 * j);
    for (int r = 0; r < R; r++) {
      const v8 a = splat(A[r * lda + k]);
      for (int j = 0; j < W / 8; j++) acc[r][j] += a * b[j];
    }
  }
  for (int r = 0; r < R; r++)
    for (int j = 0; j < W / 8; j++) store(C + r * ldc + n + 8 * j, acc[r][j]);
}

// R rows: 16- then 8-column blocks, then the last N % 8 columns one by one.
template <int R>
static inline void GemmRowBlock(const float* A, int64_t lda, const float* B, int64_t N, int K, const float* bias, float* C, int64_t ldc) {
  int64_t n = 0;
  for (; n + 16 <= N; n += 16) GemmBlock<R, 16>(A, lda, B, N, K, bias, n, C, ldc);
  for (; n + 8 <= N; n += 8) GemmBlock<R, 8>(A, lda, B, N, K, bias, n, C, ldc);
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
  for (; r + 4 <= r1; r += 4) GemmRowBlock<4>(A + r * K, K, B, N, K, bias, C + r * N, N);
  for (; r < r1; r++) GemmRowBlock<1>(A + r * K, K, B, N, K, bias, C + r * N, N);
}

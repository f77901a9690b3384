// Fused attention's arithmetic (ControlnetTsAttention / …Grad in fused.cc), compiled per ISA (see simd.h).
//
// Layouts (one batch·head at a time; d = head width, DV = d rounded up to whole widest vectors vw of kLanes floats,
// DP = kLanes·DV, MP = keys rounded up to kLanes). The operands q, k, v, out, dout and dq are rows of d floats `ld`
// apart: a head's slice of [batch, tokens, heads·d] (ld = heads·d), so the model never splits heads into a layout of
// their own. Internal layouts:
//   "rows"       [R][d]   a few query rows, contiguous
//   "padded"     [n][DP]  rows zero-padded to whole vw vectors (values, keys, accumulators of dK / dV)
//   "transposed" [d][MP]  keys or values by channel, zero-padded past M (so a vector runs along keys)
// Score rows S / P are [R][MP]; entries past M are made 0 after the exponential, so padding never counts. Both
// directions take the widest vector vw (16 floats in the AVX-512 copy): along keys the scores, their maximum, the
// exponentials and dS; along a head's channels the products with values and the dK / dV updates. In the AVX-512 copy
// (32 vector registers) a block is 8 query rows, so each pass over a head's keys and values serves 8 rows, not 4.
// Against the earlier 8-float channel products and 4-row blocks (AVX-512 host, 2 threads, one head set alone):
// SD1.5's 4096-token self-attention (8 heads of 40) forward 175 → 96 ms, forward + backward 947 → 448 ms; 1024
// tokens, 8 heads of 80: 29 → 12 ms and 134 → 61 ms; bench-mid's 256 tokens, 4 heads of 16: 0.95 → 0.74 ms.

// S[r][0..MP) = A[r][0..d) · Bt[0..d)[0..MP): R query (or dO) rows against every key (or value), 2·kLanes keys per pass.
template <int R>
static void ScoreRows(const float* A, int d, const float* Bt, int MP, float* S) {
  int j = 0;
  for (; j + 2 * kLanes <= MP; j += 2 * kLanes) {
    vw acc[R][2] = {};
    for (int c = 0; c < d; c++) {
      const vw b0 = load<vw>(Bt + size_t(c) * MP + j), b1 = load<vw>(Bt + size_t(c) * MP + j + kLanes);
      for (int r = 0; r < R; r++) {
        const vw a = splat<vw>(A[r * d + c]);
        acc[r][0] += a * b0;
        acc[r][1] += a * b1;
      }
    }
    for (int r = 0; r < R; r++) {
      store(S + size_t(r) * MP + j, acc[r][0]);
      store(S + size_t(r) * MP + j + kLanes, acc[r][1]);
    }
  }
  if (j < MP) {  // MP is a multiple of kLanes: one vector left
    vw acc[R] = {};
    for (int c = 0; c < d; c++) {
      const vw b = load<vw>(Bt + size_t(c) * MP + j);
      for (int r = 0; r < R; r++) acc[r] += splat<vw>(A[r * d + c]) * b;
    }
    for (int r = 0; r < R; r++) store(S + size_t(r) * MP + j, acc[r]);
  }
}

// Query rows per block: the score kernel's register tile (8 rows × 2 vectors of keys is 16 accumulators: the AVX-512
// copy's 32 registers hold them, the 16 of AVX2 hold 4 rows).
constexpr int kBlock = kLanes == 16 ? 8 : 4;

static void Scores(const float* A, int rows, int d, const float* Bt, int MP, float* S) {
  if constexpr (kBlock == 8) {
    switch (rows) {
      case 8: return ScoreRows<8>(A, d, Bt, MP, S);
      case 7: return ScoreRows<7>(A, d, Bt, MP, S);
      case 6: return ScoreRows<6>(A, d, Bt, MP, S);
      case 5: return ScoreRows<5>(A, d, Bt, MP, S);
    }
  }
  switch (rows) {
    case 4: return ScoreRows<4>(A, d, Bt, MP, S);
    case 3: return ScoreRows<3>(A, d, Bt, MP, S);
    case 2: return ScoreRows<2>(A, d, Bt, MP, S);
    default: return ScoreRows<1>(A, d, Bt, MP, S);
  }
}

// Out[r][0..DP) = P[r][0..M) · B[0..M)[0..DP): R probability rows against padded values (or dS against keys).
// DV is a template argument for the widths the models use (SD1.5's heads of 40, 80 and 160 channels included) so the
// accumulators stay in registers; other widths take the loop with a run-time width.
template <int R, int DV>
static void WeightedRowsFixed(const float* P, int MP, int M, const float* B, float* Out) {
  constexpr int DP = kLanes * DV;
  vw acc[R][DV] = {};
  for (int j = 0; j < M; j++) {
    vw b[DV];
    for (int v = 0; v < DV; v++) b[v] = load<vw>(B + size_t(j) * DP + kLanes * v);
    for (int r = 0; r < R; r++) {
      const vw p = splat<vw>(P[size_t(r) * MP + j]);
      for (int v = 0; v < DV; v++) acc[r][v] += p * b[v];
    }
  }
  for (int r = 0; r < R; r++)
    for (int v = 0; v < DV; v++) store(Out + r * DP + kLanes * v, acc[r][v]);
}

static void WeightedRowsAny(const float* P, int rows, int MP, int M, const float* B, int DV, float* Out) {
  const int DP = kLanes * DV;
  for (int r = 0; r < rows; r++) {
    float* o = Out + r * DP;
    for (int v = 0; v < DV; v++) store(o + kLanes * v, splat<vw>(0.f));
    for (int j = 0; j < M; j++) {
      const vw p = splat<vw>(P[size_t(r) * MP + j]);
      const float* b = B + size_t(j) * DP;
      for (int v = 0; v < DV; v++) store(o + kLanes * v, load<vw>(o + kLanes * v) + p * load<vw>(b + kLanes * v));
    }
  }
}

// Rows per pass for a head width: as many as keep R·DV accumulators, DV operands and a broadcast within the copy's
// vector registers (32 with AVX-512, up to kBlock rows; 16 otherwise).
constexpr int RowsFor(int DV) {
  if (kLanes == 16) return std::clamp((31 - DV) / DV, 1, kBlock);
  return DV <= 2 ? 4 : DV == 3 ? 3 : DV <= 5 ? 2 : 1;
}

// G[j][0..DP) += Σ_r P[r][j] · A[r][0..DP) for j < M: the rank-R update of dK (dS against scaled queries) or dV
// (probabilities against dO); G is a padded accumulator owned by the caller.
template <int R, int DV>
static void AccumulateFixed(const float* P, int MP, int M, const float* A, float* G) {
  constexpr int DP = kLanes * DV;
  vw a[R][DV];
  for (int r = 0; r < R; r++)
    for (int v = 0; v < DV; v++) a[r][v] = load<vw>(A + r * DP + kLanes * v);
  for (int j = 0; j < M; j++) {
    float* g = G + size_t(j) * DP;
    vw acc[DV];
    for (int v = 0; v < DV; v++) acc[v] = load<vw>(g + kLanes * v);
    for (int r = 0; r < R; r++) {
      const vw p = splat<vw>(P[size_t(r) * MP + j]);
      for (int v = 0; v < DV; v++) acc[v] += p * a[r][v];
    }
    for (int v = 0; v < DV; v++) store(g + kLanes * v, acc[v]);
  }
}

static void AccumulateAny(const float* P, int rows, int MP, int M, const float* A, int DV, float* G) {
  const int DP = kLanes * DV;
  for (int j = 0; j < M; j++) {
    float* g = G + size_t(j) * DP;
    for (int r = 0; r < rows; r++) {
      const vw p = splat<vw>(P[size_t(r) * MP + j]);
      for (int v = 0; v < DV; v++) store(g + kLanes * v, load<vw>(g + kLanes * v) + p * load<vw>(A + r * DP + kLanes * v));
    }
  }
}

// Op's register-tiled pass over `rows` rows of P: RowsFor(DV) rows at a time, then single rows.
template <typename Op, int DV>
static void RowPasses(const float* P, int rows, int MP, int M, const float* X, float* Y) {
  constexpr int R = RowsFor(DV);
  int r = 0;
  for (; r + R <= rows; r += R) Op::template Pass<R, DV>(P + size_t(r) * MP, MP, M, X, Y, r);
  for (; r < rows; r++) Op::template Pass<1, DV>(P + size_t(r) * MP, MP, M, X, Y, r);
}

// The head widths with templated kernels; others take Op's run-time-width loop. In vectors of 16 (8) floats: heads of
// up to 16 (8) channels are 1, SD1.5's 40 are 3 (5), its 80 are 5 (10), its 160 are 10 (20, the loop).
template <typename Op>
static void ByWidth(const float* P, int rows, int MP, int M, const float* X, int DV, float* Y) {
  switch (DV) {
    case 1: return RowPasses<Op, 1>(P, rows, MP, M, X, Y);
    case 2: return RowPasses<Op, 2>(P, rows, MP, M, X, Y);
    case 3: return RowPasses<Op, 3>(P, rows, MP, M, X, Y);
    case 4: return RowPasses<Op, 4>(P, rows, MP, M, X, Y);
    case 5: return RowPasses<Op, 5>(P, rows, MP, M, X, Y);
    case 6: return RowPasses<Op, 6>(P, rows, MP, M, X, Y);
    case 8: return RowPasses<Op, 8>(P, rows, MP, M, X, Y);
    case 10: return RowPasses<Op, 10>(P, rows, MP, M, X, Y);
    default: return Op::Any(P, rows, MP, M, X, DV, Y);
  }
}

// Out rows (one per P row) from shared padded B.
struct WeightedRowsOp {
  template <int R, int DV>
  static void Pass(const float* P, int MP, int M, const float* B, float* Out, int r) { WeightedRowsFixed<R, DV>(P, MP, M, B, Out + r * kLanes * DV); }
  static void Any(const float* P, int rows, int MP, int M, const float* B, int DV, float* Out) { WeightedRowsAny(P, rows, MP, M, B, DV, Out); }
};
static void WeightedRows(const float* P, int rows, int MP, int M, const float* B, int DV, float* Out) {
  ByWidth<WeightedRowsOp>(P, rows, MP, M, B, DV, Out);
}

// One A row per P row, into the shared accumulator G.
struct AccumulateOp {
  template <int R, int DV>
  static void Pass(const float* P, int MP, int M, const float* A, float* G, int r) { AccumulateFixed<R, DV>(P, MP, M, A + r * kLanes * DV, G); }
  static void Any(const float* P, int rows, int MP, int M, const float* A, int DV, float* G) { AccumulateAny(P, rows, MP, M, A, DV, G); }
};
static void Accumulate(const float* P, int rows, int MP, int M, const float* A, int DV, float* G) {
  ByWidth<AccumulateOp>(P, rows, MP, M, A, DV, G);
}

// Narrow heads in the AVX-512 copy (d ≤ 8, so DP is 8) attending to many keys: the products over keys run along keys
// as well. One FMA then takes 16 keys of one channel, where the channel-direction products above fill half a vector
// per key and spend a broadcast per row and key. Keys and values are kept transposed with DP channel rows (zero past
// d); dK and dV accumulate transposed in [DP][MP] buffers of the call and are added into the caller's padded
// accumulators at its end. Measured on one head of 1024 queries, 1 thread, alternating: d = 8 and 1024 keys
// (bench-mid's first level) forward 0.75 / 0.96 ms against 0.95 / 1.19 through the channel direction, backward 1.29 /
// 1.50 against 1.57 / 2.00 ms. Not taken at d = 16 (one row of 16 accumulators: a load per FMA, 1.6× slower than the
// channel direction) nor for 77 keys (the 16-lane sums per row then cost more than they save).
static inline bool NarrowHead(int d, int M) { return kLanes == 16 && d <= 8 && M >= 128; }

// The sum of a vector's lanes, halving it (a few shuffles, not one add per lane).
static inline float ReduceAdd(vw a) {
  v8 s;
  if constexpr (kLanes == 16) {
    v8 hi;
    std::memcpy(&s, &a, sizeof s);
    std::memcpy(&hi, reinterpret_cast<const char*>(&a) + sizeof s, sizeof hi);
    s += hi;
  } else {
    std::memcpy(&s, &a, sizeof s);
  }
  v4f lo4, hi4;
  std::memcpy(&lo4, &s, sizeof lo4);
  std::memcpy(&hi4, reinterpret_cast<const char*>(&s) + sizeof lo4, sizeof hi4);
  lo4 += hi4;
  return (lo4[0] + lo4[2]) + (lo4[1] + lo4[3]);
}

// Out[r][0..D) = Σ_j P[r][j] · Bt[0..D)[j]: R rows of P (or dS) against transposed values (or keys); Out's rows ldo apart.
template <int R, int D>
static void KeyDotRows(const float* P, int MP, const float* Bt, float* Out, int ldo) {
  vw acc[R][D] = {};
  for (int j = 0; j < MP; j += kLanes) {
    vw p[R];
    for (int r = 0; r < R; r++) p[r] = load<vw>(P + size_t(r) * MP + j);
    for (int c = 0; c < D; c++) {
      const vw b = load<vw>(Bt + size_t(c) * MP + j);
      for (int r = 0; r < R; r++) acc[r][c] += p[r] * b;
    }
  }
  for (int r = 0; r < R; r++)
    for (int c = 0; c < D; c++) Out[r * ldo + c] = ReduceAdd(acc[r][c]);
}

// Out [rows][8] (rows ldo apart) from P [rows][MP] and Bt [8][MP], two rows at a time (16 accumulators, 2 of P, 1 of Bt).
static void KeyDot(const float* P, int rows, int MP, const float* Bt, float* Out, int ldo) {
  int r = 0;
  for (; r + 2 <= rows; r += 2) KeyDotRows<2, 8>(P + size_t(r) * MP, MP, Bt, Out + r * ldo, ldo);
  for (; r < rows; r++) KeyDotRows<1, 8>(P + size_t(r) * MP, MP, Bt, Out + r * ldo, ldo);
}

// Gt[c][j] += Σ_r P[r][j] · A[r][c] for c < D, every j: the rank-R update of transposed dK (dS against scaled
// queries) or dV (probabilities against dO), A [R][D] with rows lda apart; four channels per pass keep R·4
// broadcasts in registers.
template <int R, int D>
static void KeyAccumulateRows(const float* P, int MP, const float* A, int lda, float* Gt) {
  constexpr int C = 4;
  for (int c0 = 0; c0 < D; c0 += C) {
    vw a[R][C];
    for (int r = 0; r < R; r++)
      for (int c = 0; c < C; c++) a[r][c] = splat<vw>(A[r * lda + c0 + c]);
    for (int j = 0; j < MP; j += kLanes) {
      vw p[R];
      for (int r = 0; r < R; r++) p[r] = load<vw>(P + size_t(r) * MP + j);
      for (int c = 0; c < C; c++) {
        float* g = Gt + size_t(c0 + c) * MP + j;
        vw acc = load<vw>(g);
        for (int r = 0; r < R; r++) acc += p[r] * a[r][c];
        store(g, acc);
      }
    }
  }
}

// Gt [8][MP] += the update of `rows` (≤ kBlock) rows of P [rows][MP] and A [rows][8] (rows lda apart), four rows at a
// time (their 16 broadcasts stay in registers).
static void KeyAccumulate(const float* P, int rows, int MP, const float* A, int lda, float* Gt) {
  for (int r = 0; r < rows; r += 4) {
    const float* p = P + size_t(r) * MP;
    const float* a = A + r * lda;
    switch (std::min(4, rows - r)) {
      case 4: KeyAccumulateRows<4, 8>(p, MP, a, lda, Gt); break;
      case 3: KeyAccumulateRows<3, 8>(p, MP, a, lda, Gt); break;
      case 2: KeyAccumulateRows<2, 8>(p, MP, a, lda, Gt); break;
      default: KeyAccumulateRows<1, 8>(p, MP, a, lda, Gt);
    }
  }
}

// P[r][j] = exp(S[r][j] − shift[r]) for j < M, 0 past M; sums[r] = Σ_j P[r][j] when sums is given.
static void ExpRows(float* S, int rows, int MP, int M, const float* shift, float* sums) {
  for (int r = 0; r < rows; r++) {
    float* s = S + size_t(r) * MP;
    const vw m = splat<vw>(shift[r]);
    for (int j = 0; j < MP; j += kLanes) store(s + j, expv(load<vw>(s + j) - m));
    for (int j = M; j < MP; j++) s[j] = 0.f;
    if (!sums) continue;
    vw acc = {};
    for (int j = 0; j < MP; j += kLanes) acc += load<vw>(s + j);
    float l = 0.f;
    for (int t = 0; t < kLanes; t++) l += acc[t];
    sums[r] = l;
  }
}

// The largest of a score row's first M entries.
static float RowMax(const float* s, int M) {
  int j = 0;
  float m = s[0];
  if (M >= kLanes) {
    vw acc = load<vw>(s);
    for (j = kLanes; j + kLanes <= M; j += kLanes) {
      const vw x = load<vw>(s + j);
      acc = x > acc ? x : acc;
    }
    for (int t = 0; t < kLanes; t++) m = acc[t] > m ? acc[t] : m;
  }
  for (; j < M; j++) m = s[j] > m ? s[j] : m;
  return m;
}

// A head's padded row width DP (the caller's dK / dV accumulators are [M][DP]).
static int PaddedWidth(int d) { return (d + kLanes - 1) / kLanes * kLanes; }

// One batch·head's slice of the work: the layouts of its keys and values, built once per call.
struct Head {
  int N, M, d, DV, DP, MP;
  bool narrow;  // NarrowHead(d, M): keys and values transposed with 8 channel rows, no padded copies
  AlignedFloats Kt, Vt, Kp, Vp;  // transposed / padded copies (only those the pass needs)
  Head(const float* k, const float* v, int N_, int M_, int d_, size_t ld, bool backward) : N(N_), M(M_), d(d_) {
    DP = PaddedWidth(d);
    DV = DP / kLanes;
    MP = (M + kLanes - 1) / kLanes * kLanes;
    narrow = NarrowHead(d, M);
    const int rowsT = narrow ? 8 : d;  // channel rows of the transposed copies
    Kt.assign(size_t(rowsT) * MP, 0.f);
    for (int j = 0; j < M; j++)
      for (int c = 0; c < d; c++) Kt[size_t(c) * MP + j] = k[j * ld + c];
    if (backward || narrow) {
      Vt.assign(size_t(rowsT) * MP, 0.f);
      for (int j = 0; j < M; j++)
        for (int c = 0; c < d; c++) Vt[size_t(c) * MP + j] = v[j * ld + c];
    }
    if (narrow) return;
    AlignedFloats& padded = backward ? Kp : Vp;  // keys for dq, values for the output
    const float* from = backward ? k : v;
    padded.assign(size_t(M) * DP, 0.f);
    for (int j = 0; j < M; j++)
      for (int c = 0; c < d; c++) padded[size_t(j) * DP + c] = from[j * ld + c];
  }
};

// Forward for query rows [i0, i1) of one head: out = softmax(scale·q·kᵀ)·v and lse = the rows' log-sum-exp.
static void ForwardRows(const Head& h, const float* q, size_t ld, float scale, int i0, int i1, float* out, float* lse) {
  AlignedFloats A(kBlock * h.d), S(size_t(kBlock) * h.MP), O(kBlock * h.DP);
  float shift[kBlock], sum[kBlock];
  for (int i = i0; i < i1; i += kBlock) {
    const int R = std::min(kBlock, i1 - i);
    for (int r = 0; r < R; r++)
      for (int c = 0; c < h.d; c++) A[r * h.d + c] = q[(i + r) * ld + c] * scale;
    Scores(A.data(), R, h.d, h.Kt.data(), h.MP, S.data());
    for (int r = 0; r < R; r++) shift[r] = RowMax(S.data() + size_t(r) * h.MP, h.M);
    ExpRows(S.data(), R, h.MP, h.M, shift, sum);
    for (int r = 0; r < R; r++) lse[i + r] = shift[r] + std::log(sum[r]);
    if (h.narrow) KeyDot(S.data(), R, h.MP, h.Vt.data(), O.data(), h.DP);
    else WeightedRows(S.data(), R, h.MP, h.M, h.Vp.data(), h.DV, O.data());
    for (int r = 0; r < R; r++)  // normalised here, on d values, rather than on the M probabilities
      for (int c = 0; c < h.d; c++) out[(i + r) * ld + c] = O[r * h.DP + c] / sum[r];
  }
}

// Backward for query rows [i0, i1) of one head (FlashAttention-2's recomputation: P from q, k and the saved lse):
// writes those rows of dq and adds their share of dk and dv into the padded accumulators dKp / dVp.
static void BackwardRows(const Head& h, const float* q, const float* o, const float* lse, const float* dout, size_t ld,
                         float scale, int i0, int i1, float* dq, float* dKp, float* dVp) {
  const int d = h.d, DP = h.DP, MP = h.MP;
  AlignedFloats Aq(kBlock * d), Ado(kBlock * d), Qp(kBlock * DP, 0.f), DOp(kBlock * DP, 0.f);
  AlignedFloats P(size_t(kBlock) * MP), dS(size_t(kBlock) * MP), dQ(kBlock * DP);
  AlignedFloats dKt(h.narrow ? size_t(8) * MP : 0, 0.f), dVt(dKt.size(), 0.f);  // narrow heads: transposed dK, dV
  float rowLse[kBlock], rowD[kBlock];
  for (int i = i0; i < i1; i += kBlock) {
    const int R = std::min(kBlock, i1 - i);
    for (int r = 0; r < R; r++) {
      float D = 0.f;
      for (int c = 0; c < d; c++) {
        const size_t at = (i + r) * ld + c;
        Aq[r * d + c] = Qp[r * DP + c] = q[at] * scale;
        Ado[r * d + c] = DOp[r * DP + c] = dout[at];
        D += dout[at] * o[at];
      }
      rowD[r] = D;
      rowLse[r] = lse[i + r];
    }
    Scores(Aq.data(), R, d, h.Kt.data(), MP, P.data());
    ExpRows(P.data(), R, MP, h.M, rowLse, nullptr);
    Scores(Ado.data(), R, d, h.Vt.data(), MP, dS.data());  // dP = dO·vᵀ, turned into dS in place
    for (int r = 0; r < R; r++) {
      const vw D = splat<vw>(rowD[r]);
      float* ds = dS.data() + size_t(r) * MP;
      const float* p = P.data() + size_t(r) * MP;
      for (int j = 0; j < MP; j += kLanes) store(ds + j, load<vw>(p + j) * (load<vw>(ds + j) - D));
    }
    if (h.narrow) {
      KeyAccumulate(P.data(), R, MP, DOp.data(), DP, dVt.data());
      KeyAccumulate(dS.data(), R, MP, Qp.data(), DP, dKt.data());
      KeyDot(dS.data(), R, MP, h.Kt.data(), dQ.data(), DP);
    } else {
      Accumulate(P.data(), R, MP, h.M, DOp.data(), h.DV, dVp);
      Accumulate(dS.data(), R, MP, h.M, Qp.data(), h.DV, dKp);
      WeightedRows(dS.data(), R, MP, h.M, h.Kp.data(), h.DV, dQ.data());
    }
    for (int r = 0; r < R; r++)
      for (int c = 0; c < d; c++) dq[(i + r) * ld + c] = dQ[r * DP + c] * scale;
  }
  if (!h.narrow) return;
  for (int j = 0; j < h.M; j++)
    for (int c = 0; c < d; c++) {
      dKp[size_t(j) * DP + c] += dKt[size_t(c) * MP + j];
      dVp[size_t(j) * DP + c] += dVt[size_t(c) * MP + j];
    }
}

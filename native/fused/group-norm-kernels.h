// GroupNorm (+ SiLU) arithmetic (ControlnetTsGroupNorm / …Grad in fused.cc), compiled per ISA (see simd.h).
//
// x is channels-last [B, P, C] (P = positions), groups of cg = C / G consecutive channels. One call handles batch
// item b's groups [g0, g1): the statistics are two-pass (mean, then the mean of squared deviations: biased variance,
// as torch.nn.GroupNorm) with per-channel double sums; every pass walks the positions in memory order.

// (GroupSlice, the part of x one call handles, is declared in fused.cc: the same type for both compilations.)

// Per-thread scratch of n elements, reused across calls (LayerNorm runs one slice per token: [B·N, 1, C], 1 group).
template <typename T>
static T* Scratch(int slot, size_t n) {
  thread_local std::vector<T> buf[8];
  if (buf[slot].size() < n) buf[slot].resize(n);
  return buf[slot].data();
}


// y = (x − mean)·rstd·gamma + beta, then SiLU when `silu`, for the channels [c0, c1) of one position row.
static void NormalizeRow(const float* x, float* y, const float* scale, const float* shift, int c0, int c1, bool silu) {
  int c = int(ForVectors(c0, c1, [&](auto tag, int64_t j) {
    using V = decltype(tag);
    const V z = load<V>(x + j) * load<V>(scale + j) + load<V>(shift + j);
    store(y + j, silu ? z * sigmoidv(z) : z);
  }));
  for (; c < c1; c++) {
    const float z = x[c] * scale[c] + shift[c];
    y[c] = silu ? z / (1.f + std::exp(-z)) : z;
  }
}

// Forward for one slice: mean and rstd per group (out: [G] rows of this batch item), y.
static void GroupNormForward(const GroupSlice& s, const float* gamma, const float* beta, float eps, bool silu, float* y, float* mean, float* rstd) {
  const int c0 = s.c0(), c1 = s.c1();
  double* acc = Scratch<double>(0, s.C);
  float *rowMean = Scratch<float>(1, s.C), *scale = Scratch<float>(2, s.C), *shift = Scratch<float>(3, s.C);
  std::fill(acc + c0, acc + c1, 0.0);
  const double n = double(s.P) * s.cg;
  for (int64_t p = 0; p < s.P; p++)
    for (int c = c0; c < c1; c++) acc[c] += s.x[p * s.C + c];
  for (int g = s.g0; g < s.g1; g++) {
    double sum = 0;
    for (int c = g * s.cg; c < (g + 1) * s.cg; c++) sum += acc[c];
    mean[g] = float(sum / n);
    for (int c = g * s.cg; c < (g + 1) * s.cg; c++) rowMean[c] = mean[g], acc[c] = 0;
  }
  for (int64_t p = 0; p < s.P; p++)
    for (int c = c0; c < c1; c++) {
      const double d = s.x[p * s.C + c] - rowMean[c];
      acc[c] += d * d;
    }
  for (int g = s.g0; g < s.g1; g++) {
    double sum = 0;
    for (int c = g * s.cg; c < (g + 1) * s.cg; c++) sum += acc[c];
    rstd[g] = float(1.0 / std::sqrt(sum / n + eps));
    for (int c = g * s.cg; c < (g + 1) * s.cg; c++) {
      scale[c] = rstd[g] * gamma[c];
      shift[c] = beta[c] - mean[g] * scale[c];
    }
  }
  for (int64_t p = 0; p < s.P; p++) NormalizeRow(s.x + p * s.C, y + p * s.C, scale, shift, c0, c1, silu);
}

// The gradient reaching the normalised value z = xhat·gamma + beta: dy, through SiLU's derivative when `silu`.
static inline float DzOf(float dy, float z, bool silu) {
  if (!silu) return dy;
  const float sg = 1.f / (1.f + std::exp(-z));
  return dy * sg * (1.f + z * (1.f - sg));
}

// Backward for one slice: dx for its channels, and this batch item's share of dgamma / dbeta (dgamma_b, dbeta_b: [C]).
static void GroupNormBackward(const GroupSlice& s, const float* gamma, const float* beta, const float* mean, const float* rstd,
                              const float* dy, bool silu, float* dx, float* dgamma_b, float* dbeta_b) {
  const int c0 = s.c0(), c1 = s.c1();
  float *m = Scratch<float>(0, s.C), *r = Scratch<float>(1, s.C), *scale = Scratch<float>(2, s.C), *shift = Scratch<float>(3, s.C);
  float *dz = Scratch<float>(4, s.C), *xhat = Scratch<float>(5, s.C);
  double *sdz = Scratch<double>(0, s.C), *sdzx = Scratch<double>(1, s.C);
  std::fill(sdz + c0, sdz + c1, 0.0);
  std::fill(sdzx + c0, sdzx + c1, 0.0);
  for (int c = c0; c < c1; c++) {
    const int g = c / s.cg;
    m[c] = mean[g], r[c] = rstd[g];
    scale[c] = r[c] * gamma[c];
    shift[c] = beta[c] - m[c] * scale[c];
  }
  // dz and xhat for one position row (vectorised SiLU derivative)
  auto row = [&](int64_t p) {
    const float* xr = s.x + p * s.C;
    const float* dyr = dy + p * s.C;
    int c = int(ForVectors(c0, c1, [&](auto tag, int64_t j) {
      using V = decltype(tag);
      const V xv = load<V>(xr + j);
      const V zv = xv * load<V>(scale + j) + load<V>(shift + j);
      V d = load<V>(dyr + j);
      if (silu) {
        const V sg = sigmoidv(zv);
        d = d * sg * (splat<V>(1.f) + zv * (splat<V>(1.f) - sg));
      }
      store(dz + j, d);
      store(xhat + j, (xv - load<V>(m + j)) * load<V>(r + j));
    }));
    for (; c < c1; c++) {
      dz[c] = DzOf(dyr[c], xr[c] * scale[c] + shift[c], silu);
      xhat[c] = (xr[c] - m[c]) * r[c];
    }
  };
  for (int64_t p = 0; p < s.P; p++) {
    row(p);
    for (int c = c0; c < c1; c++) sdz[c] += dz[c], sdzx[c] += double(dz[c]) * xhat[c];
  }
  float *k1 = Scratch<float>(6, s.C), *k2 = Scratch<float>(7, s.C);  // per channel: mean(dxhat), mean(dxhat·xhat) of its group
  const double n = double(s.P) * s.cg;
  for (int g = s.g0; g < s.g1; g++) {
    double s1 = 0, s2 = 0;
    for (int c = g * s.cg; c < (g + 1) * s.cg; c++) s1 += gamma[c] * sdz[c], s2 += gamma[c] * sdzx[c];
    for (int c = g * s.cg; c < (g + 1) * s.cg; c++) k1[c] = float(s1 / n), k2[c] = float(s2 / n);
  }
  for (int c = c0; c < c1; c++) dgamma_b[c] = float(sdzx[c]), dbeta_b[c] = float(sdz[c]);
  // dx = rstd·(dz·gamma − mean(dxhat) − xhat·mean(dxhat·xhat))
  for (int64_t p = 0; p < s.P; p++) {
    row(p);
    float* o = dx + p * s.C;
    for (int c = c0; c < c1; c++) o[c] = r[c] * (dz[c] * gamma[c] - k1[c] - xhat[c] * k2[c]);
  }
}

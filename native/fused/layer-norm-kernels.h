// LayerNorm's arithmetic (ControlnetTsLayerNorm / …Grad in fused.cc), compiled per ISA (see simd.h). Composed from
// tfjs ops a LayerNorm over [tokens, C] is 9 full-size ops forward and ~18 backward, each a TensorFlow kernel on a
// tensor too small to be worth a thread; here every row (token) is normalised while it sits in cache: statistics
// two-pass in double lanes (mean, then the mean of squared deviations: biased variance, as torch.nn.LayerNorm).

// Rows [r0, r1) of x [rows, C]: y, and each row's mean and rstd.
static void LayerNormRows(const float* x, int64_t r0, int64_t r1, int C, const float* gamma, const float* beta, float eps, float* y,
                          float* mean, float* rstd) {
  for (int64_t r = r0; r < r1; r++) {
    const float* xr = x + r * C;
    const float m = float(SumD(xr, C) / C);
    const double q = SumSqDevD(xr, C, m);
    const float rs = float(1.0 / std::sqrt(q / C + eps));
    mean[r] = m, rstd[r] = rs;
    float* yr = y + r * C;
    int c = 0;
    for (; c + 8 <= C; c += 8) store(yr + c, (load(xr + c) - splat(m)) * splat(rs) * load(gamma + c) + load(beta + c));
    for (; c < C; c++) yr[c] = (xr[c] - m) * rs * gamma[c] + beta[c];
  }
}

// Rows [r0, r1): dx, and their share of dgamma / dbeta added into dgamma_p / dbeta_p ([C], owned by the caller).
// dx = rstd·(dy·gamma − mean(dy·gamma) − xhat·mean(dy·gamma·xhat)), xhat = (x − mean)·rstd.
static void LayerNormGradRows(const float* x, const float* dy, int64_t r0, int64_t r1, int C, const float* gamma, const float* mean,
                              const float* rstd, float* dx, float* dgamma_p, float* dbeta_p) {
  for (int64_t r = r0; r < r1; r++) {
    const float* xr = x + r * C;
    const float* dyr = dy + r * C;
    const float m = mean[r], rs = rstd[r];
    // s1 = Σ dy·gamma, s2 = Σ dy·gamma·xhat (in double lanes); the row's dy·xhat and dy added into dgamma / dbeta
    v4d s1a = {0, 0, 0, 0}, s1b = s1a, s2a = s1a, s2b = s1a, lo, hi, xlo, xhi;
    int c = 0;
    for (; c + 8 <= C; c += 8) {
      const v8 xhat = (load(xr + c) - splat(m)) * splat(rs), d = load(dyr + c), g = d * load(gamma + c);
      store(dgamma_p + c, load(dgamma_p + c) + d * xhat);
      store(dbeta_p + c, load(dbeta_p + c) + d);
      float gf[8], xf[8];
      store(gf, g), store(xf, xhat);
      load_d(gf, lo, hi), load_d(xf, xlo, xhi);
      s1a += lo, s1b += hi, s2a += lo * xlo, s2b += hi * xhi;
    }
    double s1 = hsum(s1a + s1b), s2 = hsum(s2a + s2b);
    for (; c < C; c++) {
      const float xhat = (xr[c] - m) * rs;
      const float g = dyr[c] * gamma[c];
      s1 += g;
      s2 += double(g) * xhat;
      dgamma_p[c] += dyr[c] * xhat;
      dbeta_p[c] += dyr[c];
    }
    const float k1 = float(s1 / C), k2 = float(s2 / C);
    float* o = dx + r * C;
    for (int c = 0; c < C; c++) o[c] = rs * (dyr[c] * gamma[c] - k1 - (xr[c] - m) * rs * k2);
  }
}

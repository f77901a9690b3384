// GEGLU's arithmetic (ControlnetTsGeglu / …Grad in fused.cc), compiled per ISA (see simd.h). diffusers' GEGLU splits the
// projection h [.., 2F] into hidden a (first F) and gate g (last F) and returns a·gelu(g), exact GELU (erf), in every
// transformer block's feed-forward. Composed from tfjs ops it is a split, four ops for GELU and a product forward,
// about a dozen full-size ops and a concat backward; here it is one pass each way over h.

// Φ(x) = ½(1 + erf(x/√2)), the standard normal CDF, and φ(x) = exp(−x²/2)/√(2π), its density, on every lane of v8 or
// vw. erf by Abramowitz & Stegun 7.1.26, |error| ≤ 1.5e-7 (so ≤ 7.5e-8 on Φ, about float32's rounding of values near
// 1): 1 − erf(z) = (a1·t + … + a5·t⁵)·exp(−z²), t = 1/(1 + p·z), z = |x|/√2 ≥ 0 — and exp(−z²) is the density's
// exponential.
template <typename V>
static inline void NormalCdfPdf(V x, V& cdf, V& pdf) {
  const V e = expv(splat<V>(-0.5f) * x * x);
  const V z = (x < 0 ? -x : x) * splat<V>(0.70710678118654752f);
  const V t = splat<V>(1.f) / (splat<V>(1.f) + splat<V>(0.3275911f) * z);
  V p = splat<V>(1.061405429f);
  p = p * t + splat<V>(-1.453152027f);
  p = p * t + splat<V>(1.421413741f);
  p = p * t + splat<V>(-0.284496736f);
  p = p * t + splat<V>(0.254829592f);
  const V q = splat<V>(0.5f) * p * t * e;  // Φ(−|x|)
  cdf = x < 0 ? q : splat<V>(1.f) - q;
  pdf = e * splat<V>(0.39894228040143268f);
}
static inline float NormalCdf(float x) { return 0.5f * std::erfc(-x * 0.70710678118654752f); }
static inline float NormalPdf(float x) { return std::exp(-0.5f * x * x) * 0.39894228040143268f; }

// rows r0…r1 of h [R, 2F] → y [R, F] = a·g·Φ(g)
static void GegluRows(const float* h, int64_t r0, int64_t r1, int64_t F, float* y) {
  for (int64_t r = r0; r < r1; r++) {
    const float* a = h + r * 2 * F;
    const float* g = a + F;
    float* out = y + r * F;
    int64_t i = ForVectors(0, F, [&](auto tag, int64_t j) {
      using V = decltype(tag);
      const V gv = load<V>(g + j);
      V cdf, pdf;
      NormalCdfPdf(gv, cdf, pdf);
      store(out + j, load<V>(a + j) * gv * cdf);
    });
    for (; i < F; i++) out[i] = a[i] * g[i] * NormalCdf(g[i]);
  }
}

// dh = [dy·gelu(g), dy·a·gelu′(g)] with gelu′(g) = Φ(g) + g·φ(g)
static void GegluGradRows(const float* h, const float* dy, int64_t r0, int64_t r1, int64_t F, float* dh) {
  for (int64_t r = r0; r < r1; r++) {
    const float* a = h + r * 2 * F;
    const float* g = a + F;
    const float* d = dy + r * F;
    float* da = dh + r * 2 * F;
    float* dg = da + F;
    int64_t i = ForVectors(0, F, [&](auto tag, int64_t j) {
      using V = decltype(tag);
      const V gv = load<V>(g + j), dv = load<V>(d + j);
      V cdf, pdf;
      NormalCdfPdf(gv, cdf, pdf);
      store(da + j, dv * gv * cdf);
      store(dg + j, dv * load<V>(a + j) * (cdf + gv * pdf));
    });
    for (; i < F; i++) {
      const float cdf = NormalCdf(g[i]);
      da[i] = d[i] * g[i] * cdf;
      dg[i] = d[i] * a[i] * (cdf + g[i] * NormalPdf(g[i]));
    }
  }
}

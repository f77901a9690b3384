// AdamW's element update (ControlnetTsAdamW in fused.cc), compiled per ISA (see simd.h). The same float32 operations in
// the same order as lib/training/optim/adamw.ts composes from TensorFlow ops — one rounding per operation, never an
// FMA (contraction is switched off here), so the fused update equals the composed one bit for bit.

__attribute__((optimize("fp-contract=off"))) static void AdamWUpdate(const float* p, const float* g, const float* m, const float* v,
                                                                      int64_t n, const AdamScalars& c, float* p2, float* m2, float* v2) {
  for (int64_t i = 0; i < n; i++) {
    // m ← m + (g − m)·(1 − β1)
    float t = g[i] - m[i];
    t = t * c.one_minus_beta1;
    t = m[i] + t;
    m2[i] = t;
    // v ← v·β2 + g²·(1 − β2)
    float a = g[i] * g[i];
    a = a * c.one_minus_beta2;
    float b = v[i] * c.beta2;
    b = b + a;
    v2[i] = b;
    // u ← (m / (√v / √(1 − β2ᵗ) + ε)) · (−lr / (1 − β1ᵗ)); p ← p·(1 − lr·wd) + u
    float u = std::sqrt(b);
    u = u / c.bc2_sqrt;
    u = u + c.eps;
    u = t / u;
    u = u * c.neg_step_size;
    float q = p[i] * c.decay;
    p2[i] = q + u;
  }
}

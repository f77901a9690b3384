// SiLU's arithmetic (ControlnetTsSilu / …Grad in fused.cc) and the plain add, compiled per ISA (see simd.h). Composed from tfjs ops SiLU
// is two full-size passes forward (Sigmoid, Multiply) and about six backward (the product rule through the sigmoid's
// gradient), each allocating a tensor; here it is one pass each way.

// y = x·sigmoid(x)
static void SiluForward(const float* x, int64_t n, float* y) {
  int64_t i = ForVectors(0, n, [&](auto tag, int64_t j) {
    using V = decltype(tag);
    const V v = load<V>(x + j);
    store(y + j, v * sigmoidv(v));
  });
  for (; i < n; i++) y[i] = x[i] / (1.f + std::exp(-x[i]));
}

// dx = dy·s·(1 + x·(1 − s)), s = sigmoid(x)
static void SiluBackward(const float* x, const float* dy, int64_t n, float* dx) {
  int64_t i = ForVectors(0, n, [&](auto tag, int64_t j) {
    using V = decltype(tag);
    const V v = load<V>(x + j), s = sigmoidv(v);
    store(dx + j, load<V>(dy + j) * s * (splat<V>(1.f) + v * (splat<V>(1.f) - s)));
  });
  for (; i < n; i++) {
    const float s = 1.f / (1.f + std::exp(-x[i]));
    dx[i] = dy[i] * s * (1.f + x[i] * (1.f - s));
  }
}

// y = a + b (ControlnetTsAdd)
static void AddArrays(const float* a, const float* b, int64_t n, float* y) {
  int64_t i = ForVectors(0, n, [&](auto tag, int64_t j) {
    using V = decltype(tag);
    store(y + j, load<V>(a + j) + load<V>(b + j));
  });
  for (; i < n; i++) y[i] = a[i] + b[i];
}

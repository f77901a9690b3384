// SiLU's arithmetic (ControlnetTsSilu / …Grad in fused.cc) and the plain add, compiled per ISA (see simd.h). Composed from tfjs ops SiLU
// is two full-size passes forward (Sigmoid, Multiply) and about six backward (the product rule through the sigmoid's
// gradient), each allocating a tensor; here it is one pass each way.

// Element-wise loops run in the copy's widest vector (vw), an 8-lane vector for what is left, then single elements:
// lane by lane the same operations at every width, so every copy computes each element alike.

// y = x·sigmoid(x)
template <typename V>
static inline void SiluVectors(const float* x, int64_t& i, int64_t n, float* y) {
  constexpr int L = sizeof(V) / sizeof(float);
  for (; i + L <= n; i += L) {
    const V v = load<V>(x + i);
    store(y + i, v * sigmoidv(v));
  }
}
static void SiluForward(const float* x, int64_t n, float* y) {
  int64_t i = 0;
  SiluVectors<vw>(x, i, n, y);
  SiluVectors<v8>(x, i, n, y);
  for (; i < n; i++) y[i] = x[i] / (1.f + std::exp(-x[i]));
}

// dx = dy·s·(1 + x·(1 − s)), s = sigmoid(x)
template <typename V>
static inline void SiluGradVectors(const float* x, const float* dy, int64_t& i, int64_t n, float* dx) {
  constexpr int L = sizeof(V) / sizeof(float);
  for (; i + L <= n; i += L) {
    const V v = load<V>(x + i), s = sigmoidv(v);
    store(dx + i, load<V>(dy + i) * s * (splat<V>(1.f) + v * (splat<V>(1.f) - s)));
  }
}
static void SiluBackward(const float* x, const float* dy, int64_t n, float* dx) {
  int64_t i = 0;
  SiluGradVectors<vw>(x, dy, i, n, dx);
  SiluGradVectors<v8>(x, dy, i, n, dx);
  for (; i < n; i++) {
    const float s = 1.f / (1.f + std::exp(-x[i]));
    dx[i] = dy[i] * s * (1.f + x[i] * (1.f - s));
  }
}

// y = a + b (ControlnetTsAdd)
static void AddArrays(const float* a, const float* b, int64_t n, float* y) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) store(y + i, load<vw>(a + i) + load<vw>(b + i));
  for (; i + 8 <= n; i += 8) store(y + i, load(a + i) + load(b + i));
  for (; i < n; i++) y[i] = a[i] + b[i];
}

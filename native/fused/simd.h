// The vector helpers of our fused kernels. fused.cc includes this file and the kernels three times: compiled for
// AVX-512VL (+ AVX2, FMA), for AVX2 + FMA and for baseline x86-64 (SSE2), each copy in its own namespace, and picks
// one at load time. GCC vector extensions keep one source for all: v8 (8 floats) is a ymm register in the first two
// copies and an SSE pair in the third; vw is the copy's widest vector, kLanes floats: 16 (one zmm) in the AVX-512
// copy, where fused.cc sets CONTROLNET_TS_LANES, and v8 elsewhere. Loops along long rows use vw — the linear layer's
// columns, attention's keys, the element-wise ops (then v8 and single elements for what is left); loops along a head's
// or a group's few channels stay on v8.

#ifdef CONTROLNET_TS_LANES
constexpr int kLanes = CONTROLNET_TS_LANES;
#else
constexpr int kLanes = 8;
#endif

typedef float v8 __attribute__((vector_size(32)));
typedef float vw __attribute__((vector_size(4 * kLanes)));
typedef float v4f __attribute__((vector_size(16)));
typedef double v4d __attribute__((vector_size(32)));

// x in every lane of a v8 (or of V). Written as an initializer list, which GCC turns into one broadcast from memory;
// `V{} + x` would add 0 first (a real add: −0 + 0 is +0).
template <typename V = v8>
static inline V splat(float x) {
  if constexpr (sizeof(V) == 64) return V{x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x};
  else return V{x, x, x, x, x, x, x, x};
}
template <typename V = v8>
static inline V load(const float* p) {
  V r;
  std::memcpy(&r, p, sizeof r);
  return r;
}
template <typename V>
static inline void store(float* p, V v) { std::memcpy(p, &v, sizeof v); }

// The element-wise loop of every copy: body(V{}, i) for i = from, from + lanes, … while a whole vector fits below n —
// the widest vector vw first, then v8 — returning where single elements start. body's first argument only names the
// vector type (decltype); lane by lane the operations are the same at every width.
template <typename Body>
static inline int64_t ForVectors(int64_t i, int64_t n, Body&& body) {
  for (; i + kLanes <= n; i += kLanes) body(vw{}, i);
  for (; i + 8 <= n; i += 8) body(v8{}, i);
  return i;
}

// exp on every lane of v8 or vw: Cephes' expf (range reduction by ln 2, degree-5 polynomial, 2^n through the exponent
// bits); ≤ 2 ulp for x in [-87.3, 88.3]; inputs beyond clamp (≈1e-38 below, ≈2e38 above), which softmax and sigmoid
// absorb. Lane by lane the same operations whatever the width, so the copies agree bit for bit.
template <typename V>
static inline V expv(V x) {
  typedef int VI __attribute__((vector_size(sizeof(V))));
  const V hi = splat<V>(88.3762626647949f), lo = splat<V>(-87.3365447504f);
  x = x > hi ? hi : x;
  x = x < lo ? lo : x;
  const float magic = 12582912.0f;  // 1.5·2^23: adding it rounds to an integer held in the low mantissa bits
  V t = x * splat<V>(1.44269504088896341f) + splat<V>(magic);
  V n = t - splat<V>(magic);
  V r = x - n * splat<V>(0.693359375f) - n * splat<V>(-2.12194440e-4f);
  V p = splat<V>(1.9875691500e-4f);
  p = p * r + splat<V>(1.3981999507e-3f);
  p = p * r + splat<V>(8.3334519073e-3f);
  p = p * r + splat<V>(4.1665795894e-2f);
  p = p * r + splat<V>(1.6666665459e-1f);
  p = p * r + splat<V>(5.0000001201e-1f);
  p = p * r * r + r + splat<V>(1.0f);
  VI ti, mi;
  std::memcpy(&ti, &t, sizeof ti);
  const V m = splat<V>(magic);
  std::memcpy(&mi, &m, sizeof mi);
  VI e = ((ti - mi) + 127) << 23;
  V scale;
  std::memcpy(&scale, &e, sizeof scale);
  return p * scale;
}


// 1 / (1 + exp(−x)) on every lane of v8 or vw (SiLU is x·sigmoid(x)).
template <typename V>
static inline V sigmoidv(V x) { return splat<V>(1.f) / (splat<V>(1.f) + expv(-x)); }

// x[i..i+8) as two vectors of doubles (lanes 0–3, 4–7).
static inline void load_d(const float* p, v4d& lo, v4d& hi) {
  v4f a, b;
  std::memcpy(&a, p, sizeof a);
  std::memcpy(&b, p + 4, sizeof b);
  lo = __builtin_convertvector(a, v4d);
  hi = __builtin_convertvector(b, v4d);
}
static inline double hsum(v4d a) { return (a[0] + a[1]) + (a[2] + a[3]); }

// Σ x[0..n) and Σ (x[0..n) − m)² in double over 8 lanes: 8 independent sums instead of one serial chain (a double
// add's latency per element: 4 of LayerNorm's 5 passes over a row were those chains), the same precision.
static inline double SumD(const float* x, int64_t n) {
  v4d a = {0, 0, 0, 0}, b = a, lo, hi;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) load_d(x + i, lo, hi), a += lo, b += hi;
  double s = hsum(a + b);
  for (; i < n; i++) s += x[i];
  return s;
}
static inline double SumSqDevD(const float* x, int64_t n, double m) {
  v4d a = {0, 0, 0, 0}, b = a, lo, hi;
  const v4d mv = {m, m, m, m};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) load_d(x + i, lo, hi), lo -= mv, hi -= mv, a += lo * lo, b += hi * hi;
  double s = hsum(a + b);
  for (; i < n; i++) s += (x[i] - m) * (x[i] - m);
  return s;
}

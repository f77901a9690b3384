// The vector helpers of our fused kernels. fused.cc includes this file and the kernels twice: once compiled for
// AVX2 + FMA and once for baseline x86-64 (SSE2), each copy in its own namespace, and picks one at load time. GCC
// vector extensions (v8 = 8 floats) keep one source for both: ymm FMAs in the first copy, SSE pairs in the second.

typedef float v8 __attribute__((vector_size(32)));
typedef int v8i __attribute__((vector_size(32)));

static inline v8 splat(float x) { return v8{x, x, x, x, x, x, x, x}; }
static inline v8 load(const float* p) {
  v8 r;
  std::memcpy(&r, p, sizeof r);
  return r;
}
static inline void store(float* p, v8 v) { std::memcpy(p, &v, sizeof v); }

// exp on 8 lanes: Cephes' expf (range reduction by ln 2, degree-5 polynomial, 2^n through the exponent bits);
// ≤ 2 ulp for x in [-87.3, 88.3]; inputs beyond clamp (≈1e-38 below, ≈2e38 above), which softmax and sigmoid absorb.
static inline v8 exp8(v8 x) {
  const v8 hi = splat(88.3762626647949f), lo = splat(-87.3365447504f);
  x = x > hi ? hi : x;
  x = x < lo ? lo : x;
  const float magic = 12582912.0f;  // 1.5·2^23: adding it rounds to an integer held in the low mantissa bits
  v8 t = x * splat(1.44269504088896341f) + splat(magic);
  v8 n = t - splat(magic);
  v8 r = x - n * splat(0.693359375f) - n * splat(-2.12194440e-4f);
  v8 p = splat(1.9875691500e-4f);
  p = p * r + splat(1.3981999507e-3f);
  p = p * r + splat(8.3334519073e-3f);
  p = p * r + splat(4.1665795894e-2f);
  p = p * r + splat(1.6666665459e-1f);
  p = p * r + splat(5.0000001201e-1f);
  p = p * r * r + r + splat(1.0f);
  v8i ti, mi;
  std::memcpy(&ti, &t, sizeof ti);
  const v8 m = splat(magic);
  std::memcpy(&mi, &m, sizeof mi);
  v8i e = ((ti - mi) + 127) << 23;
  v8 scale;
  std::memcpy(&scale, &e, sizeof scale);
  return p * scale;
}


// 1 / (1 + exp(−x)) on 8 lanes (SiLU is x·sigmoid(x)).
static inline v8 sigmoid8(v8 x) { return splat(1.f) / (splat(1.f) + exp8(-x)); }

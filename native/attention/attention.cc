// Fused scaled-dot-product attention for the native engine: two TensorFlow ops of our own, registered into the
// process's TensorFlow through its C kernel API (tensorflow/c/ops.h, kernels.h) — the mechanism behind
// tf.load_op_library — so tfjs-node's binding runs them by name like any TF op.
//
//   ControlnetTsAttention(q [BH,N,d], k [BH,M,d], v [BH,M,d]; scale, num_threads) → out [BH,N,d], lse [BH,N]
//   ControlnetTsAttentionGrad(q, k, v, out, lse, dout; scale, num_threads)        → dq, dk, dv
//
// out = softmax(scale·q·kᵀ)·v. Why: TensorFlow has no fused CPU attention, so the tfjs graph materialises the
// [BH,N,M] scores and probabilities forward and four such maps backward (each 64 MB for bench-mid's 1024 tokens,
// 0.5 GB per head group for SD1.5 at 512 px) and streams them through memory a dozen times. Here each query row's
// scores live in a row buffer (FlashAttention's idea on a CPU): forward keeps only the rows' log-sum-exp, backward
// recomputes the probabilities from it (FlashAttention-2's backward). The arithmetic is attention-kernels.h.
//
// Threads: num_threads workers split batch·heads × query rows (forward) or batch·heads, and query rows when there
// are fewer heads than threads, with private dk/dv accumulators summed afterwards (backward). TensorFlow's own pool
// is not reachable through the C API; the op runs alone in an eager step, so the two never compete.
//
// JS API: register() → the op names; idempotent (the registry is process-wide). kernelIsa() → "avx2" | "baseline".
#include <node_api.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "tensorflow/c/ops.h"
#include "tensorflow/c/tf_status.h"
#include "tensorflow/c/tf_tensor.h"

// The part of tensorflow/c/kernels.h (TF 2.21) this file uses, declared here because that header includes
// platform and pluggable-device headers the wheel's include folder we extract does not carry. A stable C ABI:
// the definitions are in libtensorflow_framework.so.2.
extern "C" {
typedef struct TF_KernelBuilder TF_KernelBuilder;
typedef struct TF_OpKernelConstruction TF_OpKernelConstruction;
typedef struct TF_OpKernelContext TF_OpKernelContext;
TF_CAPI_EXPORT extern TF_KernelBuilder* TF_NewKernelBuilder(const char* op_name, const char* device_name,
                                                            void* (*create_func)(TF_OpKernelConstruction*),
                                                            void (*compute_func)(void*, TF_OpKernelContext*),
                                                            void (*delete_func)(void*));
TF_CAPI_EXPORT extern void TF_RegisterKernelBuilder(const char* kernel_name, TF_KernelBuilder* builder, TF_Status* status);
TF_CAPI_EXPORT extern void TF_GetInput(TF_OpKernelContext* ctx, int i, TF_Tensor** tensor, TF_Status* status);
TF_CAPI_EXPORT extern TF_Tensor* TF_AllocateOutput(TF_OpKernelContext* context, int index, TF_DataType dtype,
                                                   const int64_t* dims, int num_dims, size_t len, TF_Status* status);
TF_CAPI_EXPORT extern void TF_OpKernelContext_Failure(TF_OpKernelContext* ctx, TF_Status* status);
TF_CAPI_EXPORT extern void TF_OpKernelConstruction_Failure(TF_OpKernelConstruction* ctx, TF_Status* status);
TF_CAPI_EXPORT extern void TF_OpKernelConstruction_GetAttrFloat(TF_OpKernelConstruction* ctx, const char* attr_name,
                                                                float* val, TF_Status* status);
TF_CAPI_EXPORT extern void TF_OpKernelConstruction_GetAttrInt64(TF_OpKernelConstruction* ctx, const char* attr_name,
                                                                int64_t* val, TF_Status* status);
}

namespace avx2 {
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#include "attention-kernels.h"
#pragma GCC pop_options
}  // namespace avx2

namespace baseline {
#include "attention-kernels.h"
}  // namespace baseline

namespace {

const bool kAvx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");

struct Attrs {
  float scale = 1.f;
  int num_threads = 1;
};

void* Create(TF_OpKernelConstruction* ctx) {
  auto* a = new Attrs;
  TF_Status* s = TF_NewStatus();
  TF_OpKernelConstruction_GetAttrFloat(ctx, "scale", &a->scale, s);
  if (TF_GetCode(s) == TF_OK) {
    int64_t n = 1;
    TF_OpKernelConstruction_GetAttrInt64(ctx, "num_threads", &n, s);
    a->num_threads = static_cast<int>(std::clamp<int64_t>(n, 1, 256));
  }
  if (TF_GetCode(s) != TF_OK) TF_OpKernelConstruction_Failure(ctx, s);
  TF_DeleteStatus(s);
  return a;
}

void Delete(void* a) { delete static_cast<Attrs*>(a); }

void Fail(TF_OpKernelContext* ctx, const std::string& msg) {
  TF_Status* s = TF_NewStatus();
  TF_SetStatus(s, TF_INVALID_ARGUMENT, msg.c_str());
  TF_OpKernelContext_Failure(ctx, s);
  TF_DeleteStatus(s);
}

// Inputs as float arrays with their shapes; false (and the op failed) when one is missing or mis-shaped.
struct Input {
  TF_Tensor* t = nullptr;
  const float* data = nullptr;
  std::vector<int64_t> dims;
  ~Input() {
    if (t) TF_DeleteTensor(t);
  }
};

bool GetInputs(TF_OpKernelContext* ctx, std::vector<Input>& in, const char* op) {
  TF_Status* s = TF_NewStatus();
  bool ok = true;
  for (size_t i = 0; i < in.size() && ok; i++) {
    TF_GetInput(ctx, static_cast<int>(i), &in[i].t, s);
    if (TF_GetCode(s) != TF_OK) {
      TF_OpKernelContext_Failure(ctx, s);
      ok = false;
    } else if (TF_TensorType(in[i].t) != TF_FLOAT) {
      Fail(ctx, std::string(op) + ": inputs must be float32");
      ok = false;
    } else {
      in[i].data = static_cast<const float*>(TF_TensorData(in[i].t));
      for (int a = 0; a < TF_NumDims(in[i].t); a++) in[i].dims.push_back(TF_Dim(in[i].t, a));
    }
  }
  TF_DeleteStatus(s);
  return ok;
}

float* Allocate(TF_OpKernelContext* ctx, int index, const std::vector<int64_t>& dims) {
  int64_t n = 1;
  for (int64_t x : dims) n *= x;
  TF_Status* s = TF_NewStatus();
  TF_Tensor* t = TF_AllocateOutput(ctx, index, TF_FLOAT, dims.data(), static_cast<int>(dims.size()), sizeof(float) * n, s);
  float* data = nullptr;
  if (TF_GetCode(s) != TF_OK) TF_OpKernelContext_Failure(ctx, s);
  else data = static_cast<float*>(TF_TensorData(t));
  if (t) TF_DeleteTensor(t);  // the context keeps the output; this drops our reference only
  TF_DeleteStatus(s);
  return data;
}

// q [BH,N,d], k and v [BH,M,d]: the checked sizes, or false after failing the op with the defect named.
bool Shapes(TF_OpKernelContext* ctx, const std::vector<Input>& in, const char* op, int64_t& BH, int64_t& N, int64_t& M, int64_t& d) {
  const auto& q = in[0].dims;
  const auto& k = in[1].dims;
  const auto& v = in[2].dims;
  if (q.size() != 3 || k.size() != 3 || v.size() != 3) return Fail(ctx, std::string(op) + ": q, k and v must be rank 3 [batch·heads, tokens, head width]"), false;
  BH = q[0], N = q[1], d = q[2], M = k[1];
  if (k[0] != BH || v[0] != BH || k[2] != d || v[1] != M || v[2] != d) return Fail(ctx, std::string(op) + ": q [BH,N,d], k and v [BH,M,d] disagree"), false;
  if (M < 1 || d < 1) return Fail(ctx, std::string(op) + ": needs at least one key and a head width ≥ 1"), false;
  if (N > INT32_MAX || M > INT32_MAX / 8 || d > 4096) return Fail(ctx, std::string(op) + ": sizes out of range"), false;
  return true;
}

// Runs fn(item) for item in [0, items) on up to `threads` threads (the caller's included).
template <typename F>
void ParallelFor(int64_t items, int threads, const F& fn) {
  const int workers = static_cast<int>(std::min<int64_t>(threads, items));
  std::atomic<int64_t> next{0};
  auto work = [&] {
    for (int64_t i; (i = next.fetch_add(1)) < items;) fn(i);
  };
  std::vector<std::thread> pool;
  for (int w = 1; w < workers; w++) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
}

// Small products are not worth a thread (the tiny model's, cross-attention to 77 tokens at low resolution).
int ThreadsFor(const Attrs& a, int64_t BH, int64_t N, int64_t M, int64_t d) {
  return BH * N * M * d < (1 << 20) ? 1 : a.num_threads;
}

void ComputeForward(void* attrs, TF_OpKernelContext* ctx) {
  const Attrs& a = *static_cast<Attrs*>(attrs);
  std::vector<Input> in(3);
  int64_t BH, N, M, d;
  if (!GetInputs(ctx, in, "ControlnetTsAttention") || !Shapes(ctx, in, "ControlnetTsAttention", BH, N, M, d)) return;
  float* out = Allocate(ctx, 0, {BH, N, d});
  float* lse = out ? Allocate(ctx, 1, {BH, N}) : nullptr;
  if (!lse) return;
  const int threads = ThreadsFor(a, BH, N, M, d);
  // enough items for the threads to balance, each at least 64 rows (a head's key layout is built per item)
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>((N + 63) / 64, (4 * threads + BH - 1) / BH));
  const int64_t rows = (N + parts - 1) / parts;
  ParallelFor(BH * parts, threads, [&](int64_t item) {
    const int64_t b = item / parts, i0 = (item % parts) * rows, i1 = std::min(N, i0 + rows);
    if (i0 >= i1) return;
    const float* k = in[1].data + b * M * d;
    const float* v = in[2].data + b * M * d;
    const float* q = in[0].data + b * N * d;
    if (kAvx2) {
      avx2::Head h(k, v, int(N), int(M), int(d), false);
      avx2::ForwardRows(h, q, a.scale, int(i0), int(i1), out + b * N * d, lse + b * N);
    } else {
      baseline::Head h(k, v, int(N), int(M), int(d), false);
      baseline::ForwardRows(h, q, a.scale, int(i0), int(i1), out + b * N * d, lse + b * N);
    }
  });
}

void ComputeBackward(void* attrs, TF_OpKernelContext* ctx) {
  const Attrs& a = *static_cast<Attrs*>(attrs);
  std::vector<Input> in(6);  // q, k, v, out, lse, dout
  int64_t BH, N, M, d;
  if (!GetInputs(ctx, in, "ControlnetTsAttentionGrad") || !Shapes(ctx, in, "ControlnetTsAttentionGrad", BH, N, M, d)) return;
  if (in[3].dims != in[0].dims || in[5].dims != in[0].dims || in[4].dims != std::vector<int64_t>{BH, N}) {
    return Fail(ctx, "ControlnetTsAttentionGrad: out and dout must be shaped as q, lse as [BH,N]");
  }
  float* dq = Allocate(ctx, 0, {BH, N, d});
  float* dk = dq ? Allocate(ctx, 1, {BH, M, d}) : nullptr;
  float* dv = dk ? Allocate(ctx, 2, {BH, M, d}) : nullptr;
  if (!dv) return;
  const int threads = ThreadsFor(a, BH, N, M, d);
  // Query rows split only when heads alone cannot feed the threads; each part sums into its own dk/dv copy.
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>((N + 63) / 64, (threads + BH - 1) / BH));
  const int64_t rows = (N + parts - 1) / parts;
  const int64_t D8 = (d + 7) / 8, M8 = (M + 7) / 8 * 8, padded = M8 * 8 * D8;
  std::vector<float> dKp(BH * parts * padded, 0.f), dVp(BH * parts * padded, 0.f);
  ParallelFor(BH * parts, threads, [&](int64_t item) {
    const int64_t b = item / parts, i0 = (item % parts) * rows, i1 = std::min(N, i0 + rows);
    if (i0 >= i1) return;
    const int64_t qo = b * N * d, ko = b * M * d;
    float* gk = dKp.data() + item * padded;
    float* gv = dVp.data() + item * padded;
    if (kAvx2) {
      avx2::Head h(in[1].data + ko, in[2].data + ko, int(N), int(M), int(d), true);
      avx2::BackwardRows(h, in[0].data + qo, in[3].data + qo, in[4].data + b * N, in[5].data + qo, a.scale, int(i0), int(i1), dq + qo, gk, gv);
    } else {
      baseline::Head h(in[1].data + ko, in[2].data + ko, int(N), int(M), int(d), true);
      baseline::BackwardRows(h, in[0].data + qo, in[3].data + qo, in[4].data + b * N, in[5].data + qo, a.scale, int(i0), int(i1), dq + qo, gk, gv);
    }
  });
  // strip the padding and sum the parts (in part order: the result does not depend on thread timing)
  for (int64_t b = 0; b < BH; b++)
    for (int64_t j = 0; j < M; j++)
      for (int64_t c = 0; c < d; c++) {
        float sk = 0.f, sv = 0.f;
        for (int64_t p = 0; p < parts; p++) {
          const int64_t at = (b * parts + p) * padded + j * 8 * D8 + c;
          sk += dKp[at];
          sv += dVp[at];
        }
        dk[(b * M + j) * d + c] = sk;
        dv[(b * M + j) * d + c] = sv;
      }
}

std::string RegisterOps() {
  TF_Status* s = TF_NewStatus();
  std::string error;
  auto check = [&](const char* what) {
    if (error.empty() && TF_GetCode(s) != TF_OK) error = std::string(what) + ": " + TF_Message(s);
  };
  {
    TF_OpDefinitionBuilder* b = TF_NewOpDefinitionBuilder("ControlnetTsAttention");
    for (const char* x : {"q: float", "k: float", "v: float"}) TF_OpDefinitionBuilderAddInput(b, x);
    TF_OpDefinitionBuilderAddOutput(b, "out: float");
    TF_OpDefinitionBuilderAddOutput(b, "lse: float");
    TF_OpDefinitionBuilderAddAttr(b, "scale: float");
    TF_OpDefinitionBuilderAddAttr(b, "num_threads: int = 1");
    TF_RegisterOpDefinition(b, s);
    check("registering op ControlnetTsAttention");
  }
  {
    TF_OpDefinitionBuilder* b = TF_NewOpDefinitionBuilder("ControlnetTsAttentionGrad");
    for (const char* x : {"q: float", "k: float", "v: float", "out: float", "lse: float", "dout: float"}) TF_OpDefinitionBuilderAddInput(b, x);
    for (const char* x : {"dq: float", "dk: float", "dv: float"}) TF_OpDefinitionBuilderAddOutput(b, x);
    TF_OpDefinitionBuilderAddAttr(b, "scale: float");
    TF_OpDefinitionBuilderAddAttr(b, "num_threads: int = 1");
    TF_RegisterOpDefinition(b, s);
    check("registering op ControlnetTsAttentionGrad");
  }
  TF_RegisterKernelBuilder("ControlnetTsAttentionCpu", TF_NewKernelBuilder("ControlnetTsAttention", "CPU", Create, ComputeForward, Delete), s);
  check("registering the CPU kernel of ControlnetTsAttention");
  TF_RegisterKernelBuilder("ControlnetTsAttentionGradCpu", TF_NewKernelBuilder("ControlnetTsAttentionGrad", "CPU", Create, ComputeBackward, Delete), s);
  check("registering the CPU kernel of ControlnetTsAttentionGrad");
  TF_DeleteStatus(s);
  return error;
}

napi_value Register(napi_env env, napi_callback_info) {
  static const std::string error = RegisterOps();  // once per process, whichever module instance asks first
  if (!error.empty()) {
    napi_throw_error(env, nullptr, error.c_str());
    return nullptr;
  }
  napi_value names, name;
  napi_create_array_with_length(env, 2, &names);
  const char* ops[] = {"ControlnetTsAttention", "ControlnetTsAttentionGrad"};
  for (uint32_t i = 0; i < 2; i++) {
    napi_create_string_utf8(env, ops[i], NAPI_AUTO_LENGTH, &name);
    napi_set_element(env, names, i, name);
  }
  return names;
}

napi_value KernelIsa(napi_env env, napi_callback_info) {
  napi_value out;
  napi_create_string_utf8(env, kAvx2 ? "avx2" : "baseline", NAPI_AUTO_LENGTH, &out);
  return out;
}

napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"register", nullptr, Register, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"kernelIsa", nullptr, KernelIsa, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, 2, props);
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)

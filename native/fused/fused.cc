// Fused kernels for the native engine: TensorFlow ops of our own, registered into the process's TensorFlow through
// its C kernel API (tensorflow/c/ops.h, kernels.h) — the mechanism behind tf.load_op_library — so tfjs-node's binding
// runs them by name like any TF op.
//
//   ControlnetTsAttention(q [B,N,H·d], k [B,M,H·d], v [B,M,H·d]; heads H, scale, num_threads) → out [B,N,H·d], lse [B·H,N]
//   ControlnetTsAttentionGrad(q, k, v, out, lse, dout; heads, scale, num_threads)              → dq, dk, dv
//     (heads stay interleaved in the channels, as the projections produce them: no split/merge transposes)
//   ControlnetTsGroupNorm(x [B,…,C], gamma [C], beta [C]; groups, eps, silu, num_threads) → y, mean [B,G], rstd [B,G]
//   ControlnetTsGroupNormGrad(x, gamma, beta, mean, rstd, dy; groups, silu, num_threads)  → dx, dgamma, dbeta
//   ControlnetTsAdamW(params, grads, exp_avg, exp_avg_sq: N tensors each; the step's float32 scalars, num_threads)
//                                                                      → new params, exp_avg, exp_avg_sq (N each)
//   ControlnetTsNorms(tensors: N tensors; num_threads)                  → norms [N]: each tensor's 2-norm
//   ControlnetTsSilu(x; num_threads) → y = x·sigmoid(x);   ControlnetTsSiluGrad(x, dy; num_threads) → dx
//   ControlnetTsLayerNorm(x [R,C] or [.., C], gamma [C], beta [C]; eps, num_threads) → y, mean [R], rstd [R]
//   ControlnetTsLayerNormGrad(x, gamma, mean, rstd, dy; num_threads)                   → dx, dgamma, dbeta
//   ControlnetTsGeglu(h [.., 2F]; num_threads) → y [.., F] = a·gelu(g), a and g h's halves;  …Grad(h, dy; num_threads) → dh
//   ControlnetTsAdd(a, b; num_threads) → a + b, b shaped as a or [B or 1, 1, …, 1, C] (one row per batch item)
//   ControlnetTsMatMul(a [.., K], b [K, N] ([N, K] with transpose_b), bias [N] (read only with has_bias);
//                      transpose_b, has_bias, num_threads) → a·b (+ bias) [.., N]: the linear layer
//
// Attention: out = softmax(scale·q·kᵀ)·v. Why: TensorFlow has no fused CPU attention, so the tfjs graph materialises the
// [BH,N,M] scores and probabilities forward and four such maps backward (each 64 MB for bench-mid's 1024 tokens,
// 0.5 GB per head group for SD1.5 at 512 px) and streams them through memory a dozen times. Here each query row's
// scores live in a row buffer (FlashAttention's idea on a CPU): forward keeps only the rows' log-sum-exp, backward
// recomputes the probabilities from it (FlashAttention-2's backward). The arithmetic is attention-kernels.h.
//
// GroupNorm (optionally followed by SiLU, as in every resnet): composed from tfjs ops it is 15 small ops forward
// (plus SiLU's two) and about twice that backward, ~2.4 ms forward for a 4×32×32×32 activation where one pass over
// the data takes a fraction of that. Here it is three passes forward, two backward (group-norm-kernels.h).
//
// AdamW: composed from TF ops it is 13 ops per parameter tensor; the step then issues ~4,000 tiny kernels for
// bench-mid's ControlNet, each costing more to dispatch than to compute. One op updates a group of tensors. The
// gradient clip's per-tensor norms likewise: one op instead of three per tensor (sums in double, then rounded).
//
// Threads: num_threads workers split batch·heads × query rows (attention forward) or batch·heads, and query rows
// when there are fewer heads than threads, with private dk/dv accumulators summed afterwards (attention backward);
// batch items × group slices (GroupNorm). TensorFlow's own pool is not reachable through the C API; the op runs
// alone in an eager step, so the two never compete.
//
// JS API: register() → the op names; idempotent (the registry is process-wide). kernelIsa() → "avx512" | "avx2" | "baseline".
#include <node_api.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include <immintrin.h>  // _mm_pause

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
TF_CAPI_EXPORT extern void TF_OpKernelConstruction_GetAttrBool(TF_OpKernelConstruction* ctx, const char* attr_name,
                                                               TF_Bool* val, TF_Status* status);
}

// The compilations of the kernels (AVX-512, AVX2 + FMA, baseline) share these types and fill one table each.

// Scratch buffers aligned to cache lines (64 bytes), as TensorFlow's own tensors are: a 16-byte aligned
// std::vector<float> would make every zmm load of the AVX-512 copy straddle two cache lines.
template <typename T>
struct CacheLineAllocator {
  typedef T value_type;
  CacheLineAllocator() = default;
  template <typename U>
  CacheLineAllocator(const CacheLineAllocator<U>&) {}
  T* allocate(size_t n) {
    void* p = std::aligned_alloc(64, (n * sizeof(T) + 63) / 64 * 64);
    if (!p) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) { std::free(p); }
  bool operator==(const CacheLineAllocator&) const { return true; }
  bool operator!=(const CacheLineAllocator&) const { return false; }
};
typedef std::vector<float, CacheLineAllocator<float>> AlignedFloats;

struct GroupSlice {
  const float* x;  // batch item b: [P][C]
  int64_t P;
  int C, cg, g0, g1;
  int c0() const { return g0 * cg; }
  int c1() const { return g1 * cg; }
};

struct AdamScalars {
  float decay, one_minus_beta1, beta2, one_minus_beta2, bc2_sqrt, eps, neg_step_size;
};

struct KernelTable {
  // q/k/v/out/dout/dq rows are ld floats apart (a head's slice of [batch, tokens, heads·d])
  void (*attention)(const float* q, const float* k, const float* v, int N, int M, int d, size_t ld, float scale, int i0, int i1, float* out,
                    float* lse);
  void (*attention_grad)(const float* q, const float* k, const float* v, const float* o, const float* lse, const float* dout, int N, int M,
                         int d, size_t ld, float scale, int i0, int i1, float* dq, float* dKp, float* dVp);
  int (*attention_padded_width)(int d);  // the row width of attention_grad's dKp / dVp accumulators ([M][width])
  void (*group_norm)(const GroupSlice& s, const float* gamma, const float* beta, float eps, bool silu, float* y, float* mean, float* rstd);
  void (*group_norm_grad)(const GroupSlice& s, const float* gamma, const float* beta, const float* mean, const float* rstd, const float* dy,
                          bool silu, float* dx, float* dgamma_b, float* dbeta_b);
  void (*adamw)(const float* p, const float* g, const float* m, const float* v, int64_t n, const AdamScalars& c, float* p2, float* m2, float* v2);
  void (*silu)(const float* x, int64_t n, float* y);
  void (*silu_grad)(const float* x, const float* dy, int64_t n, float* dx);
  void (*layer_norm)(const float* x, int64_t r0, int64_t r1, int C, const float* gamma, const float* beta, float eps, float* y, float* mean,
                     float* rstd);
  void (*layer_norm_grad)(const float* x, const float* dy, int64_t r0, int64_t r1, int C, const float* gamma, const float* mean, const float* rstd,
                          float* dx, float* dgamma_p, float* dbeta_p);
  void (*geglu)(const float* h, int64_t r0, int64_t r1, int64_t F, float* y);
  void (*geglu_grad)(const float* h, const float* dy, int64_t r0, int64_t r1, int64_t F, float* dh);
  void (*add)(const float* a, const float* b, int64_t n, float* y);
  void (*gemm)(const float* A, const float* B, const float* bias, int64_t r0, int64_t r1, int K, int64_t N, float* C);
};

namespace avx2 {
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#include "all-kernels.h"
#pragma GCC pop_options
}  // namespace avx2

namespace avx512 {
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")
#define CONTROLNET_TS_LANES 16
#include "all-kernels.h"
#undef CONTROLNET_TS_LANES
#pragma GCC pop_options
}  // namespace avx512

namespace baseline {
#include "all-kernels.h"
}  // namespace baseline

namespace {

const bool kAvx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
// The kernels compiled for AVX-512VL where the CPU has it: 32 vector registers for the register-tiled products, EVEX
// forms, and 16-lane vectors where a kernel uses vw (simd.h). CONTROLNET_TS_FUSED_AVX512=0 keeps the AVX2 copy, for
// comparisons.
const char* const kAvx512Setting = std::getenv("CONTROLNET_TS_FUSED_AVX512");
const bool kAvx512 = kAvx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                     __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
                     !(kAvx512Setting && std::string(kAvx512Setting) == "0");
const KernelTable& K = kAvx512 ? avx512::kTable : kAvx2 ? avx2::kTable : baseline::kTable;

// Every op's attributes (each reads those it declares).
struct Attrs {
  float scale = 1.f;  // attention
  int64_t heads = 1;
  int64_t groups = 1;  // group norm
  float eps = 1e-5f;
  bool silu = false;
  bool transpose_b = false, has_bias = false;  // matmul
  int64_t n = 0;  // AdamW: tensors per list
  float adam[7] = {};  // AdamW: decay, one_minus_beta1, beta2, one_minus_beta2, bc2_sqrt, eps, neg_step_size
  int num_threads = 1;
};
const char* const kAdamScalars[7] = {"decay", "one_minus_beta1", "beta2", "one_minus_beta2", "bc2_sqrt", "eps", "neg_step_size"};

// Elementwise: ops whose only attribute is num_threads (SiLU, GEGLU and their gradients, LayerNorm's gradient, Add).
enum class OpKind { Attention, GroupNorm, GroupNormGrad, Norms, AdamW, Elementwise, LayerNorm, MatMul };

// Reads the attributes `kind` declares (num_threads for all).
void* Create(TF_OpKernelConstruction* ctx, OpKind kind) {
  auto* a = new Attrs;
  TF_Status* s = TF_NewStatus();
  auto ok = [&] { return TF_GetCode(s) == TF_OK; };
  int64_t n = 1;
  TF_OpKernelConstruction_GetAttrInt64(ctx, "num_threads", &n, s);
  a->num_threads = static_cast<int>(std::clamp<int64_t>(n, 1, 256));
  if (kind == OpKind::Attention) {
    if (ok()) TF_OpKernelConstruction_GetAttrFloat(ctx, "scale", &a->scale, s);
    if (ok()) TF_OpKernelConstruction_GetAttrInt64(ctx, "heads", &a->heads, s);
  } else if (kind == OpKind::GroupNorm || kind == OpKind::GroupNormGrad) {
    TF_Bool silu = 0;
    if (ok()) TF_OpKernelConstruction_GetAttrInt64(ctx, "groups", &a->groups, s);
    if (ok()) TF_OpKernelConstruction_GetAttrBool(ctx, "silu", &silu, s);
    if (ok() && kind == OpKind::GroupNorm) TF_OpKernelConstruction_GetAttrFloat(ctx, "eps", &a->eps, s);
    a->silu = silu != 0;
  } else if (kind == OpKind::LayerNorm) {
    if (ok()) TF_OpKernelConstruction_GetAttrFloat(ctx, "eps", &a->eps, s);
  } else if (kind == OpKind::MatMul) {
    TF_Bool t = 0;
    if (ok()) TF_OpKernelConstruction_GetAttrBool(ctx, "transpose_b", &t, s);
    a->transpose_b = t != 0;
    if (ok()) TF_OpKernelConstruction_GetAttrBool(ctx, "has_bias", &t, s);
    a->has_bias = t != 0;
  } else if (kind != OpKind::Elementwise) {  // the list ops: N tensors per list, and AdamW's scalars
    if (ok()) TF_OpKernelConstruction_GetAttrInt64(ctx, "N", &a->n, s);
    for (int i = 0; kind == OpKind::AdamW && i < 7 && ok(); i++) TF_OpKernelConstruction_GetAttrFloat(ctx, kAdamScalars[i], &a->adam[i], s);
  }
  if (!ok()) TF_OpKernelConstruction_Failure(ctx, s);
  TF_DeleteStatus(s);
  return a;
}
void* CreateAttention(TF_OpKernelConstruction* ctx) { return Create(ctx, OpKind::Attention); }
void* CreateGroupNorm(TF_OpKernelConstruction* ctx) { return Create(ctx, OpKind::GroupNorm); }
void* CreateGroupNormGrad(TF_OpKernelConstruction* ctx) { return Create(ctx, OpKind::GroupNormGrad); }
void* CreateNorms(TF_OpKernelConstruction* ctx) { return Create(ctx, OpKind::Norms); }
void* CreateAdamW(TF_OpKernelConstruction* ctx) { return Create(ctx, OpKind::AdamW); }
void* CreateElementwise(TF_OpKernelConstruction* ctx) { return Create(ctx, OpKind::Elementwise); }
void* CreateLayerNorm(TF_OpKernelConstruction* ctx) { return Create(ctx, OpKind::LayerNorm); }
void* CreateMatMul(TF_OpKernelConstruction* ctx) { return Create(ctx, OpKind::MatMul); }

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

// q [B,N,C], k and v [B,M,C] with C = heads·d: the checked sizes, or false after failing the op with the defect named.
bool Shapes(TF_OpKernelContext* ctx, const std::vector<Input>& in, const Attrs& a, const char* op, int64_t& B, int64_t& N, int64_t& M, int64_t& d) {
  const auto& q = in[0].dims;
  const auto& k = in[1].dims;
  const auto& v = in[2].dims;
  if (q.size() != 3 || k.size() != 3 || v.size() != 3) return Fail(ctx, std::string(op) + ": q, k and v must be rank 3 [batch, tokens, heads·head width]"), false;
  const int64_t C = q[2];
  B = q[0], N = q[1], M = k[1];
  if (k[0] != B || v[0] != B || k[2] != C || v[1] != M || v[2] != C) return Fail(ctx, std::string(op) + ": q [B,N,C], k and v [B,M,C] disagree"), false;
  if (a.heads < 1 || C % a.heads != 0) return Fail(ctx, std::string(op) + ": " + std::to_string(C) + " channels are not divisible into " + std::to_string(a.heads) + " heads"), false;
  d = C / a.heads;
  if (M < 1 || d < 1) return Fail(ctx, std::string(op) + ": needs at least one key and a head width ≥ 1"), false;
  if (N > INT32_MAX || M > INT32_MAX / 8 || d > 4096) return Fail(ctx, std::string(op) + ": sizes out of range"), false;
  return true;
}

// Element counts below this run on the calling thread alone: handing work to a thread costs more than it saves on
// smaller tensors. Measured at 2 threads: on a VM with threads started per op, a 32K-element GroupNorm took 90 µs
// alone and 185 µs on two; with parked workers that wake through a condition variable, 16K instead of 256K changed
// nothing on the AVX-512 host; with the workers spinning briefly before they park (SpinUntil), 32K and 2M MACs
// (kMinThreadedMacs) instead of 256K and 16M took `npm run bench -- compare`'s validation images/s ratio from
// 0.88 / 0.87 / 0.85 to 0.92 / 0.90 / 0.88 (three pairs, alternating; the step ratio moved within the noise).
constexpr int64_t kMinThreaded = 1 << 15;

// Work items of about this many elements: several per thread for balance, each big enough to amortise its set-up.
constexpr int64_t kChunk = 1 << 16;

// out_a[c] = Σ_p parts_a[p·C + c] (and the same for b), summed in part order: the result never depends on which
// thread computed which part.
void SumPartsInOrder(const std::vector<float>& parts_a, const std::vector<float>& parts_b, int64_t parts, int64_t C, float* out_a, float* out_b) {
  for (int64_t c = 0; c < C; c++) {
    float sa = 0.f, sb = 0.f;
    for (int64_t p = 0; p < parts; p++) sa += parts_a[p * C + c], sb += parts_b[p * C + c];
    out_a[c] = sa, out_b[c] = sb;
  }
}

// Waits up to ~100 µs for ready() before the caller parks on a condition variable, as OpenMP's runtimes spin before
// they sleep: the next op of a step usually follows within that, and waking a parked thread costs tens of µs. It
// yields between checks, so a runnable thread of TensorFlow's pool on the same core goes first.
// CONTROLNET_TS_SPIN_US sets the budget (0: park at once, for machines whose cores are shared with other work).
template <typename F>
void SpinUntil(const F& ready) {
  static const int64_t budget_us = [] {
    const char* v = std::getenv("CONTROLNET_TS_SPIN_US");
    return v && *v ? std::atoll(v) : 100;
  }();
  if (budget_us <= 0) return;
  const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(budget_us);
  while (!ready()) {
    for (int i = 0; i < 32; i++) _mm_pause();
    if (ready() || std::chrono::steady_clock::now() > until) return;
    std::this_thread::yield();
  }
}

// Worker threads kept for the process: started on first use, spinning briefly (SpinUntil) and then parked on a
// condition variable between ops. A std::thread started and joined per op cost tens of µs on a VM: a 262K-element
// SiLU at 2 threads took 171–173 µs that way, 122–125 µs with the parked workers (two runs each, tfjs dispatch
// included). Never destroyed (parked threads end with the process). One op at a time uses it; an op that finds it
// busy (ops running concurrently) starts threads of its own.
class Workers {
 public:
  static Workers& Get() {
    static Workers* const workers = new Workers;
    return *workers;
  }

  // Runs work() on `extra` workers and on the calling thread; returns when every copy has returned.
  void Run(int extra, const std::function<void()>& work) {
    std::unique_lock<std::mutex> busy(running_, std::try_to_lock);
    if (!busy.owns_lock()) {
      std::vector<std::thread> own;
      for (int w = 0; w < extra; w++) own.emplace_back(work);
      work();
      for (auto& t : own) t.join();
      return;
    }
    {
      std::lock_guard<std::mutex> lock(m_);
      while (threads_ < extra) std::thread(&Workers::Loop, this, threads_++, generation_.load()).detach();
      job_ = &work;
      wanted_ = extra;
      pending_ = extra;
      generation_++;
    }
    wake_.notify_all();
    // The workers use `work` until they report back: wait for them even when the caller's share throws.
    struct Join {
      Workers& w;
      ~Join() {
        SpinUntil([&] { return w.pending_.load(std::memory_order_acquire) == 0; });
        std::unique_lock<std::mutex> lock(w.m_);
        w.done_.wait(lock, [&] { return w.pending_ == 0; });
        w.job_ = nullptr;
      }
    } join{*this};
    work();
  }

 private:
  // Worker `index` runs each job that wants it (index < wanted_), once per generation after `seen`.
  void Loop(int index, uint64_t seen) {
    std::unique_lock<std::mutex> lock(m_);
    for (;;) {
      if (generation_ == seen) {
        lock.unlock();
        SpinUntil([&] { return generation_.load(std::memory_order_acquire) != seen; });
        lock.lock();
      }
      wake_.wait(lock, [&] { return generation_ != seen; });
      seen = generation_;
      if (index >= wanted_) continue;
      const std::function<void()>* job = job_;
      lock.unlock();
      (*job)();
      lock.lock();
      if (--pending_ == 0) done_.notify_one();
    }
  }

  std::mutex running_;  // held by the op using the workers
  std::mutex m_;
  std::condition_variable wake_, done_;
  const std::function<void()>* job_ = nullptr;
  // changed under m_; atomic so that a spinning thread may read them without it
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  int threads_ = 0, wanted_ = 0;
};

// Runs fn(item) for item in [0, items) on up to `threads` threads (the caller's included).
template <typename F>
void ParallelFor(int64_t items, int threads, const F& fn) {
  const int workers = static_cast<int>(std::min<int64_t>(threads, items));
  std::atomic<int64_t> next{0};
  const std::function<void()> work = [&] {
    for (int64_t i; (i = next.fetch_add(1)) < items;) fn(i);
  };
  if (workers <= 1) return work();
  Workers::Get().Run(workers - 1, work);
}

// Small products are not worth a thread (the tiny model's, cross-attention to 77 tokens at low resolution).
int ThreadsFor(const Attrs& a, int64_t BH, int64_t N, int64_t M, int64_t d) {
  return BH * N * M * d < (1 << 20) ? 1 : a.num_threads;
}

void ComputeAttention(void* attrs, TF_OpKernelContext* ctx) {
  const Attrs& a = *static_cast<Attrs*>(attrs);
  std::vector<Input> in(3);
  int64_t B, N, M, d;
  if (!GetInputs(ctx, in, "ControlnetTsAttention") || !Shapes(ctx, in, a, "ControlnetTsAttention", B, N, M, d)) return;
  const int64_t H = a.heads, BH = B * H, C = H * d;
  float* out = Allocate(ctx, 0, {B, N, C});
  float* lse = out ? Allocate(ctx, 1, {BH, N}) : nullptr;
  if (!lse) return;
  const int threads = ThreadsFor(a, BH, N, M, d);
  // enough items for the threads to balance, each at least 64 rows (a head's key layout is built per item)
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>((N + 63) / 64, (4 * threads + BH - 1) / BH));
  const int64_t rows = (N + parts - 1) / parts;
  ParallelFor(BH * parts, threads, [&](int64_t item) {
    const int64_t bh = item / parts, i0 = (item % parts) * rows, i1 = std::min(N, i0 + rows);
    if (i0 >= i1) return;
    const int64_t qo = (bh / H) * N * C + (bh % H) * d, ko = (bh / H) * M * C + (bh % H) * d;
    K.attention(in[0].data + qo, in[1].data + ko, in[2].data + ko, int(N), int(M), int(d), size_t(C), a.scale, int(i0), int(i1), out + qo,
                lse + bh * N);
  });
}

void ComputeAttentionGrad(void* attrs, TF_OpKernelContext* ctx) {
  const Attrs& a = *static_cast<Attrs*>(attrs);
  std::vector<Input> in(6);  // q, k, v, out, lse, dout
  int64_t B, N, M, d;
  if (!GetInputs(ctx, in, "ControlnetTsAttentionGrad") || !Shapes(ctx, in, a, "ControlnetTsAttentionGrad", B, N, M, d)) return;
  const int64_t H = a.heads, BH = B * H, C = H * d;
  if (in[3].dims != in[0].dims || in[5].dims != in[0].dims || in[4].dims != std::vector<int64_t>{BH, N}) {
    return Fail(ctx, "ControlnetTsAttentionGrad: out and dout must be shaped as q, lse as [B·heads,N]");
  }
  float* dq = Allocate(ctx, 0, {B, N, C});
  float* dk = dq ? Allocate(ctx, 1, {B, M, C}) : nullptr;
  float* dv = dk ? Allocate(ctx, 2, {B, M, C}) : nullptr;
  if (!dv) return;
  const int threads = ThreadsFor(a, BH, N, M, d);
  // Query rows split only when heads alone cannot feed the threads; each part sums into its own dk/dv copy.
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>((N + 63) / 64, (threads + BH - 1) / BH));
  const int64_t rows = (N + parts - 1) / parts;
  const int64_t width = K.attention_padded_width(int(d)), padded = M * width;
  std::vector<float> dKp(BH * parts * padded, 0.f), dVp(BH * parts * padded, 0.f);
  ParallelFor(BH * parts, threads, [&](int64_t item) {
    const int64_t bh = item / parts, i0 = (item % parts) * rows, i1 = std::min(N, i0 + rows);
    if (i0 >= i1) return;
    const int64_t qo = (bh / H) * N * C + (bh % H) * d, ko = (bh / H) * M * C + (bh % H) * d;
    float* gk = dKp.data() + item * padded;
    float* gv = dVp.data() + item * padded;
    K.attention_grad(in[0].data + qo, in[1].data + ko, in[2].data + ko, in[3].data + qo, in[4].data + bh * N, in[5].data + qo, int(N), int(M),
                     int(d), size_t(C), a.scale, int(i0), int(i1), dq + qo, gk, gv);
  });
  // strip the padding and sum the parts (in part order: the result does not depend on thread timing)
  for (int64_t bh = 0; bh < BH; bh++)
    for (int64_t j = 0; j < M; j++)
      for (int64_t c = 0; c < d; c++) {
        float sk = 0.f, sv = 0.f;
        for (int64_t p = 0; p < parts; p++) {
          const int64_t at = (bh * parts + p) * padded + j * width + c;
          sk += dKp[at];
          sv += dVp[at];
        }
        const int64_t to = ((bh / H) * M + j) * C + (bh % H) * d + c;
        dk[to] = sk;
        dv[to] = sv;
      }
}


// x [B, …, C] as [B, P, C] with G groups: the checked sizes, or false after failing the op with the defect named.
bool GroupShapes(TF_OpKernelContext* ctx, const std::vector<Input>& in, const Attrs& a, const char* op, int64_t& B, int64_t& P, int64_t& C) {
  const auto& x = in[0].dims;
  if (x.size() < 2) return Fail(ctx, std::string(op) + ": x must be [batch, …, channels]"), false;
  B = x[0], C = x.back(), P = 1;
  for (size_t i = 1; i + 1 < x.size(); i++) P *= x[i];
  if (in[1].dims != std::vector<int64_t>{C} || in[2].dims != std::vector<int64_t>{C}) return Fail(ctx, std::string(op) + ": gamma and beta must be [channels]"), false;
  if (a.groups < 1 || C % a.groups != 0 || C > INT32_MAX) return Fail(ctx, std::string(op) + ": " + std::to_string(C) + " channels are not divisible into " + std::to_string(a.groups) + " groups"), false;
  return true;
}

// Batch items × group slices: as many slices per item as it takes to give every thread work, each slice at least 64
// channels wide: narrower slices make every thread stream every cache line of the rows (1×256×256×64 in halves of
// 32 channels took 5.5–6.6 ms on two threads against 4.2 ms on one).
int64_t GroupSlices(const Attrs& a, int64_t B, int64_t P, int64_t C) {
  if (B * P * C < kMinThreaded) return 1;
  const int64_t widest = std::max<int64_t>(1, std::min<int64_t>(a.groups, C / 64));
  return std::min<int64_t>(widest, (a.num_threads + B - 1) / B);
}

void ComputeGroupNorm(void* attrs, TF_OpKernelContext* ctx) {
  const Attrs& a = *static_cast<Attrs*>(attrs);
  std::vector<Input> in(3);  // x, gamma, beta
  int64_t B, P, C;
  if (!GetInputs(ctx, in, "ControlnetTsGroupNorm") || !GroupShapes(ctx, in, a, "ControlnetTsGroupNorm", B, P, C)) return;
  const int64_t G = a.groups;
  float* y = Allocate(ctx, 0, in[0].dims);
  float* mean = y ? Allocate(ctx, 1, {B, G}) : nullptr;
  float* rstd = mean ? Allocate(ctx, 2, {B, G}) : nullptr;
  if (!rstd) return;
  const int64_t slices = GroupSlices(a, B, P, C), per = (G + slices - 1) / slices;
  ParallelFor(B * slices, B * P * C < kMinThreaded ? 1 : a.num_threads, [&](int64_t item) {
    const int64_t b = item / slices, g0 = (item % slices) * per, g1 = std::min(G, g0 + per);
    if (g0 >= g1) return;
    const GroupSlice s{in[0].data + b * P * C, P, int(C), int(C / G), int(g0), int(g1)};
    K.group_norm(s, in[1].data, in[2].data, a.eps, a.silu, y + b * P * C, mean + b * G, rstd + b * G);
  });
}

void ComputeGroupNormGrad(void* attrs, TF_OpKernelContext* ctx) {
  const Attrs& a = *static_cast<Attrs*>(attrs);
  std::vector<Input> in(6);  // x, gamma, beta, mean, rstd, dy
  int64_t B, P, C;
  if (!GetInputs(ctx, in, "ControlnetTsGroupNormGrad") || !GroupShapes(ctx, in, a, "ControlnetTsGroupNormGrad", B, P, C)) return;
  const int64_t G = a.groups;
  if (in[3].dims != std::vector<int64_t>{B, G} || in[4].dims != std::vector<int64_t>{B, G} || in[5].dims != in[0].dims) {
    return Fail(ctx, "ControlnetTsGroupNormGrad: mean and rstd must be [batch, groups], dy shaped as x");
  }
  float* dx = Allocate(ctx, 0, in[0].dims);
  float* dgamma = dx ? Allocate(ctx, 1, {C}) : nullptr;
  float* dbeta = dgamma ? Allocate(ctx, 2, {C}) : nullptr;
  if (!dbeta) return;
  const int64_t slices = GroupSlices(a, B, P, C), per = (G + slices - 1) / slices;
  std::vector<float> dgammaB(B * C, 0.f), dbetaB(B * C, 0.f);  // per batch item
  ParallelFor(B * slices, B * P * C < kMinThreaded ? 1 : a.num_threads, [&](int64_t item) {
    const int64_t b = item / slices, g0 = (item % slices) * per, g1 = std::min(G, g0 + per);
    if (g0 >= g1) return;
    const int64_t at = b * P * C;
    const GroupSlice s{in[0].data + at, P, int(C), int(C / G), int(g0), int(g1)};
    K.group_norm_grad(s, in[1].data, in[2].data, in[3].data + b * G, in[4].data + b * G, in[5].data + at, a.silu, dx + at, dgammaB.data() + b * C,
                      dbetaB.data() + b * C);
  });
  SumPartsInOrder(dgammaB, dbetaB, B, C, dgamma, dbeta);
}


void ComputeAdamW(void* attrs, TF_OpKernelContext* ctx) {
  const Attrs& a = *static_cast<Attrs*>(attrs);
  const int64_t N = a.n;
  std::vector<Input> in(4 * N);  // params, grads, exp_avg, exp_avg_sq
  if (!GetInputs(ctx, in, "ControlnetTsAdamW")) return;
  std::vector<float*> out(3 * N);
  for (int64_t i = 0; i < N; i++) {
    for (int64_t k = 1; k < 4; k++) {
      if (in[k * N + i].dims != in[i].dims) return Fail(ctx, "ControlnetTsAdamW: tensor " + std::to_string(i) + "'s gradient and moments must be shaped as its parameter");
    }
    for (int64_t k = 0; k < 3; k++) {
      out[k * N + i] = Allocate(ctx, static_cast<int>(k * N + i), in[i].dims);
      if (!out[k * N + i]) return;
    }
  }
  // chunks of at most kChunk elements over all tensors, so one big tensor or many small ones balance across threads
  struct Chunk {
    int64_t t, begin, end;
  };
  std::vector<Chunk> chunks;
  int64_t total = 0;
  for (int64_t i = 0; i < N; i++) {
    const int64_t n = TF_TensorElementCount(in[i].t);
    total += n;
    for (int64_t b = 0; b < n; b += kChunk) chunks.push_back({i, b, std::min(n, b + kChunk)});
  }
  const AdamScalars sc{a.adam[0], a.adam[1], a.adam[2], a.adam[3], a.adam[4], a.adam[5], a.adam[6]};
  ParallelFor(static_cast<int64_t>(chunks.size()), total < kMinThreaded ? 1 : a.num_threads, [&](int64_t item) {
    const Chunk& ch = chunks[item];
    const int64_t i = ch.t, o = ch.begin, n = ch.end - ch.begin;
    const float* src[4] = {in[i].data + o, in[N + i].data + o, in[2 * N + i].data + o, in[3 * N + i].data + o};
    K.adamw(src[0], src[1], src[2], src[3], n, sc, out[i] + o, out[N + i] + o, out[2 * N + i] + o);
  });
}

void ComputeNorms(void* attrs, TF_OpKernelContext* ctx) {
  const Attrs& a = *static_cast<Attrs*>(attrs);
  std::vector<Input> in(a.n);
  if (!GetInputs(ctx, in, "ControlnetTsNorms")) return;
  float* norms = Allocate(ctx, 0, {a.n});
  if (!norms) return;
  int64_t total = 0;
  for (const Input& t : in) total += TF_TensorElementCount(t.t);
  ParallelFor(a.n, total < kMinThreaded ? 1 : a.num_threads, [&](int64_t i) {
    const int64_t n = TF_TensorElementCount(in[i].t);
    const float* x = in[i].data;
    double s = 0;
    for (int64_t j = 0; j < n; j++) s += double(x[j]) * x[j];
    norms[i] = float(std::sqrt(s));
  });
}

// Element-wise ops over x (and dy) in chunks of kChunk elements, on the threads from kMinThreaded elements up.
template <typename F>
void Elementwise(const Attrs& a, int64_t n, const F& fn) {
  ParallelFor((n + kChunk - 1) / kChunk, n < kMinThreaded ? 1 : a.num_threads, [&](int64_t i) { fn(i * kChunk, std::min(n, (i + 1) * kChunk) - i * kChunk); });
}

void ComputeSilu(void* attrs, TF_OpKernelContext* ctx) {
  std::vector<Input> in(1);
  if (!GetInputs(ctx, in, "ControlnetTsSilu")) return;
  float* y = Allocate(ctx, 0, in[0].dims);
  if (!y) return;
  Elementwise(*static_cast<Attrs*>(attrs), TF_TensorElementCount(in[0].t), [&](int64_t o, int64_t n) { K.silu(in[0].data + o, n, y + o); });
}

void ComputeSiluGrad(void* attrs, TF_OpKernelContext* ctx) {
  std::vector<Input> in(2);  // x, dy
  if (!GetInputs(ctx, in, "ControlnetTsSiluGrad")) return;
  if (in[1].dims != in[0].dims) return Fail(ctx, "ControlnetTsSiluGrad: dy must be shaped as x");
  float* dx = Allocate(ctx, 0, in[0].dims);
  if (!dx) return;
  Elementwise(*static_cast<Attrs*>(attrs), TF_TensorElementCount(in[0].t),
              [&](int64_t o, int64_t n) { K.silu_grad(in[0].data + o, in[1].data + o, n, dx + o); });
}

// x [.., C] as R rows of C; gamma and beta (when given) [C]: the checked sizes, or false after failing the op.
bool RowShapes(TF_OpKernelContext* ctx, const std::vector<Input>& in, const char* op, int64_t& R, int64_t& C) {
  const auto& x = in[0].dims;
  if (x.empty()) return Fail(ctx, std::string(op) + ": x must be [.., channels]"), false;
  C = x.back(), R = 1;
  for (size_t i = 0; i + 1 < x.size(); i++) R *= x[i];
  if (C < 1 || C > INT32_MAX || in[1].dims != std::vector<int64_t>{C}) return Fail(ctx, std::string(op) + ": gamma and beta must be [channels]"), false;
  return true;
}

// R rows of C elements in chunks of whole rows (about kChunk elements each): fn(chunk, r0, r1) for each of the
// RowChunks(R, C) chunks (the index places per-chunk partial sums), on the threads from kMinThreaded elements up.
int64_t RowsPerChunk(int64_t C) { return std::max<int64_t>(1, kChunk / C); }
int64_t RowChunks(int64_t R, int64_t C) { return (R + RowsPerChunk(C) - 1) / RowsPerChunk(C); }
template <typename F>
void ForRowChunks(const Attrs& a, int64_t R, int64_t C, const F& fn) {
  const int64_t per = RowsPerChunk(C);
  ParallelFor(RowChunks(R, C), R * C < kMinThreaded ? 1 : a.num_threads, [&](int64_t i) { fn(i, i * per, std::min(R, (i + 1) * per)); });
}

void ComputeLayerNorm(void* attrs, TF_OpKernelContext* ctx) {
  const Attrs& a = *static_cast<Attrs*>(attrs);
  std::vector<Input> in(3);  // x, gamma, beta
  int64_t R, C;
  if (!GetInputs(ctx, in, "ControlnetTsLayerNorm") || !RowShapes(ctx, in, "ControlnetTsLayerNorm", R, C)) return;
  if (in[2].dims != in[1].dims) return Fail(ctx, "ControlnetTsLayerNorm: gamma and beta must be [channels]");
  float* y = Allocate(ctx, 0, in[0].dims);
  float* mean = y ? Allocate(ctx, 1, {R}) : nullptr;
  float* rstd = mean ? Allocate(ctx, 2, {R}) : nullptr;
  if (!rstd) return;
  ForRowChunks(a, R, C, [&](int64_t, int64_t r0, int64_t r1) { K.layer_norm(in[0].data, r0, r1, int(C), in[1].data, in[2].data, a.eps, y, mean, rstd); });
}

void ComputeLayerNormGrad(void* attrs, TF_OpKernelContext* ctx) {
  const Attrs& a = *static_cast<Attrs*>(attrs);
  std::vector<Input> in(5);  // x, gamma, mean, rstd, dy
  int64_t R, C;
  if (!GetInputs(ctx, in, "ControlnetTsLayerNormGrad") || !RowShapes(ctx, in, "ControlnetTsLayerNormGrad", R, C)) return;
  if (in[2].dims != std::vector<int64_t>{R} || in[3].dims != std::vector<int64_t>{R} || in[4].dims != in[0].dims) {
    return Fail(ctx, "ControlnetTsLayerNormGrad: mean and rstd must be [rows], dy shaped as x");
  }
  float* dx = Allocate(ctx, 0, in[0].dims);
  float* dgamma = dx ? Allocate(ctx, 1, {C}) : nullptr;
  float* dbeta = dgamma ? Allocate(ctx, 2, {C}) : nullptr;
  if (!dbeta) return;
  const int64_t chunks = RowChunks(R, C);
  std::vector<float> dgammaP(chunks * C, 0.f), dbetaP(chunks * C, 0.f);  // per chunk
  ForRowChunks(a, R, C, [&](int64_t i, int64_t r0, int64_t r1) {
    K.layer_norm_grad(in[0].data, in[4].data, r0, r1, int(C), in[1].data, in[2].data, in[3].data, dx, dgammaP.data() + i * C, dbetaP.data() + i * C);
  });
  SumPartsInOrder(dgammaP, dbetaP, chunks, C, dgamma, dbeta);
}

// h [.., 2F] as R rows: the checked sizes (F the output's last axis), or false after failing the op.
bool GegluShapes(TF_OpKernelContext* ctx, const std::vector<int64_t>& h, const char* op, int64_t& R, int64_t& F) {
  if (h.empty() || h.back() % 2 != 0 || h.back() < 2) return Fail(ctx, std::string(op) + ": h must be [.., 2·features] with features ≥ 1"), false;
  F = h.back() / 2, R = 1;
  for (size_t i = 0; i + 1 < h.size(); i++) R *= h[i];
  return true;
}

void ComputeGeglu(void* attrs, TF_OpKernelContext* ctx) {
  std::vector<Input> in(1);
  int64_t R, F;
  if (!GetInputs(ctx, in, "ControlnetTsGeglu") || !GegluShapes(ctx, in[0].dims, "ControlnetTsGeglu", R, F)) return;
  std::vector<int64_t> ydims = in[0].dims;
  ydims.back() = F;
  float* y = Allocate(ctx, 0, ydims);
  if (!y) return;
  ForRowChunks(*static_cast<Attrs*>(attrs), R, 2 * F, [&](int64_t, int64_t r0, int64_t r1) { K.geglu(in[0].data, r0, r1, F, y); });
}

void ComputeGegluGrad(void* attrs, TF_OpKernelContext* ctx) {
  std::vector<Input> in(2);  // h, dy
  int64_t R, F;
  if (!GetInputs(ctx, in, "ControlnetTsGegluGrad") || !GegluShapes(ctx, in[0].dims, "ControlnetTsGegluGrad", R, F)) return;
  std::vector<int64_t> ydims = in[0].dims;
  ydims.back() = F;
  if (in[1].dims != ydims) return Fail(ctx, "ControlnetTsGegluGrad: dy must be shaped as the output [.., features]");
  float* dh = Allocate(ctx, 0, in[0].dims);
  if (!dh) return;
  ForRowChunks(*static_cast<Attrs*>(attrs), R, 2 * F, [&](int64_t, int64_t r0, int64_t r1) { K.geglu_grad(in[0].data, in[1].data, r0, r1, F, dh); });
}

// a + b where b is a's shape, or one C-row per batch item ([B, 1, …, 1, C]) or for all ([1, …, 1, C] / [C]). Why:
// TensorFlow's Add hands any add above ~100K elements to its intra-op pool, and on a 2-vCPU VM a 131K-element add
// (every transformer's residual in bench-mid) takes 3–10× longer on two threads than on one; here it runs on the
// calling thread below kMinThreaded.
void ComputeAdd(void* attrs, TF_OpKernelContext* ctx) {
  std::vector<Input> in(2);
  if (!GetInputs(ctx, in, "ControlnetTsAdd")) return;
  const auto& a = in[0].dims;
  const auto& b = in[1].dims;
  const int64_t n = TF_TensorElementCount(in[0].t), nb = TF_TensorElementCount(in[1].t);
  const int64_t C = a.empty() ? 1 : a.back(), batch = a.empty() ? 1 : a[0];
  bool rows = b != a && !a.empty() && !b.empty() && b.size() <= a.size() && b.back() == C &&
              (nb == C || (a.size() == b.size() && b[0] == batch && nb == batch * C));
  for (size_t i = 1; rows && b.size() == a.size() && i + 1 < b.size(); i++) rows = b[i] == 1;
  if (b != a && !rows) return Fail(ctx, "ControlnetTsAdd: b must be shaped as a, or [B or 1, 1, …, 1, C]");
  float* y = Allocate(ctx, 0, a);
  if (!y) return;
  const float* x = in[0].data;
  const float* z = in[1].data;
  const int64_t perBatch = n / std::max<int64_t>(batch, 1);  // elements of one batch item
  Elementwise(*static_cast<Attrs*>(attrs), n, [&](int64_t o, int64_t len) {
    if (!rows) return K.add(x + o, z + o, len, y + o);
    // chunk [o, o+len) row by row (a chunk is a multiple of 64K elements; rows need not divide it)
    for (int64_t i = o; i < o + len;) {
      const int64_t c = i % C, m = std::min(o + len - i, C - c);
      const float* row = z + (nb == C ? 0 : (i / perBatch) * C);
      K.add(x + i, row + c, m, y + i);
      i += m;
    }
  });
}

// Products of at least this many multiply-adds use the threads: about 50 µs of one core's work at this kernel's
// 75–100 GFLOP/s, worth a spinning worker's hand-off (see kMinThreaded for the measurement; it was 16M while workers
// had to be woken from a condition variable).
constexpr int64_t kMinThreadedMacs = 1 << 21;

void ComputeMatMul(void* attrs, TF_OpKernelContext* ctx) {
  const Attrs& at = *static_cast<Attrs*>(attrs);
  std::vector<Input> in(3);  // a, b, bias
  if (!GetInputs(ctx, in, "ControlnetTsMatMul")) return;
  const auto& a = in[0].dims;
  const auto& b = in[1].dims;
  if (a.empty() || b.size() != 2) return Fail(ctx, "ControlnetTsMatMul: a must be [.., K], b a matrix");
  const int64_t D = a.back(), N = at.transpose_b ? b[0] : b[1];
  if ((at.transpose_b ? b[1] : b[0]) != D || D > INT32_MAX) return Fail(ctx, "ControlnetTsMatMul: a's last axis and b's contracted axis differ");
  if (at.has_bias && in[2].dims != std::vector<int64_t>{N}) return Fail(ctx, "ControlnetTsMatMul: bias must be [N]");
  const int64_t M = D == 0 ? 0 : TF_TensorElementCount(in[0].t) / D;  // D: the contracted size
  std::vector<int64_t> ydims = a;
  ydims.back() = N;
  float* y = Allocate(ctx, 0, ydims);
  if (!y) return;
  const float* B = in[1].data;
  AlignedFloats bt;
  if (at.transpose_b) {  // b [N, D] → [D, N]: the kernel reads B row by row
    bt.resize(D * N);
    for (int64_t n = 0; n < N; n++)
      for (int64_t k = 0; k < D; k++) bt[k * N + n] = B[n * D + k];
    B = bt.data();
  }
  const float* bias = at.has_bias ? in[2].data : nullptr;
  constexpr int64_t kRows = 64;  // rows per work item (a multiple of the kernel's 4- or 8-row block)
  ParallelFor((M + kRows - 1) / kRows, M * N * D < kMinThreadedMacs ? 1 : at.num_threads,
              [&](int64_t i) { K.gemm(in[0].data, B, bias, i * kRows, std::min(M, (i + 1) * kRows), int(D), N, y); });
}

// name, inputs, outputs, attributes; then its CPU kernel
struct Op {
  const char* name;
  std::vector<const char*> inputs, outputs, attrs;
  void* (*create)(TF_OpKernelConstruction*);
  void (*compute)(void*, TF_OpKernelContext*);
};

const std::vector<Op>& Ops() {
  static const std::vector<Op> ops = {
      {"ControlnetTsAttention", {"q: float", "k: float", "v: float"}, {"out: float", "lse: float"},
       {"scale: float", "heads: int = 1", "num_threads: int = 1"}, CreateAttention, ComputeAttention},
      {"ControlnetTsAttentionGrad", {"q: float", "k: float", "v: float", "out: float", "lse: float", "dout: float"},
       {"dq: float", "dk: float", "dv: float"}, {"scale: float", "heads: int = 1", "num_threads: int = 1"}, CreateAttention, ComputeAttentionGrad},
      {"ControlnetTsGroupNorm", {"x: float", "gamma: float", "beta: float"}, {"y: float", "mean: float", "rstd: float"},
       {"groups: int", "eps: float", "silu: bool = false", "num_threads: int = 1"}, CreateGroupNorm, ComputeGroupNorm},
      {"ControlnetTsGroupNormGrad", {"x: float", "gamma: float", "beta: float", "mean: float", "rstd: float", "dy: float"},
       {"dx: float", "dgamma: float", "dbeta: float"}, {"groups: int", "silu: bool = false", "num_threads: int = 1"},
       CreateGroupNormGrad, ComputeGroupNormGrad},
      {"ControlnetTsAdamW", {"params: N * float", "grads: N * float", "exp_avg: N * float", "exp_avg_sq: N * float"},
       {"new_params: N * float", "new_exp_avg: N * float", "new_exp_avg_sq: N * float"},
       {"N: int >= 1", "decay: float", "one_minus_beta1: float", "beta2: float", "one_minus_beta2: float", "bc2_sqrt: float",
        "eps: float", "neg_step_size: float", "num_threads: int = 1"},
       CreateAdamW, ComputeAdamW},
      {"ControlnetTsNorms", {"tensors: N * float"}, {"norms: float"}, {"N: int >= 1", "num_threads: int = 1"}, CreateNorms, ComputeNorms},
      {"ControlnetTsSilu", {"x: float"}, {"y: float"}, {"num_threads: int = 1"}, CreateElementwise, ComputeSilu},
      {"ControlnetTsSiluGrad", {"x: float", "dy: float"}, {"dx: float"}, {"num_threads: int = 1"}, CreateElementwise, ComputeSiluGrad},
      {"ControlnetTsLayerNorm", {"x: float", "gamma: float", "beta: float"}, {"y: float", "mean: float", "rstd: float"},
       {"eps: float", "num_threads: int = 1"}, CreateLayerNorm, ComputeLayerNorm},
      {"ControlnetTsLayerNormGrad", {"x: float", "gamma: float", "mean: float", "rstd: float", "dy: float"},
       {"dx: float", "dgamma: float", "dbeta: float"}, {"num_threads: int = 1"}, CreateElementwise, ComputeLayerNormGrad},
      {"ControlnetTsGeglu", {"h: float"}, {"y: float"}, {"num_threads: int = 1"}, CreateElementwise, ComputeGeglu},
      {"ControlnetTsGegluGrad", {"h: float", "dy: float"}, {"dh: float"}, {"num_threads: int = 1"}, CreateElementwise, ComputeGegluGrad},
      {"ControlnetTsAdd", {"a: float", "b: float"}, {"y: float"}, {"num_threads: int = 1"}, CreateElementwise, ComputeAdd},
      {"ControlnetTsMatMul", {"a: float", "b: float", "bias: float"}, {"y: float"}, {"transpose_b: bool = false", "has_bias: bool = false", "num_threads: int = 1"},
       CreateMatMul, ComputeMatMul},
  };
  return ops;
}

std::string RegisterOps() {
  TF_Status* s = TF_NewStatus();
  std::string error;
  auto check = [&](const char* what) {
    if (error.empty() && TF_GetCode(s) != TF_OK) error = std::string(what) + ": " + TF_Message(s);
  };
  for (const Op& op : Ops()) {
    TF_OpDefinitionBuilder* b = TF_NewOpDefinitionBuilder(op.name);
    for (const char* x : op.inputs) TF_OpDefinitionBuilderAddInput(b, x);
    for (const char* x : op.outputs) TF_OpDefinitionBuilderAddOutput(b, x);
    for (const char* x : op.attrs) TF_OpDefinitionBuilderAddAttr(b, x);
    TF_RegisterOpDefinition(b, s);
    check((std::string("registering op ") + op.name).c_str());
    TF_RegisterKernelBuilder((std::string(op.name) + "Cpu").c_str(), TF_NewKernelBuilder(op.name, "CPU", op.create, op.compute, Delete), s);
    check((std::string("registering the CPU kernel of ") + op.name).c_str());
  }
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
  napi_create_array_with_length(env, Ops().size(), &names);
  for (uint32_t i = 0; i < Ops().size(); i++) {
    napi_create_string_utf8(env, Ops()[i].name, NAPI_AUTO_LENGTH, &name);
    napi_set_element(env, names, i, name);
  }
  return names;
}

napi_value KernelIsa(napi_env env, napi_callback_info) {
  napi_value out;
  napi_create_string_utf8(env, kAvx512 ? "avx512" : kAvx2 ? "avx2" : "baseline", NAPI_AUTO_LENGTH, &out);
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

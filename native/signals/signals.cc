// Holds asynchronous signals back from the threads that run TensorFlow's kernels, for Node (N-API). No TensorFlow
// dependency: pthread signal masks only.
//
// Why: the oneDNN inside TensorFlow 2.21's x86 wheels has JIT'ed f32 GEMM kernels (jit_avx512_common_gemm_f32,
// jit_avx_gemm_f32: TF's MatMul, and its Eigen convolutions and their gradients through sgemm) that point the stack
// pointer into a heap workspace while they run. A signal handled on that thread meanwhile writes its frame there and
// corrupts the heap ("corrupted size vs. prev_size", "free(): invalid pointer" later) — oneDNN issue #4845, fixed in
// oneDNN by PR #4855 (2026-03), after the oneDNN TensorFlow 2.21 bundles. Reproduced here in C on the wheel's library
// alone: a 1 kHz SIGPROF timer with an empty handler aborts a loop of MatMul [256,512]·[512,128] within seconds;
// none with the handler on an alternate stack. Node receives such signals: V8's CPU profiler (SIGPROF, 1 kHz), a
// Jupyter interrupt (SIGINT), a child's exit (SIGCHLD), a terminal resize.
//
// So the engine holds them back while an op runs (hold/release around each op on the calling thread), and the
// threads TensorFlow starts inside that window — its intra-/inter-op pools are created with the eager context when
// its addon loads — inherit the held mask for good. A signal sent to the process then goes to a thread that runs
// none of these kernels (libuv's and V8's workers), or waits for the op to end; synchronous faults (SIGSEGV, …) are
// never held.
//
// JS API (lib/engine/native/signals.ts): hold() / release() — nest; release() restores the mask hold() found.
#include <node_api.h>

#include <pthread.h>
#include <signal.h>

#include <initializer_list>

namespace {

const sigset_t& HeldSignals() {
  static const sigset_t set = [] {
    sigset_t s;
    sigfillset(&s);
    for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS, SIGABRT}) sigdelset(&s, sig);
    return s;
  }();
  return set;
}

thread_local int depth = 0;
thread_local sigset_t previous;

napi_value Hold(napi_env, napi_callback_info) {
  if (depth++ == 0) pthread_sigmask(SIG_BLOCK, &HeldSignals(), &previous);
  return nullptr;
}

napi_value Release(napi_env, napi_callback_info) {
  if (depth > 0 && --depth == 0) pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  return nullptr;
}

napi_value ModuleInit(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"hold", nullptr, Hold, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"release", nullptr, Release, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, ModuleInit)

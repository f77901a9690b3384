// The native engine's host-memory policy, for Node (N-API). No TensorFlow dependency: glibc's malloc only.
//
// Why: with oneDNN (on in TensorFlow's x86 wheels) TF allocates tensors from a BFC pool that never returns memory and
// fragments over the steps (SD1.5 at 512 px: peak RSS 1.14x the live tensors, growing step after step). With
// TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1 tensors come from malloc instead, but glibc maps every allocation above 32 MB
// afresh and unmaps it on free, so each attention map is zeroed by the kernel again on every use (the 512 px step
// went from ~33 s to ~58 s on a 2-core VM). Serving large blocks from the heap instead (M_MMAP_MAX=0) reuses freed
// memory like the pool does, without its fragmentation; trimming is off too (M_TRIM_THRESHOLD -1), else freeing a few
// attention maps at the heap's top hands them back to the kernel and the next op faults them in, zeroed, again.
// Freed memory stays in the process for reuse, as with TensorFlow's pool. Measured in README (`npm run bench --
// sd15-step`).
//
// JS API (lib/engine/native/host-memory.ts):
//   useHeapForLargeBlocks(): boolean   mallopt(M_MMAP_MAX, 0) + mallopt(M_TRIM_THRESHOLD, -1); false if refused
#include <node_api.h>

#include <malloc.h>

namespace {

napi_value UseHeapForLargeBlocks(napi_env env, napi_callback_info) {
  // mallopt returns 1 on success; a trim threshold of -1 (as size_t: the largest) means "never trim"
  const bool ok = mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, -1) == 1;
  napi_value out;
  napi_get_boolean(env, ok, &out);
  return out;
}

napi_value ModuleInit(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"useHeapForLargeBlocks", nullptr, UseHeapForLargeBlocks, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, ModuleInit)

// Data-parallel all-reduce on TensorFlow's collective ops, for Node (N-API).
//
// This is the runtime MultiWorkerMirroredStrategy uses: every process creates an eager context, joins a gRPC cluster
// (job "worker", one task per process) with TFE_EnableCollectiveOps, and runs CollectiveReduceV2 on its CPU device;
// TensorFlow's collective executor does the ring all-reduce between the tasks. We add nothing to the protocol: the
// addon only moves a host Float32Array in and out of a TF tensor, and exposes TF's own failure tools
// (TFE_CollectiveOpsCheckPeerHealth, TFE_AbortCollectiveOps) and the op's timeout.
//
// It is independent of the training engine (gradients are read to host memory by the caller), so it works beside
// tfjs-wasm as well as tfjs-node. Built by scripts/native/build-collective.mjs against TF's C API headers and
// libtensorflow_cc.so.2 / libtensorflow_framework.so.2 (the tensorflow-cpu wheel's).
//
// JS API (see lib/training/collective.ts for the typed wrapper):
//   init({ rank, worldSize, addresses: ["host:port", ...], intraOpThreads?, interOpThreads? })   throws on error
//   allReduce(f32: Float32Array, { mean?: boolean, timeoutSeconds?: number }): Promise<void>   in place
//   checkPeerHealth(task: number, timeoutMs: number): Promise<void>                             rejects if down
//   abort(message: string): void                                     fails pending and later collectives at once
#include <node_api.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "tensorflow/c/c_api.h"
#include "tensorflow/c/c_api_experimental.h"
#include "tensorflow/c/eager/c_api.h"
#include "tensorflow/c/eager/c_api_experimental.h"

namespace {

// ---- the few protobuf fields we need, hand-encoded (wire format: varint / length-delimited) ----
// Field numbers from the TF 2.21 wheel's descriptors (tensorflow/core/protobuf/*.proto):
//   ServerDef { ClusterDef cluster = 1; string job_name = 2; int32 task_index = 3;
//               ConfigProto default_session_config = 4; string protocol = 5; int32 port = 6; }
//   ClusterDef { repeated JobDef job = 1; }
//   JobDef { string name = 1; map<int32, string> tasks = 2; }   (map entry: key = 1, value = 2)
//   ConfigProto { int32 intra_op_parallelism_threads = 2; int32 inter_op_parallelism_threads = 5;
//                 Experimental experimental = 16; }   Experimental { string collective_group_leader = 1; }
void PutVarint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
void PutVarintField(std::string& out, int field, uint64_t v) {
  PutVarint(out, (static_cast<uint64_t>(field) << 3) | 0);
  PutVarint(out, v);
}
void PutBytesField(std::string& out, int field, const std::string& bytes) {
  PutVarint(out, (static_cast<uint64_t>(field) << 3) | 2);
  PutVarint(out, bytes.size());
  out += bytes;
}

const char kJob[] = "worker";

std::string TaskName(int task) { return "/job:worker/replica:0/task:" + std::to_string(task); }

std::string ConfigProtoBytes(int intra, int inter) {
  std::string experimental, config;
  PutBytesField(experimental, 1, TaskName(0));  // collective_group_leader: task 0 resolves groups, as MWMS does
  if (intra > 0) PutVarintField(config, 2, intra);
  if (inter > 0) PutVarintField(config, 5, inter);
  PutBytesField(config, 16, experimental);
  return config;
}

std::string ServerDefBytes(const std::vector<std::string>& addresses, int rank, int port, const std::string& config) {
  std::string job;
  PutBytesField(job, 1, kJob);
  for (size_t i = 0; i < addresses.size(); i++) {
    std::string entry;
    PutVarintField(entry, 1, i);
    PutBytesField(entry, 2, addresses[i]);
    PutBytesField(job, 2, entry);
  }
  std::string cluster, server;
  PutBytesField(cluster, 1, job);
  PutBytesField(server, 1, cluster);
  PutBytesField(server, 2, kJob);
  PutVarintField(server, 3, rank);
  PutBytesField(server, 4, config);
  PutBytesField(server, 5, "grpc");
  PutVarintField(server, 6, port);
  return server;
}

// ---- process-wide state: one collective context per process ----
TFE_Context* g_ctx = nullptr;
int g_rank = -1;
int g_world = 0;
std::string g_device;
std::atomic<int32_t> g_instance{1};
constexpr int32_t kGroupKey = 1;

bool Throw(napi_env env, const std::string& msg) {
  napi_throw_error(env, "ERR_COLLECTIVE", msg.c_str());
  return false;
}

bool GetInt(napi_env env, napi_value obj, const char* key, int* out, bool required) {
  bool has = false;
  napi_has_named_property(env, obj, key, &has);
  if (!has) {
    if (required) return Throw(env, std::string("init: missing ") + key);
    return true;
  }
  napi_value v;
  napi_get_named_property(env, obj, key, &v);
  int32_t i;
  if (napi_get_value_int32(env, v, &i) != napi_ok) return Throw(env, std::string("init: ") + key + " must be an integer");
  *out = i;
  return true;
}

std::string GetString(napi_env env, napi_value v) {
  size_t len = 0;
  napi_get_value_string_utf8(env, v, nullptr, 0, &len);
  std::string s(len, '\0');
  napi_get_value_string_utf8(env, v, s.data(), len + 1, &len);
  return s;
}

napi_value Init(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  if (g_ctx) return Throw(env, "init: the collective context already exists in this process"), nullptr;
  if (argc < 1) return Throw(env, "init: expected an options object"), nullptr;
  int rank = -1, world = 0, intra = 1, inter = 2;
  if (!GetInt(env, argv[0], "rank", &rank, true) || !GetInt(env, argv[0], "worldSize", &world, true) ||
      !GetInt(env, argv[0], "intraOpThreads", &intra, false) || !GetInt(env, argv[0], "interOpThreads", &inter, false))
    return nullptr;
  napi_value arr;
  napi_get_named_property(env, argv[0], "addresses", &arr);
  uint32_t n = 0;
  bool isArray = false;
  napi_is_array(env, arr, &isArray);
  if (!isArray) return Throw(env, "init: addresses must be an array of host:port"), nullptr;
  napi_get_array_length(env, arr, &n);
  std::vector<std::string> addresses;
  for (uint32_t i = 0; i < n; i++) {
    napi_value e;
    napi_get_element(env, arr, i, &e);
    addresses.push_back(GetString(env, e));
  }
  if (world < 1 || static_cast<uint32_t>(world) != n)
    return Throw(env, "init: worldSize " + std::to_string(world) + " but " + std::to_string(n) + " addresses"), nullptr;
  if (rank < 0 || rank >= world) return Throw(env, "init: rank " + std::to_string(rank) + " outside [0, worldSize)"), nullptr;
  const std::string& self = addresses[rank];
  size_t colon = self.rfind(':');
  int port = colon == std::string::npos ? 0 : std::atoi(self.c_str() + colon + 1);
  if (port <= 0) return Throw(env, "init: address " + self + " has no port"), nullptr;

  std::string config = ConfigProtoBytes(intra, inter);
  std::string serverDef = ServerDefBytes(addresses, rank, port, config);
  TF_Status* st = TF_NewStatus();
  TFE_ContextOptions* opts = TFE_NewContextOptions();
  TFE_ContextOptionsSetConfig(opts, config.data(), config.size(), st);
  TFE_Context* ctx = TF_GetCode(st) == TF_OK ? TFE_NewContext(opts, st) : nullptr;
  TFE_DeleteContextOptions(opts);
  if (TF_GetCode(st) == TF_OK) TFE_EnableCollectiveOps(ctx, serverDef.data(), serverDef.size(), st);
  if (TF_GetCode(st) != TF_OK) {
    std::string msg = TF_Message(st);
    TF_DeleteStatus(st);
    // the context is left alive on failure: deleting a half-started cluster context can block in TF
    return Throw(env, "TensorFlow could not start collective task " + std::to_string(rank) + " on " + self + ": " + msg),
           nullptr;
  }
  TF_DeleteStatus(st);
  g_ctx = ctx;
  g_rank = rank;
  g_world = world;
  g_device = TaskName(rank) + "/device:CPU:0";
  napi_value undefined;
  napi_get_undefined(env, &undefined);
  return undefined;
}

// ---- async work: the collective blocks until every task contributed, so it runs on libuv's thread pool ----
struct ReduceWork {
  napi_async_work work = nullptr;
  napi_deferred deferred = nullptr;
  napi_ref bufferRef = nullptr;
  float* data = nullptr;
  size_t length = 0;
  bool mean = true;
  float timeoutSeconds = 0;
  int32_t instance = 0;
  std::string error;
};

TFE_TensorHandle* ScalarInt(int32_t v, TF_Status* st) {
  return TFE_NewTensorHandleFromScalar(TF_INT32, &v, sizeof(v), st);
}

void ExecuteReduce(napi_env, void* p) {
  auto* w = static_cast<ReduceWork*>(p);
  TF_Status* st = TF_NewStatus();
  int64_t dims[1] = {static_cast<int64_t>(w->length)};
  TF_Tensor* t = TF_AllocateTensor(TF_FLOAT, dims, 1, w->length * sizeof(float));
  std::memcpy(TF_TensorData(t), w->data, w->length * sizeof(float));
  TFE_TensorHandle* in = TFE_NewTensorHandle(t, st);
  TF_DeleteTensor(t);
  TFE_TensorHandle* groupSize = ScalarInt(g_world, st);
  TFE_TensorHandle* groupKey = ScalarInt(kGroupKey, st);
  TFE_TensorHandle* instanceKey = ScalarInt(w->instance, st);
  TFE_Op* op = TFE_NewOp(g_ctx, "CollectiveReduceV2", st);
  if (TF_GetCode(st) == TF_OK) {
    TFE_OpSetDevice(op, g_device.c_str(), st);
    TFE_OpSetAttrType(op, "T", TF_FLOAT);
    TFE_OpSetAttrString(op, "merge_op", "Add", 3);
    const char* finalOp = w->mean ? "Div" : "Id";
    TFE_OpSetAttrString(op, "final_op", finalOp, std::strlen(finalOp));
    TFE_OpSetAttrString(op, "communication_hint", "ring", 4);
    TFE_OpSetAttrFloat(op, "timeout_seconds", w->timeoutSeconds);
    TFE_OpAddInput(op, in, st);
    TFE_OpAddInput(op, groupSize, st);
    TFE_OpAddInput(op, groupKey, st);
    TFE_OpAddInput(op, instanceKey, st);
    TFE_OpAddInputList(op, nullptr, 0, st);  // ordering_token: none
  }
  TFE_TensorHandle* out = nullptr;
  int numOut = 1;
  if (TF_GetCode(st) == TF_OK) TFE_Execute(op, &out, &numOut, st);
  TF_Tensor* result = TF_GetCode(st) == TF_OK ? TFE_TensorHandleResolve(out, st) : nullptr;
  if (TF_GetCode(st) == TF_OK) {
    if (TF_TensorByteSize(result) != w->length * sizeof(float)) w->error = "CollectiveReduceV2 returned a tensor of the wrong size";
    else std::memcpy(w->data, TF_TensorData(result), w->length * sizeof(float));
  } else {
    w->error = TF_Message(st);
  }
  if (result) TF_DeleteTensor(result);
  if (out) TFE_DeleteTensorHandle(out);
  if (op) TFE_DeleteOp(op);
  for (TFE_TensorHandle* h : {in, groupSize, groupKey, instanceKey})
    if (h) TFE_DeleteTensorHandle(h);
  TF_DeleteStatus(st);
}

void Settle(napi_env env, napi_deferred deferred, const std::string& error) {
  napi_value v;
  if (error.empty()) {
    napi_get_undefined(env, &v);
    napi_resolve_deferred(env, deferred, v);
  } else {
    napi_value msg;
    napi_create_string_utf8(env, error.c_str(), error.size(), &msg);
    napi_create_error(env, nullptr, msg, &v);
    napi_reject_deferred(env, deferred, v);
  }
}

void CompleteReduce(napi_env env, napi_status, void* p) {
  auto* w = static_cast<ReduceWork*>(p);
  Settle(env, w->deferred, w->error);
  napi_delete_reference(env, w->bufferRef);
  napi_delete_async_work(env, w->work);
  delete w;
}

double GetNumber(napi_env env, napi_value obj, const char* key, double fallback) {
  bool has = false;
  if (napi_has_named_property(env, obj, key, &has) != napi_ok || !has) return fallback;
  napi_value v;
  napi_get_named_property(env, obj, key, &v);
  double d = fallback;
  if (napi_get_value_double(env, v, &d) != napi_ok) {
    bool b;
    if (napi_get_value_bool(env, v, &b) == napi_ok) return b ? 1 : 0;
  }
  return d;
}

napi_value AllReduce(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  if (!g_ctx) return Throw(env, "allReduce: init() was not called"), nullptr;
  napi_typedarray_type type;
  size_t length = 0;
  void* data = nullptr;
  bool isTyped = false;
  if (argc >= 1) napi_is_typedarray(env, argv[0], &isTyped);
  if (!isTyped) return Throw(env, "allReduce: expected a Float32Array"), nullptr;
  napi_get_typedarray_info(env, argv[0], &type, &length, &data, nullptr, nullptr);
  if (type != napi_float32_array) return Throw(env, "allReduce: expected a Float32Array"), nullptr;
  auto* w = new ReduceWork();
  w->data = static_cast<float*>(data);
  w->length = length;
  if (argc >= 2) {
    w->mean = GetNumber(env, argv[1], "mean", 1) != 0;
    w->timeoutSeconds = static_cast<float>(GetNumber(env, argv[1], "timeoutSeconds", 0));
  }
  // Instance keys follow the order of calls, which is the same on every rank (the training loop is deterministic).
  w->instance = g_instance.fetch_add(1);
  napi_create_reference(env, argv[0], 1, &w->bufferRef);
  napi_value promise, name;
  napi_create_promise(env, &w->deferred, &promise);
  napi_create_string_utf8(env, "controlnet-ts:allReduce", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, nullptr, name, ExecuteReduce, CompleteReduce, w, &w->work);
  napi_queue_async_work(env, w->work);
  return promise;
}

struct HealthWork {
  napi_async_work work = nullptr;
  napi_deferred deferred = nullptr;
  int task = 0;
  int64_t timeoutMs = 0;
  std::string error;
};

napi_value CheckPeerHealth(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  if (!g_ctx) return Throw(env, "checkPeerHealth: init() was not called"), nullptr;
  auto* w = new HealthWork();
  int32_t task = 0;
  double ms = 5000;
  if (argc < 1 || napi_get_value_int32(env, argv[0], &task) != napi_ok) return delete w, Throw(env, "checkPeerHealth: task must be an integer"), nullptr;
  if (argc >= 2) napi_get_value_double(env, argv[1], &ms);
  w->task = task;
  w->timeoutMs = static_cast<int64_t>(ms);
  napi_value promise, name;
  napi_create_promise(env, &w->deferred, &promise);
  napi_create_string_utf8(env, "controlnet-ts:checkPeerHealth", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(
      env, nullptr, name,
      [](napi_env, void* p) {
        auto* h = static_cast<HealthWork*>(p);
        TF_Status* st = TF_NewStatus();
        TFE_CollectiveOpsCheckPeerHealth(g_ctx, TaskName(h->task).c_str(), h->timeoutMs, st);
        if (TF_GetCode(st) != TF_OK) h->error = TF_Message(st);
        TF_DeleteStatus(st);
      },
      [](napi_env env, napi_status, void* p) {
        auto* h = static_cast<HealthWork*>(p);
        Settle(env, h->deferred, h->error);
        napi_delete_async_work(env, h->work);
        delete h;
      },
      w, &w->work);
  napi_queue_async_work(env, w->work);
  return promise;
}

napi_value Abort(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  napi_value undefined;
  napi_get_undefined(env, &undefined);
  if (!g_ctx) return undefined;
  std::string msg = argc >= 1 ? GetString(env, argv[0]) : std::string("collective ops aborted");
  TF_Status* st = TF_NewStatus();
  TF_SetStatus(st, TF_UNAVAILABLE, msg.c_str());
  TFE_AbortCollectiveOps(g_ctx, st);
  TF_DeleteStatus(st);
  return undefined;
}

napi_value ModuleInit(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"init", nullptr, Init, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"allReduce", nullptr, AllReduce, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"checkPeerHealth", nullptr, CheckPeerHealth, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"abort", nullptr, Abort, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  napi_value version;
  napi_create_string_utf8(env, TF_Version(), NAPI_AUTO_LENGTH, &version);
  napi_set_named_property(env, exports, "tensorflowVersion", version);
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, ModuleInit)

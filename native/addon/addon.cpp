// Module entry: registers the ops and the runtime controls (ISA, threads, info).
#include <napi.h>

#include "addon/args.h"
#include "common/cpu_features.h"
#include "cpu/dispatch.h"
#include "common/errors.h"
#include "common/thread_pool.h"

namespace tessera::addon {

static Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("isa", isa_name(current_isa()));
  Napi::Array isas = Napi::Array::New(env);
  uint32_t n = 0;
  for (Isa i : kAllIsas)
    if (isa_supported(i)) isas.Set(n++, isa_name(i));
  o.Set("isas", isas);
  o.Set("threads", pool_threads());
  o.Set("isaWarning", isa_env_warning());
  const CpuFeatures& f = cpu_features();
  Napi::Object feat = Napi::Object::New(env);
  feat.Set("avx2", f.avx2);
  feat.Set("fma", f.fma);
  feat.Set("f16c", f.f16c);
  feat.Set("avx512f", f.avx512f);
  feat.Set("avx512bw", f.avx512bw);
  feat.Set("avx512vl", f.avx512vl);
  feat.Set("avx512dq", f.avx512dq);
  feat.Set("avx512vnni", f.avx512_vnni);
  feat.Set("avx512bf16", f.avx512_bf16);
  feat.Set("avxvnni", f.avx_vnni);
  o.Set("features", feat);
  return o;
}

static Napi::Value SetIsa(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsString()) fail("expected 'isa' to be a string");
  std::string s = info[0].As<Napi::String>().Utf8Value();
  Isa isa;
  if (!parse_isa(s.c_str(), &isa)) fail("unknown ISA '" + s + "' (expected scalar|avx2|avx512|avx512vnni)");
  set_isa(isa);
  return info.Env().Undefined();
}

static Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  pool_set_threads((int)arg_int(info, 0, "threads", 1, 1024));
  return info.Env().Undefined();
}

void register_mmap(Napi::Env env, Napi::Object exports);     // bind_mmap.cpp
void register_convert(Napi::Env env, Napi::Object exports);  // bind_convert.cpp

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  register_op(env, exports, "info", Info);
  register_op(env, exports, "setIsa", SetIsa);
  register_op(env, exports, "setThreads", SetThreads);
  register_linear(env, exports);
  register_attention(env, exports);
  register_ops(env, exports);
  register_mmap(env, exports);
  register_convert(env, exports);
  return exports;
}

}  // namespace tessera::addon

static Napi::Object InitTessera(Napi::Env env, Napi::Object exports) { return tessera::addon::Init(env, exports); }

NODE_API_MODULE(tessera, InitTessera)

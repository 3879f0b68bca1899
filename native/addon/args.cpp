#include "addon/args.h"

#include <cstring>
#include <string>
#include <vector>

#include "common/errors.h"

namespace tessera::addon {

static Napi::Value at(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length()) fail(std::string("missing argument '") + name + "'");
  return info[i];
}

static int64_t value_int(const Napi::Value& v, const char* name, int64_t lo, int64_t hi) {
  if (!v.IsNumber()) fail(std::string("expected an integer for '") + name + "'");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d == (double)(int64_t)d)) fail(std::string("expected an integer for '") + name + "' but received " + std::to_string(d));
  int64_t x = (int64_t)d;
  if (x < lo || x > hi)
    fail(std::string("'") + name + "' = " + std::to_string(x) + " is outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return x;
}

static double value_num(const Napi::Value& v, const char* name) {
  if (!v.IsNumber()) fail(std::string("expected a number for '") + name + "'");
  return v.As<Napi::Number>().DoubleValue();
}

static bool value_bool(const Napi::Value& v, const char* name) {
  if (!v.IsBoolean()) fail(std::string("expected a boolean for '") + name + "'");
  return v.As<Napi::Boolean>().Value();
}

int64_t arg_int(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t lo, int64_t hi) {
  return value_int(at(info, i, name), name, lo, hi);
}

double arg_num(const Napi::CallbackInfo& info, size_t i, const char* name) { return value_num(at(info, i, name), name); }

bool arg_bool(const Napi::CallbackInfo& info, size_t i, const char* name) { return value_bool(at(info, i, name), name); }

bool arg_is_null(const Napi::CallbackInfo& info, size_t i) {
  return i >= info.Length() || info[i].IsNull() || info[i].IsUndefined();
}

namespace {
size_t element_bytes(napi_typedarray_type t) {
  switch (t) {
    case napi_int8_array:
    case napi_uint8_array:
    case napi_uint8_clamped_array: return 1;
    case napi_int16_array:
    case napi_uint16_array: return 2;
    case napi_float64_array:
    case napi_bigint64_array:
    case napi_biguint64_array: return 8;
    default: return 4;
  }
}

struct Range {
  const char* name;
  const uint8_t* begin;
  const uint8_t* end;
};
// The arrays of the op call running on this thread (each JS thread runs one op at a time).
thread_local std::vector<Range> g_ranges;
}  // namespace

static void* typed_value(napi_env env, const Napi::Value& v, const char* name, napi_typedarray_type want,
                         const char* want_name, int64_t len, int64_t* len_out) {
  if (!v.IsTypedArray()) fail(std::string("expected a ") + want_name + " for '" + name + "'");
  napi_typedarray_type type;
  size_t n = 0, offset = 0;
  void* data = nullptr;
  napi_value buffer;
  // napi_get_typedarray_info, not TypedArray::ArrayBuffer().Data(): the latter fails with a bare
  // "Invalid argument" for a SharedArrayBuffer, which is refused here by name instead.
  if (napi_get_typedarray_info(env, v, &type, &n, &data, &buffer, &offset) != napi_ok)
    fail(std::string("cannot read the typed array '") + name + "'");
  if (type != want) fail(std::string("expected a ") + want_name + " for '" + name + "'");
  bool plain = false, detached = false;
  if (napi_is_arraybuffer(env, buffer, &plain) != napi_ok || !plain)
    fail(std::string("'") + name + "' is backed by a SharedArrayBuffer; native kernels read only ArrayBuffer memory");
  if (napi_is_detached_arraybuffer(env, buffer, &detached) != napi_ok || detached)
    fail(std::string("'") + name + "' is detached (its ArrayBuffer was transferred)");
  if (len >= 0 && (int64_t)n != len)
    fail(std::string("'") + name + "' has " + std::to_string(n) + " elements, expected " + std::to_string(len));
  if (len_out) *len_out = (int64_t)n;
  if (!data && n > 0) fail(std::string("'") + name + "' has no backing store");
  if (n > 0) {
    const uint8_t* b = static_cast<const uint8_t*>(data);
    g_ranges.push_back({name, b, b + n * element_bytes(type)});
  }
  return data;
}

static void* typed_data(const Napi::CallbackInfo& info, size_t i, const char* name, napi_typedarray_type want,
                        const char* want_name, int64_t len, int64_t* len_out) {
  return typed_value(info.Env(), at(info, i, name), name, want, want_name, len, len_out);
}

float* arg_f32(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t len, int64_t* len_out) {
  return (float*)typed_data(info, i, name, napi_float32_array, "Float32Array", len, len_out);
}

int32_t* arg_i32(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t len, int64_t* len_out) {
  return (int32_t*)typed_data(info, i, name, napi_int32_array, "Int32Array", len, len_out);
}

float* arg_f32_opt(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t len) {
  return arg_is_null(info, i) ? nullptr : arg_f32(info, i, name, len);
}

DType arg_dtype(const Napi::CallbackInfo& info, size_t i, const char* name) {
  return (DType)arg_int(info, i, name, 0, 7);
}

void* arg_typed(const Napi::CallbackInfo& info, size_t i, const char* name, DType dt, int64_t len) {
  switch (dt) {
    case DType::F32: return typed_data(info, i, name, napi_float32_array, "Float32Array", len, nullptr);
    case DType::F16:
    case DType::BF16: return typed_data(info, i, name, napi_uint16_array, "Uint16Array", len, nullptr);
    case DType::I8: return typed_data(info, i, name, napi_int8_array, "Int8Array", len, nullptr);
    case DType::I32: return typed_data(info, i, name, napi_int32_array, "Int32Array", len, nullptr);
    case DType::U8:
    case DType::Q8_0:
    case DType::Q4_0: return typed_data(info, i, name, napi_uint8_array, "Uint8Array", len, nullptr);
  }
  fail("bad dtype");
}

Napi::Object arg_plan(const Napi::CallbackInfo& info, size_t i) {
  Napi::Value v = at(info, i, "plan");
  if (!v.IsObject()) fail("expected a plan object");
  return v.As<Napi::Object>();
}

static Napi::Value field(const Napi::Object& plan, const char* name) {
  if (!plan.Has(name)) fail(std::string("missing plan field '") + name + "'");
  return plan.Get(name);
}

int64_t plan_int(const Napi::Object& plan, const char* name, int64_t lo, int64_t hi) { return value_int(field(plan, name), name, lo, hi); }

double plan_num(const Napi::Object& plan, const char* name) { return value_num(field(plan, name), name); }

bool plan_bool(const Napi::Object& plan, const char* name) { return value_bool(field(plan, name), name); }

float* plan_f32(const Napi::Object& plan, const char* name, int64_t len) {
  return (float*)typed_value(plan.Env(), field(plan, name), name, napi_float32_array, "Float32Array", len, nullptr);
}

float* plan_f32_opt(const Napi::Object& plan, const char* name, int64_t len) {
  Napi::Value v = field(plan, name);
  if (v.IsNull() || v.IsUndefined()) return nullptr;
  return (float*)typed_value(plan.Env(), v, name, napi_float32_array, "Float32Array", len, nullptr);
}

int32_t* plan_i32(const Napi::Object& plan, const char* name, int64_t len) {
  return (int32_t*)typed_value(plan.Env(), field(plan, name), name, napi_int32_array, "Int32Array", len, nullptr);
}

int64_t mul_checked(int64_t a, int64_t b, const char* what) {
  int64_t r;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r)) fail(std::string("size overflow computing ") + what);
  return r;
}

void check_aliasing(std::initializer_list<const char*> outputs,
                    std::initializer_list<std::pair<const char*, const char*>> in_place) {
  auto is_output = [&](const char* name) {
    for (const char* o : outputs)
      if (std::strcmp(o, name) == 0) return true;
    return false;
  };
  for (size_t i = 0; i < g_ranges.size(); i++) {
    const Range& a = g_ranges[i];
    if (!is_output(a.name)) continue;
    for (size_t j = 0; j < g_ranges.size(); j++) {
      const Range& b = g_ranges[j];
      if (j == i || !(a.begin < b.end && b.begin < a.end)) continue;
      const bool both_out = is_output(b.name);
      if (both_out && j < i) continue;  // reported from the other side
      if (both_out) fail(std::string("'") + a.name + "' and '" + b.name + "' overlap in memory and both are written");
      bool allowed = false;
      for (const auto& p : in_place) allowed = allowed || (std::strcmp(p.first, a.name) == 0 && std::strcmp(p.second, b.name) == 0);
      if (allowed && a.begin == b.begin && a.end == b.end) continue;
      fail(std::string("output '") + a.name + "' overlaps input '" + b.name + "' in memory" +
           (allowed ? " (in place, it must cover the input exactly)" : ""));
    }
  }
}

struct OpEntry {
  const char* name;
  OpFn fn;
};

static Napi::Value trampoline(const Napi::CallbackInfo& info) {
  const OpEntry* e = static_cast<const OpEntry*>(info.Data());
  g_ranges.clear();
  try {
    return e->fn(info);
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& ex) {
    throw Napi::Error::New(info.Env(), std::string(e->name) + ": " + ex.what());
  } catch (...) {
    throw Napi::Error::New(info.Env(), std::string(e->name) + ": unknown native error");
  }
}

void register_op(Napi::Env env, Napi::Object exports, const char* name, OpFn fn) {
  OpEntry* e = new OpEntry{name, fn};  // lives as long as the module
  exports.Set(name, Napi::Function::New(env, trampoline, name, e));
}

}  // namespace tessera::addon

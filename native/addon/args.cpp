#include "addon/args.h"

#include <string>

#include "common/errors.h"

namespace tessera::addon {

static Napi::Value at(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length()) fail(std::string("missing argument '") + name + "'");
  return info[i];
}

int64_t arg_int(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t lo, int64_t hi) {
  Napi::Value v = at(info, i, name);
  if (!v.IsNumber()) fail(std::string("expected an integer for '") + name + "'");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d == (double)(int64_t)d)) fail(std::string("expected an integer for '") + name + "' but received " + std::to_string(d));
  int64_t x = (int64_t)d;
  if (x < lo || x > hi)
    fail(std::string("'") + name + "' = " + std::to_string(x) + " is outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return x;
}

double arg_num(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = at(info, i, name);
  if (!v.IsNumber()) fail(std::string("expected a number for '") + name + "'");
  return v.As<Napi::Number>().DoubleValue();
}

bool arg_bool(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = at(info, i, name);
  if (!v.IsBoolean()) fail(std::string("expected a boolean for '") + name + "'");
  return v.As<Napi::Boolean>().Value();
}

bool arg_is_null(const Napi::CallbackInfo& info, size_t i) {
  return i >= info.Length() || info[i].IsNull() || info[i].IsUndefined();
}

static void* typed_data(const Napi::CallbackInfo& info, size_t i, const char* name, napi_typedarray_type want,
                        const char* want_name, int64_t len, int64_t* len_out) {
  Napi::Value v = at(info, i, name);
  if (!v.IsTypedArray()) fail(std::string("expected a ") + want_name + " for '" + name + "'");
  Napi::TypedArray ta = v.As<Napi::TypedArray>();
  if (ta.TypedArrayType() != want) fail(std::string("expected a ") + want_name + " for '" + name + "'");
  int64_t n = (int64_t)ta.ElementLength();
  if (len >= 0 && n != len)
    fail(std::string("'") + name + "' has " + std::to_string(n) + " elements, expected " + std::to_string(len));
  if (len_out) *len_out = n;
  uint8_t* base = static_cast<uint8_t*>(ta.ArrayBuffer().Data());
  if (!base && n > 0) fail(std::string("'") + name + "' has no backing store");
  return base ? base + ta.ByteOffset() : nullptr;
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

int64_t mul_checked(int64_t a, int64_t b, const char* what) {
  int64_t r;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r)) fail(std::string("size overflow computing ") + what);
  return r;
}

struct OpEntry {
  const char* name;
  OpFn fn;
};

static Napi::Value trampoline(const Napi::CallbackInfo& info) {
  const OpEntry* e = static_cast<const OpEntry*>(info.Data());
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

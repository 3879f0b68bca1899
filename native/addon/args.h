// Argument readers for the N-API glue. They re-check only what guards memory (array type and
// exact length, integer ranges); all user-facing validation happens in src/tensor first.
// Failures throw tessera::Error; the op trampoline prefixes the op's name.
#pragma once
#include <napi.h>

#include <cstdint>
#include <initializer_list>
#include <utility>

#include "common/dtype.h"

namespace tessera::addon {

int64_t arg_int(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t lo, int64_t hi);
double arg_num(const Napi::CallbackInfo& info, size_t i, const char* name);
bool arg_bool(const Napi::CallbackInfo& info, size_t i, const char* name);
bool arg_is_null(const Napi::CallbackInfo& info, size_t i);

// Typed-array data of exactly `len` elements (len < 0: any length, reported through *len_out).
float* arg_f32(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t len, int64_t* len_out = nullptr);
int32_t* arg_i32(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t len, int64_t* len_out = nullptr);
// Nullable variants: null/undefined gives nullptr.
float* arg_f32_opt(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t len);
// Data of element type `dt` (f16/bf16 travel as Uint16Array, q8_0/q4_0 blocks as Uint8Array).
void* arg_typed(const Napi::CallbackInfo& info, size_t i, const char* name, DType dt, int64_t len);
DType arg_dtype(const Napi::CallbackInfo& info, size_t i, const char* name);

// Named plan fields (ARCHITECTURE rule 11): the op's one argument is the TS plan object and each
// field is read by name with the same checks as the positional readers above.
Napi::Object arg_plan(const Napi::CallbackInfo& info, size_t i);
int64_t plan_int(const Napi::Object& plan, const char* name, int64_t lo, int64_t hi);
double plan_num(const Napi::Object& plan, const char* name);
bool plan_bool(const Napi::Object& plan, const char* name);
float* plan_f32(const Napi::Object& plan, const char* name, int64_t len);
float* plan_f32_opt(const Napi::Object& plan, const char* name, int64_t len);  // null/undefined: nullptr
int32_t* plan_i32(const Napi::Object& plan, const char* name, int64_t len);

// Checked products for shape arithmetic.
int64_t mul_checked(int64_t a, int64_t b, const char* what);

// Every typed array an op call reads through the arg_* readers is recorded (name, byte range);
// the trampoline starts each call with an empty record. check_aliasing refuses the call when an
// array the op writes (`outputs`, by argument name) shares a byte with any other recorded array,
// except the exact in-place pairs {output, input} in `in_place`: a kernel writing what it still
// reads computes garbage, and one whose ids or block tables change under it leaves its buffers.
// Call it after the last arg_* read and before the kernel.
void check_aliasing(std::initializer_list<const char*> outputs,
                    std::initializer_list<std::pair<const char*, const char*>> in_place = {});

using OpFn = Napi::Value (*)(const Napi::CallbackInfo&);
// Registers fn under exports[name]; C++ exceptions become JS errors "name: message".
void register_op(Napi::Env env, Napi::Object exports, const char* name, OpFn fn);

void register_linear(Napi::Env env, Napi::Object exports);
void register_attention(Napi::Env env, Napi::Object exports);
void register_ops(Napi::Env env, Napi::Object exports);

}  // namespace tessera::addon

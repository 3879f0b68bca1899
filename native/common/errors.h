// Errors raised by native code. Kernels throw; native/addon turns every exception into a JS
// error carrying the op's name. Nothing here may abort() the process.
#pragma once
#include <stdexcept>
#include <string>

namespace tessera {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] inline void fail(const std::string& msg) { throw Error(msg); }

#define TESSERA_CHECK(cond, msg) \
  do {                           \
    if (!(cond)) ::tessera::fail(msg); \
  } while (0)

}  // namespace tessera

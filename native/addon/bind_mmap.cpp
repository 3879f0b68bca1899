// Tensor data mapped in place of being read (llama.cpp mmaps model files too). mapFileRange maps
// one tensor's bytes of an open file and returns them as an external ArrayBuffer whose finalizer
// unmaps them when V8 collects the last view, so each weight's pages live exactly as long as the
// weight. One mapping per tensor (not per file) keeps that lifetime per weight and gives each
// load its own copy-on-write pages, as reading into a fresh buffer did.
//
// The mapping is MAP_PRIVATE with PROT_READ | PROT_WRITE: JS cannot make an ArrayBuffer
// read-only, so a write into a weight's typed array (user code may do that; nothing in tessera
// does) must not SIGSEGV. Copy-on-write gives the writer a private page and leaves the file as it
// is. Pages are file-backed until written, so RSS counts only what the kernels touch.
// The file must not be truncated while mapped (a read past the new end is SIGBUS); tessera's own
// writers replace files by rename, which leaves mapped inodes intact.
#include <cerrno>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>

#include "addon/args.h"
#include "common/errors.h"

#ifndef _WIN32
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

namespace tessera::addon {

#ifndef _WIN32
namespace {

struct Mapping {
  void* base;  // page-aligned start of the mapping
  size_t len;  // mapped bytes
};

// Data pointer of every live mapped ArrayBuffer -> its mapping (for isMapped / discardMapped; each
// mapping is its own mmap, so data pointers are unique).
std::mutex g_mu;
std::unordered_map<const void*, Mapping> g_live;

void unmap(Napi::Env, void* data, Mapping* m) {
  {
    std::lock_guard<std::mutex> lock(g_mu);
    g_live.erase(data);
  }
  munmap(m->base, m->len);
  delete m;
}

// The mapping behind the ArrayBuffer argument i, if it is one of ours. (The caller holds the
// buffer, so its finalizer cannot run meanwhile.)
bool find(const Napi::CallbackInfo& info, size_t i, Mapping* out) {
  if (i >= info.Length() || !info[i].IsArrayBuffer()) fail("expected an ArrayBuffer for 'buffer'");
  void* data = info[i].As<Napi::ArrayBuffer>().Data();
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = g_live.find(data);
  if (it == g_live.end()) return false;
  *out = it->second;
  return true;
}

}  // namespace

// mapFileRange(fd, offset, length): ArrayBuffer over bytes [offset, offset + length). Pages fault
// in as the kernels first read them: populating here would only make the load wait for what the
// first forward pass does anyway.
static Napi::Value MapFileRange(const Napi::CallbackInfo& info) {
  const int fd = (int)arg_int(info, 0, "fd", 0, 1 << 30);
  const int64_t offset = arg_int(info, 1, "offset", 0, int64_t(1) << 53);
  const int64_t length = arg_int(info, 2, "length", 1, int64_t(1) << 53);
  struct stat st;
  if (fstat(fd, &st) != 0) fail(std::string("fstat failed: ") + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) fail("not a regular file");
  // A page past the end of the file would SIGBUS on access, so the range must lie inside it.
  if (offset + length > (int64_t)st.st_size)
    fail("bytes [" + std::to_string(offset) + ", " + std::to_string(offset + length) + ") are past the end of the file (" +
         std::to_string((int64_t)st.st_size) + " bytes)");
  const int64_t page = sysconf(_SC_PAGESIZE);
  const int64_t start = offset / page * page, delta = offset - start;
  const size_t len = (size_t)(delta + length);
  void* base = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, (off_t)start);
  if (base == MAP_FAILED) fail(std::string("mmap failed: ") + std::strerror(errno));
  void* data = static_cast<uint8_t*>(base) + delta;
  Mapping* m = new Mapping{base, len};
  {
    std::lock_guard<std::mutex> lock(g_mu);
    g_live[data] = *m;
  }
  try {
    // Not reported to V8 as external memory: these are file pages the kernel can reclaim, not
    // allocations, and reporting gigabytes would only make V8 collect more often.
    return Napi::ArrayBuffer::New(info.Env(), data, (size_t)length, unmap, m);
  } catch (...) {  // e.g. a runtime that forbids external buffers: the caller reads instead
    {
      std::lock_guard<std::mutex> lock(g_mu);
      g_live.erase(data);
    }
    munmap(base, len);
    delete m;
    throw;
  }
}

// isMapped(buffer): whether buffer came from mapFileRange (and is still mapped).
static Napi::Value IsMapped(const Napi::CallbackInfo& info) {
  Mapping m;
  return Napi::Boolean::New(info.Env(), find(info, 0, &m));
}

// discardMapped(buffer): drops the resident pages of a mapped buffer whose contents have been
// consumed (repacked or dequantised), so RSS does not hold them until V8 collects the buffer.
// A later read re-faults the file's bytes; pages written since mapping revert to the file.
// Returns false (and does nothing) for a buffer that is not mapped.
static Napi::Value DiscardMapped(const Napi::CallbackInfo& info) {
  Mapping m;
  const bool mapped = find(info, 0, &m);
  if (mapped) madvise(m.base, m.len, MADV_DONTNEED);
  return Napi::Boolean::New(info.Env(), mapped);
}

#else  // _WIN32: no mapping; the TS reader falls back to reading.

static Napi::Value MapFileRange(const Napi::CallbackInfo&) { fail("memory mapping is not supported on this platform"); }
static Napi::Value IsMapped(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), false); }
static Napi::Value DiscardMapped(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), false); }

#endif

void register_mmap(Napi::Env env, Napi::Object exports) {
  register_op(env, exports, "mapFileRange", MapFileRange);
  register_op(env, exports, "isMapped", IsMapped);
  register_op(env, exports, "discardMapped", DiscardMapped);
}

}  // namespace tessera::addon

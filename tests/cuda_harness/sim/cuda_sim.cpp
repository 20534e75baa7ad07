// The CUDA simulator's scheduler: blocks run one after another, the threads of a block as
// ucontext fibers on stacks of their own (annotated for AddressSanitizer). See cuda_sim.h.
#include "cuda_sim.h"

#include <dlfcn.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <sstream>
#include <vector>

#include "control.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define CUDA_SIM_ASAN 1
#endif

uint3 threadIdx{};
uint3 blockIdx{};
dim3 blockDim;
dim3 gridDim;

namespace cuda_sim {
namespace {

// Deep enough for a kernel's register arrays with ASan's redzones around each.
constexpr size_t kStackBytes = 256 * 1024;

enum class State { kReady, kAtBarrier, kAtWarpOp, kDone };

struct Fiber {
  ucontext_t context;
  char* stack = nullptr;  // kStackBytes, above a PROT_NONE guard page
  void* asan_fake_stack = nullptr;
  uint3 idx{};
  State state = State::kReady;
  Where where;  // of the barrier or collective it waits at
  // __syncthreads*: the thread's predicate and, once released, the block's reduction.
  BarrierKind barrier = BarrierKind::kPlain;
  int pred = 0;
  int barrier_result = 0;
  // Warp collective: what the lane asked for, its value, and its result.
  WarpOp op = WarpOp::kSync;
  unsigned mask = 0;
  int arg = 0;
  int width = warpSize;
  size_t bytes = 0;
  unsigned char value[8] = {};
  unsigned char result[8] = {};
};

struct Simulator {
  Settings settings;
  std::vector<std::unique_ptr<Fiber>> fibers;  // grows to the largest block; stacks reused
  std::map<const void*, int> max_dynamic_smem;
  // The block being run.
  const KernelRecord* kernel = nullptr;
  int threads = 0;
  void (*body)(void*) = nullptr;
  void* ctx = nullptr;
  void* smem = nullptr;
  Fiber* running = nullptr;
  ucontext_t scheduler_context;
  void* scheduler_fake_stack = nullptr;
  const void* scheduler_stack_bottom = nullptr;
  size_t scheduler_stack_size = 0;
};

Simulator& sim() {
  static Simulator s;
  return s;
}

std::map<std::string, std::unique_ptr<KernelRecord>>& registry() {
  static std::map<std::string, std::unique_ptr<KernelRecord>> r;
  return r;
}

std::string site(const Where& w) {
  std::string file = w.file_name();
  const size_t slash = file.rfind("csrc/");
  if (slash != std::string::npos) file = file.substr(slash);
  return file + ":" + std::to_string(w.line());
}

bool same_site(const Where& a, const Where& b) {
  return a.line() == b.line() && a.column() == b.column() &&
         (a.file_name() == b.file_name() || std::strcmp(a.file_name(), b.file_name()) == 0);
}

// ---- fibers ---------------------------------------------------------------------------------
// libc's swapcontext, not ASan's interceptor of it: the interceptor clears the shadow of the
// whole target stack at every switch (slow, and it would erase the redzones of the suspended
// fiber's frames); the fiber annotations below tell ASan about each switch instead.
int real_swapcontext(ucontext_t* from, const ucontext_t* to) {
  using Fn = int (*)(ucontext_t*, const ucontext_t*);
  static const Fn fn = [] {
    void* libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
    auto f = libc ? reinterpret_cast<Fn>(dlsym(libc, "swapcontext")) : nullptr;
    TORCH_CHECK(f != nullptr, "cuda_sim: libc's swapcontext not found");
    return f;
  }();
  return fn(from, to);
}

void switch_to_scheduler(Fiber& f, bool exiting) {
  Simulator& s = sim();
#ifdef CUDA_SIM_ASAN
  __sanitizer_start_switch_fiber(exiting ? nullptr : &f.asan_fake_stack,
                                 s.scheduler_stack_bottom, s.scheduler_stack_size);
#else
  (void)exiting;
#endif
  real_swapcontext(&f.context, &s.scheduler_context);
#ifdef CUDA_SIM_ASAN
  __sanitizer_finish_switch_fiber(f.asan_fake_stack, &s.scheduler_stack_bottom,
                                  &s.scheduler_stack_size);
#endif
}

void fiber_main() {
  Simulator& s = sim();
#ifdef CUDA_SIM_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &s.scheduler_stack_bottom, &s.scheduler_stack_size);
#endif
  s.body(s.ctx);
  Fiber& f = *s.running;
  f.state = State::kDone;
  switch_to_scheduler(f, /*exiting=*/true);  // never resumed
  std::abort();
}

void resume(Fiber& f) {
  Simulator& s = sim();
  s.running = &f;
  threadIdx = f.idx;
#ifdef CUDA_SIM_ASAN
  __sanitizer_start_switch_fiber(&s.scheduler_fake_stack, f.stack, kStackBytes);
#endif
  real_swapcontext(&s.scheduler_context, &f.context);
#ifdef CUDA_SIM_ASAN
  __sanitizer_finish_switch_fiber(s.scheduler_fake_stack, nullptr, nullptr);
#endif
  s.running = nullptr;
}

Fiber& new_fiber() {
  auto f = std::make_unique<Fiber>();
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  void* base = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  TORCH_CHECK(base != MAP_FAILED, "cuda_sim: cannot map a fiber stack");
  TORCH_CHECK(mprotect(base, page, PROT_NONE) == 0, "cuda_sim: cannot protect a stack guard");
  f->stack = static_cast<char*>(base) + page;
  TORCH_CHECK(getcontext(&f->context) == 0, "cuda_sim: getcontext failed");
  sim().fibers.push_back(std::move(f));
  return *sim().fibers.back();
}

// Thread `linear` of the block, ready to start the kernel from its first line.
void start_fiber(int linear) {
  Simulator& s = sim();
  Fiber& f = linear < static_cast<int>(s.fibers.size()) ? *s.fibers[linear] : new_fiber();
  f.state = State::kReady;
  f.idx = {linear % blockDim.x, (linear / blockDim.x) % blockDim.y,
           linear / (blockDim.x * blockDim.y)};
  f.asan_fake_stack = nullptr;
  f.context.uc_stack.ss_sp = f.stack;
  f.context.uc_stack.ss_size = kStackBytes;
  f.context.uc_link = nullptr;
  makecontext(&f.context, fiber_main, 0);
}

Fiber& current(const char* what) {
  Fiber* f = sim().running;
  TORCH_CHECK(f != nullptr, "cuda_sim: ", what, " called outside a kernel");
  return *f;
}

// ---- errors ---------------------------------------------------------------------------------
std::string describe_threads() {
  // Consecutive threads in the same state at the same place, as ranges.
  Simulator& s = sim();
  std::ostringstream out;
  auto label = [&](const Fiber& f) {
    switch (f.state) {
      case State::kDone:
        return std::string("exited");
      case State::kAtBarrier:
        return "at a __syncthreads at " + site(f.where);
      case State::kAtWarpOp:
        return "at a warp collective (mask " + std::to_string(f.mask) + ") at " + site(f.where);
      default:
        return std::string("running");
    }
  };
  int begin = 0;
  for (int i = 1; i <= s.threads; ++i) {
    if (i < s.threads && label(*s.fibers[i]) == label(*s.fibers[begin])) continue;
    out << "\n  threads " << begin << ".." << i - 1 << ": " << label(*s.fibers[begin]);
    begin = i;
  }
  return out.str();
}

[[noreturn]] void fail_block(const std::string& why) {
  Simulator& s = sim();
  const std::string where = s.kernel->name + " block (" + std::to_string(blockIdx.x) + ", " +
                            std::to_string(blockIdx.y) + ", " + std::to_string(blockIdx.z) + ")";
  const std::string threads = describe_threads();
  // The suspended fibers are abandoned: their frames' redzones must not outlive them.
#ifdef CUDA_SIM_ASAN
  for (int i = 0; i < s.threads; ++i) __asan_unpoison_memory_region(s.fibers[i]->stack, kStackBytes);
#endif
  std::free(s.smem);
  s.smem = nullptr;
  TORCH_CHECK(false, "cuda_sim: ", where, ": ", why, threads);
}

// ---- warp collectives -----------------------------------------------------------------------
bool is_vote(WarpOp op) {
  return op == WarpOp::kBallot || op == WarpOp::kAny || op == WarpOp::kAll || op == WarpOp::kSync;
}

// Whether every lane named in the mask of the collective lane `lane` (of the warp starting at
// thread w0) waits at, is there; if not, and `why` is given, the reason.
bool collective_complete(int w0, int lane, std::string* why = nullptr) {
  Simulator& s = sim();
  const Fiber& first = *s.fibers[w0 + lane];
  const int lanes = std::min(warpSize, s.threads - w0);
  auto fail = [&](const std::string& reason) {
    if (why) *why = reason + " at " + site(first.where);
    return false;
  };
  if (!(first.mask >> lane & 1u)) return fail("lane " + std::to_string(lane) + " is not in its own mask");
  if (lanes < warpSize && (first.mask >> lanes) != 0) {
    return fail("the mask names lanes past the end of the block's last warp");
  }
  for (int m = 0; m < lanes; ++m) {
    const Fiber& f = *s.fibers[w0 + m];
    if (!(first.mask >> m & 1u)) continue;
    if (f.state != State::kAtWarpOp || f.mask != first.mask || f.op != first.op ||
        !same_site(f.where, first.where)) {
      return fail("lane " + std::to_string(m) + " of warp " + std::to_string(w0 / warpSize) +
                  " is not at the warp collective");
    }
  }
  return true;
}

// Exchanges the values of the lanes of one complete collective and makes them ready.
void complete(int w0, unsigned mask) {
  Simulator& s = sim();
  const int lanes = std::min(warpSize, s.threads - w0);
  const Fiber& first = *s.fibers[w0 + __builtin_ctz(mask)];
  const int width = first.width;
  if (width <= 0 || width > warpSize || (width & (width - 1)) != 0) {
    fail_block("shuffle width " + std::to_string(width) + " is not a power of 2 up to 32 at " +
               site(first.where));
  }
  unsigned ballot = 0;
  for (int m = 0; m < lanes; ++m) {
    if ((mask >> m & 1u) && s.fibers[w0 + m]->pred) ballot |= 1u << m;
  }
  for (int m = 0; m < lanes; ++m) {
    if (!(mask >> m & 1u)) continue;
    Fiber& f = *s.fibers[w0 + m];
    if (is_vote(f.op)) {
      const unsigned r = f.op == WarpOp::kBallot ? ballot
                         : f.op == WarpOp::kAny  ? unsigned(ballot != 0)
                         : f.op == WarpOp::kAll  ? unsigned(ballot == mask)
                                                 : 0u;
      std::memcpy(f.result, &r, sizeof(r));
      continue;
    }
    const int seg = m / width * width;
    int src = m;
    if (f.op == WarpOp::kShflIdx) {
      src = seg + ((f.arg % width) + width) % width;
    } else if (f.op == WarpOp::kShflUp) {
      src = m - f.arg >= seg ? m - f.arg : m;
    } else if (f.op == WarpOp::kShflDown) {
      src = m + f.arg < seg + width ? m + f.arg : m;
    } else {  // kShflXor
      const int x = m ^ f.arg;
      src = (x >= seg && x < seg + width) ? x : m;
    }
    if (src >= lanes || !(mask >> src & 1u)) {
      fail_block("lane " + std::to_string(m) + " reads lane " + std::to_string(src) +
                 ", which is not in the mask, at " + site(f.where));
    }
    std::memcpy(f.result, s.fibers[w0 + src]->value, f.bytes);
  }
  for (int m = 0; m < lanes; ++m) {
    if (mask >> m & 1u) s.fibers[w0 + m]->state = State::kReady;
  }
}

// Completes every collective whose lanes have all arrived; returns whether any did.
bool complete_warp_collectives() {
  Simulator& s = sim();
  bool progressed = false;
  for (int w0 = 0; w0 < s.threads; w0 += warpSize) {
    const int lanes = std::min(warpSize, s.threads - w0);
    for (int l = 0; l < lanes; ++l) {
      const Fiber& f = *s.fibers[w0 + l];
      if (f.state != State::kAtWarpOp || !collective_complete(w0, l)) continue;
      complete(w0, f.mask);
      progressed = true;
    }
  }
  return progressed;
}

// No thread can move: names the first collective left waiting, and why.
[[noreturn]] void fail_warp_collective() {
  Simulator& s = sim();
  for (int i = 0; i < s.threads; ++i) {
    if (s.fibers[i]->state == State::kAtWarpOp) {
      const int w0 = i / warpSize * warpSize;
      std::string why;
      collective_complete(w0, i - w0, &why);
      fail_block("a warp collective cannot complete: " + why);
    }
  }
  fail_block("a warp collective cannot complete");
}

// ---- blocks ---------------------------------------------------------------------------------
void run_block() {
  Simulator& s = sim();
  for (int i = 0; i < s.threads; ++i) start_fiber(i);
  const bool reverse = s.settings.order == Order::kReverse;
  while (true) {
    for (int k = 0; k < s.threads; ++k) {
      Fiber& f = *s.fibers[reverse ? s.threads - 1 - k : k];
      if (f.state == State::kReady) resume(f);
    }
    if (complete_warp_collectives()) continue;
    int done = 0, at_barrier = 0;
    for (int i = 0; i < s.threads; ++i) {
      done += s.fibers[i]->state == State::kDone;
      at_barrier += s.fibers[i]->state == State::kAtBarrier;
    }
    if (done == s.threads) return;
    if (at_barrier + done < s.threads) fail_warp_collective();
    if (done > 0) fail_block("threads wait at a __syncthreads that exited threads never reach");
    const Fiber& first = *s.fibers[0];
    int count = 0;
    for (int i = 0; i < s.threads; ++i) {
      const Fiber& f = *s.fibers[i];
      if (!same_site(f.where, first.where) || f.barrier != first.barrier) {
        fail_block("threads wait at different __syncthreads");
      }
      count += f.pred != 0;
    }
    const int result = first.barrier == BarrierKind::kAnd    ? count == s.threads
                       : first.barrier == BarrierKind::kOr    ? count > 0
                       : first.barrier == BarrierKind::kCount ? count
                                                              : 0;
    for (int i = 0; i < s.threads; ++i) {
      s.fibers[i]->barrier_result = result;
      s.fibers[i]->state = State::kReady;
    }
  }
}

}  // namespace

// ---- device-side entry points -----------------------------------------------------------------
int block_barrier(BarrierKind kind, int pred, Where where) {
  Fiber& f = current("__syncthreads");
  f.state = State::kAtBarrier;
  f.barrier = kind;
  f.pred = pred;
  f.where = where;
  switch_to_scheduler(f, false);
  return f.barrier_result;
}

void warp_collective(WarpOp op, unsigned mask, const void* value, size_t bytes, int arg,
                     int width, void* result, Where where) {
  Fiber& f = current("a warp collective");
  f.state = State::kAtWarpOp;
  f.op = op;
  f.mask = mask;
  f.arg = arg;
  f.width = width;
  f.bytes = bytes;
  f.where = where;
  std::memcpy(f.value, value, bytes);
  f.pred = (op == WarpOp::kBallot || op == WarpOp::kAny || op == WarpOp::kAll)
               ? *static_cast<const int*>(value)
               : 0;
  switch_to_scheduler(f, false);
  std::memcpy(result, f.result, is_vote(op) ? sizeof(unsigned) : bytes);
}

void* dynamic_shared_memory() {
  current("dynamic shared memory");
  return sim().smem;
}

// ---- host-side entry points -------------------------------------------------------------------
KernelRecord* register_kernel(std::string name) {
  auto& r = registry();
  auto it = r.find(name);
  if (it == r.end()) {
    auto rec = std::make_unique<KernelRecord>();
    rec->name = name;
    it = r.emplace(name, std::move(rec)).first;
  }
  return it->second.get();
}

int set_max_dynamic_smem(const void* kernel_id, int bytes) {
  if (bytes < 0 || static_cast<size_t>(bytes) > kSharedMemPerBlockOptin) return -1;
  sim().max_dynamic_smem[kernel_id] = bytes;
  return 0;
}

void run_grid(KernelRecord& kernel, const void* kernel_id, unsigned max_threads, dim3 grid,
              dim3 block, size_t smem, void (*body)(void*), void* ctx) {
  Simulator& s = sim();
  TORCH_CHECK(s.running == nullptr, "cuda_sim: ", kernel.name, " launched from a kernel");
  // What the CUDA runtime rejects at launch (cudaErrorInvalidConfiguration and friends).
  const uint64_t threads = uint64_t{block.x} * block.y * block.z;
  TORCH_CHECK(grid.x >= 1 && grid.x <= 0x7fffffffu && grid.y >= 1 && grid.y <= 65535 &&
                  grid.z >= 1 && grid.z <= 65535,
              "cuda_sim: ", kernel.name, ": invalid grid (", grid.x, ", ", grid.y, ", ", grid.z,
              ")");
  TORCH_CHECK(threads >= 1 && threads <= std::min(1024u, max_threads) && block.x <= 1024 &&
                  block.y <= 1024 && block.z <= 64,
              "cuda_sim: ", kernel.name, ": invalid block (", block.x, ", ", block.y, ", ",
              block.z, ") for a kernel of at most ", max_threads, " threads");
  auto opt_in = s.max_dynamic_smem.find(kernel_id);
  const size_t smem_limit = opt_in == s.max_dynamic_smem.end()
                                ? kSharedMemPerBlock
                                : std::max(kSharedMemPerBlock, size_t(opt_in->second));
  TORCH_CHECK(smem <= smem_limit, "cuda_sim: ", kernel.name, ": ", smem,
              " bytes of dynamic shared memory, the kernel may use ", smem_limit);
  ++kernel.launches;

  s.kernel = &kernel;
  s.threads = static_cast<int>(threads);
  s.body = body;
  s.ctx = ctx;
  gridDim = grid;
  blockDim = block;
  const uint64_t blocks = uint64_t{grid.x} * grid.y * grid.z;
  for (uint64_t k = 0; k < blocks; ++k) {
    const uint64_t b = s.settings.order == Order::kReverse ? blocks - 1 - k : k;
    blockIdx = {static_cast<unsigned>(b % grid.x), static_cast<unsigned>(b / grid.x % grid.y),
                static_cast<unsigned>(b / (uint64_t{grid.x} * grid.y))};
    // Exactly the launch's size (a read past it is a heap overflow for ASan), poisoned.
    s.smem = std::malloc(smem);
    TORCH_CHECK(smem == 0 || s.smem != nullptr, "cuda_sim: out of memory for shared memory");
    std::memset(s.smem, s.settings.shared_poison, smem);
    run_block();
    std::free(s.smem);
    s.smem = nullptr;
  }
}

void configure(const Settings& settings) { sim().settings = settings; }
Settings settings() { return sim().settings; }

std::vector<std::pair<std::string, int64_t>> kernel_launches() {
  std::vector<std::pair<std::string, int64_t>> out;
  for (const auto& [name, rec] : registry()) out.emplace_back(name, rec->launches);
  return out;
}

void reset_launch_counts() {
  for (auto& [name, rec] : registry()) rec->launches = 0;
}

}  // namespace cuda_sim

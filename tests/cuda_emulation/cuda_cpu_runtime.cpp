// The scheduler behind cuda_cpu_shim.h: blocks on worker threads, CUDA threads as fibers, barriers, shuffles.
#include "cuda_cpu_shim.h"

#include <ucontext.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace cuda_emu {
namespace {

constexpr std::size_t kStackBytes = 256 * 1024;  // pages are touched only as far as a kernel's frames reach
constexpr unsigned int kWarp = 32;

enum class State { kReady, kBlockWait, kWarpWait, kDone };

struct Fiber {
  ucontext_t context;
  std::unique_ptr<char[]> stack;
  State state = State::kReady;
  std::uint64_t wait_generation = 0;
};

// One block in flight on one worker thread.
struct Block {
  ucontext_t scheduler;
  std::vector<Fiber> fibers;
  unsigned int threads = 0;
  unsigned int current = 0;
  std::uint64_t block_generation = 0;
  unsigned int block_arrived = 0;
  std::vector<std::uint64_t> warp_generation;
  std::vector<unsigned int> warp_arrived;
  std::vector<unsigned char> slots;  // shuffle exchange: 8 bytes per thread
  const std::function<void()>* body = nullptr;
  const char* error = nullptr;
};

// Schedule knobs (emu_set_schedule) and the sticky launch error (cudaGetLastError).
std::atomic<int> g_workers{2};
std::atomic<int> g_policy{0};  // 0 lanes round-robin up, 1 round-robin down, 2 warps run ahead (highest first)
std::atomic<bool> g_reverse_blocks{false};
std::atomic<std::uint64_t> g_vector_accesses{0};
std::mutex g_error_mutex;
cudaError_t g_last_error = cudaSuccess;
std::string g_last_message;

thread_local Block* tl_block = nullptr;

void set_thread_index(const Block& b, unsigned int linear) {
  threadIdx.x = linear % blockDim.x;
  threadIdx.y = (linear / blockDim.x) % blockDim.y;
  threadIdx.z = linear / (blockDim.x * blockDim.y);
  (void)b;
}

unsigned int warp_size_of(const Block& b, unsigned int warp) { return std::min(kWarp, b.threads - warp * kWarp); }

void fiber_entry() {
  Block& b = *tl_block;
  (*b.body)();
  b.fibers[b.current].state = State::kDone;
  // Returning resumes uc_link, the scheduler.
}

// Parks the running fiber until the scheduler resumes it, then restores its index variables.
void park(State state, std::uint64_t generation) {
  Block& b = *tl_block;
  Fiber& f = b.fibers[b.current];
  f.state = state;
  f.wait_generation = generation;
  swapcontext(&f.context, &b.scheduler);
}

bool runnable(const Block& b, unsigned int i) {
  const Fiber& f = b.fibers[i];
  switch (f.state) {
    case State::kReady:
      return true;
    case State::kBlockWait:
      return b.block_generation != f.wait_generation;
    case State::kWarpWait:
      return b.warp_generation[i / kWarp] != f.wait_generation;
    case State::kDone:
      return false;
  }
  return false;
}

// Runs every fiber of the block to completion; returns the error, or nullptr.
const char* run_block(Block& b) {
  b.block_generation = 0;
  b.block_arrived = 0;
  std::fill(b.warp_generation.begin(), b.warp_generation.end(), 0);
  std::fill(b.warp_arrived.begin(), b.warp_arrived.end(), 0);
  b.error = nullptr;
  for (Fiber& f : b.fibers) {
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = f.stack.get();
    f.context.uc_stack.ss_size = kStackBytes;
    f.context.uc_link = &b.scheduler;
    makecontext(&f.context, fiber_entry, 0);
    f.state = State::kReady;
  }
  const int policy = g_policy.load();
  const unsigned int warps = (b.threads + kWarp - 1) / kWarp;
  unsigned int done = 0;
  // Resumes fiber i if it can run; false when it cannot.
  auto step = [&](unsigned int i) {
    if (!runnable(b, i)) {
      return false;
    }
    b.current = i;
    b.fibers[i].state = State::kReady;
    set_thread_index(b, i);
    swapcontext(&b.scheduler, &b.fibers[i].context);
    done += b.fibers[i].state == State::kDone ? 1 : 0;
    return true;
  };
  while (done < b.threads) {
    bool progressed = false;
    if (policy == 2) {
      // The highest warp that can move runs until it cannot (a block barrier, or the end), then the search
      // restarts from the top: warps race ahead of lower ones into the next phase, as a fast warp can on a GPU.
      for (unsigned int w = warps; w-- > 0 && !progressed && b.error == nullptr;) {
        for (bool moved = true; moved && b.error == nullptr;) {
          moved = false;
          for (unsigned int i = w * kWarp; i < std::min(b.threads, (w + 1) * kWarp) && b.error == nullptr; ++i) {
            moved = step(i) || moved;
          }
          progressed = progressed || moved;
        }
      }
    } else {
      for (unsigned int k = 0; k < b.threads && b.error == nullptr; ++k) {
        progressed = step(policy == 1 ? b.threads - 1 - k : k) || progressed;
      }
    }
    if (b.error != nullptr) {
      return b.error;  // the other fibers are abandoned; their stacks are re-made by the next block
    }
    if (!progressed) {
      return "deadlock: a barrier (__syncthreads or a warp shuffle) was not reached by every thread of its block "
             "or warp";
    }
  }
  return nullptr;
}

void record_error(cudaError_t error, const std::string& message) {
  const std::lock_guard<std::mutex> lock(g_error_mutex);
  if (g_last_error == cudaSuccess) {
    g_last_error = error;
    g_last_message = message;
  }
}

}  // namespace

void block_barrier() {
  Block& b = *tl_block;
  // Every arrival parks, the last one too, so that the scheduling policy decides who passes the barrier first.
  const std::uint64_t generation = b.block_generation;
  if (++b.block_arrived == b.threads) {
    b.block_arrived = 0;
    ++b.block_generation;
  }
  park(State::kBlockWait, generation);
  set_thread_index(b, b.current);
}

void warp_barrier(unsigned int mask) {
  Block& b = *tl_block;
  const unsigned int warp = b.current / kWarp, lanes = warp_size_of(b, warp);
  const unsigned int needed = lanes == kWarp ? 0xffffffffu : (1u << lanes) - 1u;
  if ((mask & needed) != needed) {
    fail("warp operations with a partial mask are not emulated (every lane of the warp must take part)");
  }
  const std::uint64_t generation = b.warp_generation[warp];
  if (++b.warp_arrived[warp] == lanes) {
    b.warp_arrived[warp] = 0;
    ++b.warp_generation[warp];
  }
  park(State::kWarpWait, generation);
  set_thread_index(b, b.current);
}

unsigned int lane_id() { return tl_block->current % kWarp; }

unsigned char* shuffle_slot(unsigned int lane) {
  Block& b = *tl_block;
  const unsigned int index = (b.current / kWarp) * kWarp + lane;
  if (index >= b.threads) {
    fail("shuffle reads a lane past the end of the block");
  }
  return b.slots.data() + 8 * index;
}

void fail(const char* message) {
  Block& b = *tl_block;
  b.error = message;
  swapcontext(&b.fibers[b.current].context, &b.scheduler);
  std::abort();  // never resumed
}

void check_aligned(const void* pointer, std::size_t bytes) {
  if (reinterpret_cast<std::uintptr_t>(pointer) % bytes != 0) {
    fail("misaligned address: a vector access not aligned to its size");
  }
  if (bytes >= 16) {
    g_vector_accesses.fetch_add(1, std::memory_order_relaxed);
  }
}

void run_grid(dim3 grid, dim3 block, std::size_t shmem, const std::function<void()>& body) {
  const std::uint64_t blocks = std::uint64_t(grid.x) * grid.y * grid.z;
  const std::uint64_t threads = std::uint64_t(block.x) * block.y * block.z;
  // The limits of every CUDA device since sm_30: an empty or oversized launch is an error, not a no-op.
  if (blocks == 0 || threads == 0 || threads > 1024 || block.z > 64 || grid.y > 65535 || grid.z > 65535 ||
      grid.x > 2147483647u) {
    record_error(cudaErrorInvalidConfiguration, "invalid launch configuration (empty grid or block, or too large)");
    return;
  }
  if (shmem != 0) {
    record_error(cudaErrorInvalidValue, "dynamic shared memory is not emulated");
    return;
  }
  const bool reverse = g_reverse_blocks.load();
  std::atomic<std::uint64_t> next{0};
  auto worker = [&] {
    Block b;
    b.threads = static_cast<unsigned int>(threads);
    b.fibers.resize(b.threads);
    for (Fiber& f : b.fibers) {
      f.stack.reset(new char[kStackBytes]);
    }
    const unsigned int warps = (b.threads + kWarp - 1) / kWarp;
    b.warp_generation.resize(warps);
    b.warp_arrived.resize(warps);
    b.slots.resize(8 * std::size_t(warps) * kWarp);
    b.body = &body;
    tl_block = &b;
    blockDim = block;
    gridDim = grid;
    for (std::uint64_t k = next++; k < blocks; k = next++) {
      const std::uint64_t linear = reverse ? blocks - 1 - k : k;
      blockIdx.x = static_cast<unsigned int>(linear % grid.x);
      blockIdx.y = static_cast<unsigned int>((linear / grid.x) % grid.y);
      blockIdx.z = static_cast<unsigned int>(linear / (std::uint64_t(grid.x) * grid.y));
      if (const char* error = run_block(b)) {
        record_error(cudaErrorLaunchFailure, error);
        break;
      }
    }
    tl_block = nullptr;
  };
  const int workers = static_cast<int>(std::min<std::uint64_t>(std::max(1, g_workers.load()), blocks));
  std::vector<std::thread> pool;
  for (int w = 1; w < workers; ++w) {
    pool.emplace_back(worker);
  }
  worker();
  for (std::thread& t : pool) {
    t.join();
  }
}

cudaError_t take_last_error() {
  const std::lock_guard<std::mutex> lock(g_error_mutex);
  const cudaError_t error = g_last_error;
  g_last_error = cudaSuccess;
  return error;
}

void set_last_error(cudaError_t error) { record_error(error, "set by the caller"); }

// ---- 16-bit floats, bit-exact with CUDA's round-to-nearest-even conversions ----
std::uint16_t float_to_half_bits(float value) {
  std::uint32_t x;
  std::memcpy(&x, &value, 4);
  const std::uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) {
    return static_cast<std::uint16_t>(sign | (ax > 0x7f800000u ? 0x7e00u : 0x7c00u));
  }
  if (ax >= 0x477ff000u) {  // >= 65520: rounds to infinity
    return static_cast<std::uint16_t>(sign | 0x7c00u);
  }
  if (ax < 0x38800000u) {  // below 2^-14: a half subnormal; scaling by 2^24 is exact, rint rounds to even
    float magnitude;
    std::memcpy(&magnitude, &ax, 4);
    return static_cast<std::uint16_t>(sign | static_cast<std::uint32_t>(std::nearbyint(magnitude * 16777216.0f)));
  }
  std::uint32_t h = ((((ax >> 23) - 127u + 15u)) << 10) | ((ax & 0x7fffffu) >> 13);
  const std::uint32_t rest = ax & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) {
    ++h;  // a carry into the exponent is the correct result
  }
  return static_cast<std::uint16_t>(sign | h);
}

float half_bits_to_float(std::uint16_t bits) {
  const std::uint32_t sign = std::uint32_t(bits & 0x8000u) << 16, exponent = (bits >> 10) & 0x1fu,
                      mantissa = bits & 0x3ffu;
  float magnitude;
  if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa), -24);
  } else if (exponent == 31) {
    magnitude = mantissa ? NAN : INFINITY;
  } else {
    magnitude = std::ldexp(static_cast<float>(mantissa | 0x400u), static_cast<int>(exponent) - 25);
  }
  std::uint32_t x;
  std::memcpy(&x, &magnitude, 4);
  x |= sign;
  std::memcpy(&magnitude, &x, 4);
  return magnitude;
}

std::uint16_t float_to_bfloat16_bits(float value) {
  std::uint32_t x;
  std::memcpy(&x, &value, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) {
    return static_cast<std::uint16_t>((x >> 16) | 0x40u);  // quiet NaN, sign kept
  }
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<std::uint16_t>(x >> 16);
}

float bfloat16_bits_to_float(std::uint16_t bits) {
  const std::uint32_t x = std::uint32_t(bits) << 16;
  float value;
  std::memcpy(&value, &x, 4);
  return value;
}

}  // namespace cuda_emu

// ---- C entry points for the Python harness ----
extern "C" {

// workers: host threads running blocks; policy: the order fibers run in (see g_policy); reverse_blocks: the
// blocks in descending order.
void emu_set_schedule(int workers, int policy, int reverse_blocks) {
  cuda_emu::g_workers = workers;
  cuda_emu::g_policy = policy;
  cuda_emu::g_reverse_blocks = reverse_blocks != 0;
}

// The message of the last failed launch ("" when none); cleared by the next launcher status read.
const char* emu_last_message() { return cuda_emu::g_last_message.c_str(); }

// 16-byte-or-wider accesses since the last call (then reset): whether a launch took its vector path.
std::uint64_t emu_vector_accesses() { return cuda_emu::g_vector_accesses.exchange(0); }

void emu_clear_error() {
  const std::lock_guard<std::mutex> lock(cuda_emu::g_error_mutex);
  cuda_emu::g_last_error = cudaSuccess;
  cuda_emu::g_last_message.clear();
}

void emu_float_to_half(const float* in, std::uint16_t* out, std::int64_t n, int bfloat16) {
  for (std::int64_t i = 0; i < n; ++i) {
    out[i] = bfloat16 ? cuda_emu::float_to_bfloat16_bits(in[i]) : cuda_emu::float_to_half_bits(in[i]);
  }
}

}  // extern "C"

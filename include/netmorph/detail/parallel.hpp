#ifndef NETMORPH_DETAIL_PARALLEL_HPP
#define NETMORPH_DETAIL_PARALLEL_HPP

/// \file parallel.hpp
/// How netmorph uses threads, in one place. netmorph never forces compiler flags: these helpers
/// use OpenMP when the consumer compiles with it and run everything on the calling thread
/// otherwise. Inside an enclosing parallel region they report one thread, so the kernels'
/// per-thread scratch is always sized for the team that uses it.

#include <netmorph/tensor.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace netmorph {
namespace detail {

/// Number of OpenMP threads the kernels' parallel regions use (1 without OpenMP, and inside an
/// enclosing parallel region); the regions pass it as `num_threads`, so the per-thread scratch
/// slots reserved for it suffice even when the consumer enables nested parallelism.
inline index_type max_threads() {
#if defined(_OPENMP)
  return omp_in_parallel() ? 1 : std::max(1, omp_get_max_threads());
#else
  return 1;
#endif
}

/// This thread's number inside a parallel region (0 without OpenMP).
inline index_type thread_num() {
#if defined(_OPENMP)
  return omp_get_thread_num();
#else
  return 0;
#endif
}

/// Threads the factor solver may use: Eigen's thread count (the consumer's OpenMP setting), 1
/// without OpenMP or inside an enclosing parallel region.
inline int solver_threads() {
#if defined(_OPENMP)
  return omp_in_parallel() ? 1 : std::max(1, Eigen::nbThreads());
#else
  return 1;
#endif
}

/// Carries the first exception thrown inside an OpenMP parallel region out of it. An exception
/// must not cross the boundary of a region (the program would terminate), so every thread runs
/// its work through `run`, which catches, and the calling thread calls `rethrow` once the region
/// has ended. Work that starts after a failure is skipped. Without OpenMP it costs a flag test.
class exception_trap {
 public:
  template <typename Fn>
  void run(Fn&& fn) noexcept {
    if (failed_.load(std::memory_order_relaxed)) return;
    try {
      fn();
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_) error_ = std::current_exception();
      failed_.store(true, std::memory_order_relaxed);
    }
  }
  /// Rethrows the first exception caught, if any.
  void rethrow() const {
    if (error_) std::rethrow_exception(error_);
  }

 private:
  std::atomic<bool> failed_{false};
  std::mutex mutex_;
  std::exception_ptr error_;
};

/// Calls `fn(first, count)` on contiguous blocks of `[0, n)`, one block per solver thread and
/// none smaller than `min_block`. For the kernels Eigen does not parallelise itself (triangular
/// solves, symmetric rank updates).
template <typename Fn>
void for_blocks(index_type n, index_type min_block, Fn&& fn) {
  const int t = int(std::min<index_type>(solver_threads(), std::max<index_type>(1, n / min_block)));
  if (t <= 1) {
    fn(index_type{0}, n);
    return;
  }
  exception_trap trap;
#if defined(_OPENMP)
#pragma omp parallel for num_threads(t) schedule(static, 1)
#endif
  for (int j = 0; j < t; ++j) {
    const index_type b0 = n * j / t, b1 = n * (j + 1) / t;
    trap.run([&] { fn(b0, b1 - b0); });
  }
  trap.rethrow();
}

/// Calls `fn(first, count)` on chunks of `chunk` values of `[0, n)` (the last one shorter),
/// spread over the threads when the consumer enables OpenMP. For elementwise layers.
template <typename Fn>
void for_chunks(index_type n, index_type chunk, Fn&& fn) {
  const index_type chunks = (n + chunk - 1) / chunk;
  exception_trap trap;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) num_threads(int(max_threads())) if (chunks > 1)
#endif
  for (index_type c = 0; c < chunks; ++c)
    trap.run([&] { fn(c * chunk, std::min(chunk, n - c * chunk)); });
  trap.rethrow();
}

}  // namespace detail
}  // namespace netmorph

#endif  // NETMORPH_DETAIL_PARALLEL_HPP

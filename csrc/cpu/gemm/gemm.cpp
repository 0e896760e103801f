// GEMM driver, Goto/BLIS style. Each thread owns a rectangle of C (no shared writes) and runs
//   for jc (nc columns: B block in L2) / pc (kc deep) -> pack op(B) block
//     for ic (mc rows) -> pack op(A) block
//       for each mr-row A sliver (stays in L1) / for each nr-column B sliver -> micro-kernel
// Two operands may be read in place instead of packed: op(B) = B when the rows are few
// (direct_b), op(A) = A when the columns are few (gemm_region_direct_a).
// K is swept in one fixed order and every C element is one FMA chain (microkernel.h), so the
// result is deterministic and independent of the thread count.
#include "gemm.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include "microkernel.h"
#include "pack.h"

#ifndef CNNEXT_DIRECT_A_SLIVERS
#define CNNEXT_DIRECT_A_SLIVERS 8
#endif

namespace cnnext::cpu {
namespace {

// Fewer multiply-adds than this per thread do not pay for waking another thread.
constexpr int64_t kMinWorkPerThread = int64_t(1) << 18;

using gemm_detail::KernelSet;

// Per-thread packing buffers, reused across calls: fresh pages cost ~1.2 us each to fault in
// on this VM, more than packing them.
class ThreadBuffer {
 public:
  ~ThreadBuffer() { std::free(data_); }
  void* get(size_t bytes) {
    if (bytes > capacity_) {
      std::free(data_);
      capacity_ = (bytes + 4095) & ~size_t(4095);
      data_ = std::aligned_alloc(64, capacity_);
      if (data_ == nullptr) {
        capacity_ = 0;
        throw std::bad_alloc();
      }
    }
    return data_;
  }

 private:
  void* data_ = nullptr;
  size_t capacity_ = 0;
};

// Whether op(A) may be read in place (CNNEXT_GEMM_DIRECT_A, read per call; see gemm.h).
enum class DirectA { Auto, Never, Always };

DirectA direct_a_mode() {
  const char* v = std::getenv("CNNEXT_GEMM_DIRECT_A");
  if (v == nullptr || *v == '\0' || std::strcmp(v, "auto") == 0) return DirectA::Auto;
  if (std::strcmp(v, "0") == 0) return DirectA::Never;
  if (std::strcmp(v, "1") == 0) return DirectA::Always;
  TORCH_CHECK(false, "cnnext: CNNEXT_GEMM_DIRECT_A must be 0, 1 or auto, got '", v, "'");
}

template <typename T>
struct Problem {
  bool trans_a, trans_b;
  int64_t M, N, K;
  T alpha;
  const T* A;
  int64_t lda;
  const T* B;
  int64_t ldb;
  T beta;
  T* C;
  int64_t ldc;
  DirectA direct_a;
};

// Up to this many A slivers (rows / mr), op(B) is read in place when not transposed: each B
// element then meets few A slivers, and packing B would cost a large share of the FMAs
// (conv forward: M = C_out is often 6..64).
constexpr int64_t kDirectBMaxSlivers = 5;

// Up to this many B slivers (columns / nr), op(A) is read in place when not transposed: each A
// element then feeds few multiply-adds, and packing A would cost a large share of them (NHWC
// 1x1 convs: M = pixels, N = output channels, often 24..64).
constexpr int64_t kDirectAMaxSlivers = CNNEXT_DIRECT_A_SLIVERS;

// An A region larger than this (L2) comes from memory: the direct path then prefetches the
// next sliver's rows while it computes one (measured 1.05-1.2x at M = 25088; on cache-hot
// task-sized regions, 0.9-1.0x, so those go without).
constexpr int64_t kDirectAPrefetchBytes = int64_t(1) << 20;

// L1 has 64 sets of 64-byte lines (4 KiB apart, 8 ways): rows a multiple of 4 KiB apart all
// fall into one set, and the mr rows a kernel reads at once evict each other (lda = 1024 or
// 2048 floats measured 0.8x the packed path). Those keep the packed path.
constexpr int64_t kL1SetSpanBytes = 4096;

// One packing buffer for op(B) per thread, shared by both region paths.
ThreadBuffer& thread_b_buffer() {
  thread_local ThreadBuffer b_buffer;
  return b_buffer;
}

// Packs the kc x nc block of op(B) at (pc, jc) into nr-column slivers (zero-padded).
template <typename T>
void pack_b_block(const KernelSet<T>& ks, const Problem<T>& p, int64_t pc, int64_t jc, int64_t kc,
                  int64_t nc, T* b_pack) {
  const int64_t slivers_n = (nc + ks.nr - 1) / ks.nr;
  if (p.trans_b && ks.pack_b_cols != nullptr)
    ks.pack_b_cols(p.B + jc * p.ldb + pc, p.ldb, kc, nc, b_pack);
  else
    gemm_detail::pack_b(p.trans_b, p.B, p.ldb, pc, jc, kc, nc, ks.nr, 0, slivers_n, b_pack);
}

// Where direct_b also applies (few rows), it stays: B is then the large operand.
template <typename T>
bool use_direct_a(const KernelSet<T>& ks, const Problem<T>& p, int64_t n0, int64_t n1,
                  bool direct_b) {
  if (p.trans_a || p.direct_a == DirectA::Never) return false;
  if (p.direct_a == DirectA::Always) return true;
  return !direct_b && (n1 - n0) <= kDirectAMaxSlivers * ks.nr &&
         (p.lda * int64_t(sizeof(T))) % kL1SetSpanBytes != 0;
}

// C[m0:m1, n0:n1] with op(A) = A read in place: for each nc-column / kc-deep block of op(B)
// (packed), each mr-row A sliver is read from memory once, by the first B sliver's kernel, and
// from L1 by the rest.
template <typename T>
void gemm_region_direct_a(const KernelSet<T>& ks, const Problem<T>& p, int64_t m0, int64_t m1,
                          int64_t n0, int64_t n1) {
  const int mr = ks.mr, nr = ks.nr;
  const int64_t KC = std::min(ks.kc, p.K);
  const int64_t NC = std::min(std::max<int64_t>(nr, ks.nc / nr * nr), (n1 - n0 + nr - 1) / nr * nr);
  const bool prefetch_next = (m1 - m0) * p.K * int64_t(sizeof(T)) > kDirectAPrefetchBytes;
  T* b_pack = static_cast<T*>(thread_b_buffer().get(sizeof(T) * NC * KC));
  for (int64_t jc = n0; jc < n1; jc += NC) {
    const int64_t nc = std::min(NC, n1 - jc);
    const int64_t slivers_n = (nc + nr - 1) / nr;
    for (int64_t pc = 0; pc < p.K; pc += KC) {
      const int64_t kc = std::min(KC, p.K - pc);
      const T beta = pc == 0 ? p.beta : T(1);  // later K blocks accumulate onto the first
      pack_b_block(ks, p, pc, jc, kc, nc, b_pack);
      for (int64_t is = m0; is < m1; is += mr) {
        const auto kernel = ks.direct_a_rows[std::min<int64_t>(mr, m1 - is)];
        const T* a_sliver = p.A + is * p.lda + pc;
        T* c_row = p.C + is * p.ldc + jc;
        if (prefetch_next && is + mr < m1) {
          const int64_t next_rows = std::min<int64_t>(mr, m1 - is - mr);
          for (int64_t r = 0; r < next_rows; ++r)
            for (int64_t e = 0; e < kc; e += 64 / int64_t(sizeof(T)))
              __builtin_prefetch(a_sliver + (mr + r) * p.lda + e, 0, 2);  // into L2
        }
        for (int64_t js = 0; js < slivers_n; ++js)
          kernel(kc, a_sliver, p.lda, b_pack + js * kc * nr, nr, c_row + js * nr, p.ldc, p.alpha,
                 beta, nc - js * nr);
      }
    }
  }
}

// C[m0:m1, n0:n1] on the calling thread.
template <typename T>
void gemm_region(const KernelSet<T>& ks, const Problem<T>& p, int64_t m0, int64_t m1,
                 int64_t n0, int64_t n1) {
  const int mr = ks.mr, nr = ks.nr;
  const int64_t KC = std::min(ks.kc, p.K);
  // Whole slivers per block: the packing buffers hold exactly NC x KC and MC x KC.
  const int64_t NC = std::min(std::max<int64_t>(nr, ks.nc / nr * nr), (n1 - n0 + nr - 1) / nr * nr);
  const int64_t MC = std::min(std::max<int64_t>(mr, ks.mc / mr * mr), (m1 - m0 + mr - 1) / mr * mr);
  const bool direct_b = !p.trans_b && (m1 - m0) <= kDirectBMaxSlivers * mr;
  if (use_direct_a(ks, p, n0, n1, direct_b)) {
    gemm_region_direct_a(ks, p, m0, m1, n0, n1);
    return;
  }

  thread_local ThreadBuffer a_buffer;
  T* a_pack = static_cast<T*>(a_buffer.get(sizeof(T) * MC * KC));
  T* b_pack = static_cast<T*>(thread_b_buffer().get(sizeof(T) * NC * KC));

  for (int64_t jc = n0; jc < n1; jc += NC) {
    const int64_t nc = std::min(NC, n1 - jc);
    const int64_t slivers_n = (nc + nr - 1) / nr;
    const int64_t full_n = nc / nr;
    for (int64_t pc = 0; pc < p.K; pc += KC) {
      const int64_t kc = std::min(KC, p.K - pc);
      const T beta = pc == 0 ? p.beta : T(1);  // later K blocks accumulate onto the first
      if (direct_b)  // only a partial last sliver needs a zero-padded copy
        gemm_detail::pack_b(false, p.B, p.ldb, pc, jc, kc, nc, nr, full_n, slivers_n, b_pack);
      else
        pack_b_block(ks, p, pc, jc, kc, nc, b_pack);
      for (int64_t ic = m0; ic < m1; ic += MC) {
        const int64_t mc = std::min(MC, m1 - ic);
        gemm_detail::pack_a_with(ks, p.trans_a, p.A, p.lda, ic, pc, mc, kc, a_pack);
        T* c_block = p.C + ic * p.ldc + jc;
        if (direct_b) {
          // B read in place: keep each B sliver hot while every A sliver passes over it.
          for (int64_t js = 0; js < slivers_n; ++js) {
            const bool in_place = js < full_n;
            const T* b_sliver = in_place ? p.B + pc * p.ldb + jc + js * nr : b_pack + js * kc * nr;
            const int64_t ldb = in_place ? p.ldb : nr;
            for (int64_t is = 0; is < mc; is += mr)
              ks.rows[std::min<int64_t>(mr, mc - is)](kc, a_pack + is * kc, b_sliver, ldb,
                                                      c_block + is * p.ldc + js * nr, p.ldc,
                                                      p.alpha, beta, nc - js * nr);
          }
        } else {
          // Packed B block (L2): each A sliver stays in L1 while the B slivers stream past.
          for (int64_t is = 0; is < mc; is += mr) {
            const auto kernel = ks.rows[std::min<int64_t>(mr, mc - is)];
            for (int64_t js = 0; js < slivers_n; ++js)
              kernel(kc, a_pack + is * kc, b_pack + js * kc * nr, nr,
                     c_block + is * p.ldc + js * nr, p.ldc, p.alpha, beta, nc - js * nr);
          }
        }
      }
    }
  }
}

// op(A) * op(B)^T-shaped problems with few rows and columns (conv grad_weight: C_out x
// C_in*kh*kw over many pixels): dot products straight from the operands, parallel over tiles.
// Each dot tile ends in horizontal sums, paid back only over a long reduction: with 16
// columns and K = 64 it ran 70 GFLOP/s where the packed path (half a micro-tile wide) ran
// 200-220; even near K = 144, ahead from K = 576 (AVX-512, 2 threads).
constexpr int64_t kDotMinK = 256;
// A thin product (a squeeze-excite 1x1 conv on a 1x1 map: M = batch, N = C_out) makes the
// packed path copy the whole wide operand to fill a fraction of each micro-tile; the dot tiles
// read it once, whatever K. Measured on AVX2 (Zen 3, 2 threads), dot vs packed GFLOP/s:
// 1x960x240 8.8 vs 2.4, 8x960x240 40 vs 23, 16x960x240 51 vs 36, 8x144x64 9.0 vs 7.4;
// but 16x64x64 7.5 vs 10.4, hence a wide side of at least kDotThinWide.
constexpr int64_t kDotThinSide = 16, kDotThinWide = 128;

template <typename T>
bool use_dot_path(const KernelSet<T>& ks, const Problem<T>& p) {
  const bool thin = std::min(p.M, p.N) <= kDotThinSide && std::max(p.M, p.N) >= kDotThinWide;
  return ks.dot != nullptr && !p.trans_a && p.trans_b && (p.K >= kDotMinK || thin) &&
         p.M * p.N <= 16 * (p.M + p.N);
}

template <typename T>
void gemm_dot(const KernelSet<T>& ks, const Problem<T>& p) {
  constexpr int64_t D = gemm_detail::kDotTile;
  const int64_t tiles_m = (p.M + D - 1) / D, tiles_n = (p.N + D - 1) / D;
  const int64_t grain = std::max<int64_t>(1, kMinWorkPerThread / (D * D * p.K));
  auto run = [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t i = (t / tiles_n) * D, j = (t % tiles_n) * D;
      ks.dot(p.K, p.A + i * p.lda, p.lda, p.B + j * p.ldb, p.ldb, p.C + i * p.ldc + j, p.ldc,
             p.alpha, p.beta, std::min(D, p.M - i), std::min(D, p.N - j));
    }
  };
  if (at::in_parallel_region())
    run(0, tiles_m * tiles_n);
  else
    at::parallel_for(0, tiles_m * tiles_n, grain, run);
}

// Splits C into tm x tn rectangles (tm * tn <= threads) on sliver boundaries: balance the
// micro-tiles per thread first, then prefer less packing per thread.
struct Split {
  int64_t tm = 1, tn = 1;
};

// A transposing pack (op(A) = A, op(B) = B^T: a strided gather per element) costs several
// times a row copy; a_cost / b_cost weigh the two packs accordingly.
Split choose_split(int64_t threads, int64_t slivers_m, int64_t slivers_n, int mr, int nr,
                   int64_t a_cost, int64_t b_cost) {
  Split best;
  int64_t best_tiles = slivers_m * slivers_n;
  int64_t best_pack = slivers_m * mr * a_cost + slivers_n * nr * b_cost;
  for (int64_t tm = 1; tm <= threads; ++tm) {
    if (threads % tm != 0) continue;
    const int64_t tn = threads / tm;
    if (tm > slivers_m || tn > slivers_n) continue;
    const int64_t per_m = (slivers_m + tm - 1) / tm, per_n = (slivers_n + tn - 1) / tn;
    const int64_t tiles = per_m * per_n, pack = per_m * mr * a_cost + per_n * nr * b_cost;
    // Within a few percent, micro-tiles are worth less than the packing they save.
    if (tiles * 32 < best_tiles * 31 || (tiles * 31 <= best_tiles * 32 && pack < best_pack)) {
      best = {tm, tn};
      best_tiles = tiles;
      best_pack = pack;
    }
  }
  return best;
}

template <typename T>
void gemm_packed(const KernelSet<T>& ks, const Problem<T>& p) {
  const int64_t slivers_m = (p.M + ks.mr - 1) / ks.mr;
  const int64_t slivers_n = (p.N + ks.nr - 1) / ks.nr;
  int64_t threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  threads = std::max<int64_t>(1, std::min(threads, p.M * p.N * p.K / kMinWorkPerThread));
  // Only thread counts that split evenly into a grid are used; fall back to one less.
  Split split;
  while (threads > 1) {
    split = choose_split(threads, slivers_m, slivers_n, ks.mr, ks.nr, p.trans_a ? 1 : 4,
                         p.trans_b ? 4 : 1);
    if (split.tm * split.tn == threads) break;
    --threads;
  }
  const int64_t parts = split.tm * split.tn;
  const int64_t per_m = (slivers_m + split.tm - 1) / split.tm * ks.mr;
  const int64_t per_n = (slivers_n + split.tn - 1) / split.tn * ks.nr;
  auto run = [&](int64_t part) {
    const int64_t m0 = (part / split.tn) * per_m, n0 = (part % split.tn) * per_n;
    const int64_t m1 = std::min(p.M, m0 + per_m), n1 = std::min(p.N, n0 + per_n);
    if (m0 < m1 && n0 < n1) gemm_region(ks, p, m0, m1, n0, n1);
  };
  if (parts == 1) {
    run(0);
    return;
  }
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t part = begin; part < end; ++part) run(part);
  });
}

}  // namespace

template <>
const KernelSet<float>& gemm_kernels<float>(Isa isa) {
  switch (isa) {
    case Isa::Avx512: return gemm_detail::avx512_kernels_f32();
    case Isa::Avx2: return gemm_detail::avx2_kernels_f32();
    default: return gemm_detail::portable_kernels_f32();
  }
}
template <>
const KernelSet<double>& gemm_kernels<double>(Isa isa) {
  switch (isa) {
    case Isa::Avx512: return gemm_detail::avx512_kernels_f64();
    case Isa::Avx2: return gemm_detail::avx2_kernels_f64();
    default: return gemm_detail::portable_kernels_f64();
  }
}

template <typename T>
void gemm_isa(Isa isa, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha,
              const T* A, int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  TORCH_CHECK(static_cast<int>(isa) <= static_cast<int>(best_supported_isa()),
              "cnnext: gemm isa='", isa_name(isa), "' is not supported by this CPU");
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == T(0)) {
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j)
        C[i * ldc + j] = beta == T(0) ? T(0) : beta * C[i * ldc + j];
    return;
  }
  const Problem<T> p{trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc,
                     direct_a_mode()};
  const KernelSet<T>& ks = gemm_kernels<T>(isa);
  if (use_dot_path(ks, p))
    gemm_dot(ks, p);
  else
    gemm_packed(ks, p);
}

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  gemm_isa(active_isa(), trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

#define CNNEXT_INSTANTIATE_GEMM(T)                                                            \
  template void gemm<T>(bool, bool, int64_t, int64_t, int64_t, T, const T*, int64_t, const T*, \
                        int64_t, T, T*, int64_t);                                              \
  template void gemm_isa<T>(Isa, bool, bool, int64_t, int64_t, int64_t, T, const T*, int64_t,  \
                            const T*, int64_t, T, T*, int64_t);
CNNEXT_INSTANTIATE_GEMM(float)
CNNEXT_INSTANTIATE_GEMM(double)
#undef CNNEXT_INSTANTIATE_GEMM

}  // namespace cnnext::cpu

// CPU kernel of multi-scale deformable attention: forward and backward.
//
// Work split (no two threads ever write the same memory, so no atomics): a task is one
// (n, m) head and one chunk of its queries. A head only reads value[n, :, m, :] and only
// writes grad_value[n, :, m, :]; when there are fewer heads than threads, the queries are
// split into chunks with private grad_value buffers that are summed at the end. The
// threads of ATen's intra-op pool (the ones every other CPU op of the model uses) claim
// tasks from one counter, so a thread that starts late simply does fewer (see TaskQueue).
//
// Per (query, head), three phases:
//   1. resolve the L*P points, W points at a time with SIMD vectors: pixel position,
//      top-left row, bilinear weights and which corners are inside the map. "Fast"
//      points have all 4 corners inside; the valid corners of the rest (borders) go into
//      a corner list, without branches, and points outside the map (or NaN) read nothing.
//   2. forward: accumulate weight * row over the corners, D channels as SIMD vectors.
//      backward: per corner, a dot product <grad_out, row> (kept as lane partials) and
//      the scatter grad_row += weight * grad_out.
//   3. backward only: lane partials -> dot products (shuffle tree, 8 at a time), then
//      the attention and location gradients from the bilinear weight derivatives.
// SIMD code uses GCC/Clang vector extensions, so one source compiles to SSE, AVX2 or
// AVX-512. With GCC >= 12 on x86-64 the task functions are built three times
// (x86-64-v4, x86-64-v3, baseline) and the loader picks one for the CPU at hand: no
// -march=native, and the library stays valid in a cache folder shared between machines.
//
// Strategy (make_plan, from the shape alone): a head's rows sit M*D elements apart, so
// one head maps to 1/M of the cache sets and thrashes L2. When rows are reused enough
// (encoder-like calls: many queries), the head is first copied into a contiguous
// per-thread buffer, in float for half types, with rows padded to whole vectors and a
// border of zero rows around each level's map (so that every point with a corner inside
// is fast there), and the backward accumulates its grad_value in a second such buffer.
// With few queries
// (decoder-like calls) rows are gathered in place, with the corner rows of upcoming
// points prefetched (each query is resolved one query early, so the prefetches run on
// across query boundaries); from a value tensor bigger than the last-level cache, the
// forward first sorts a block of points by row and reads the rows in that order
// ("sweep"). The per-query inputs and outputs of one head (locations, weights, grad_out,
// the output row) are small blocks M times their size apart, a stride the hardware
// prefetcher follows poorly, so they too are prefetched a few queries ahead, as are the
// rows of a head being staged.
//
// Semantics follow stkit.ops.reference: pixel = loc * size - 0.5, corners outside the map
// count as zero, and a point counts only when -1 <= pixel < size in both coordinates, a
// test that NaN and inf fail: such points sample zero, read no memory and get zero
// gradients. The attention weight multiplies the (zero) sample of an outside point too,
// so a non-finite weight still makes the output NaN, as in the reference.
#include "ms_deform_attn.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/util/Exception.h>

#if defined(__GNUC__)
#define STKIT_INLINE inline __attribute__((always_inline))
#else
#error "ms_deform_attn_cpu.cpp needs GCC or Clang (vector extensions)"
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && (__GNUC__ >= 12) && \
    !defined(STKIT_NO_CLONES)
#define STKIT_HAS_CLONES 1
#define STKIT_SIMD_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define STKIT_HAS_CLONES 0
#define STKIT_SIMD_CLONES
#endif

#if defined(__clang__) || (__GNUC__ >= 12)
#define STKIT_SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
typedef int stkit_vi8 __attribute__((vector_size(32)));
#define STKIT_SHUFFLE(a, b, ...) __builtin_shuffle(a, b, stkit_vi8{__VA_ARGS__})
#endif

namespace {

// ------------------------------------------------------------------------------ SIMD

// A 32-byte vector of the accumulation type (8 floats or 4 doubles).
template <typename A>
struct Simd;
template <>
struct Simd<float> {
  static constexpr int W = 8;
  typedef float V __attribute__((vector_size(32)));
  typedef int32_t I __attribute__((vector_size(32)));  // W int32 lanes
};
template <>
struct Simd<double> {
  static constexpr int W = 4;
  typedef double V __attribute__((vector_size(32)));
  typedef int32_t I __attribute__((vector_size(16)));  // W int32 lanes
};

// Load W elements of a row (any value dtype) as a vector of A; unaligned is fine.
template <typename T, typename A>
STKIT_INLINE typename Simd<A>::V load(const T* p) {
  typename Simd<A>::V v;
  if constexpr (std::is_same_v<T, A>) {
    std::memcpy(&v, p, sizeof(v));
  } else {
    A tmp[Simd<A>::W];
    for (int j = 0; j < Simd<A>::W; ++j) tmp[j] = static_cast<A>(p[j]);
    std::memcpy(&v, tmp, sizeof(v));
  }
  return v;
}

template <typename A>
STKIT_INLINE void store(A* p, typename Simd<A>::V v) {
  std::memcpy(p, &v, sizeof(v));
}

template <typename A>
STKIT_INLINE typename Simd<A>::I load_i(const int32_t* p) {
  typename Simd<A>::I v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename A>
STKIT_INLINE void store_i(int32_t* p, typename Simd<A>::I v) {
  std::memcpy(p, &v, sizeof(v));
}

// out[j] = sum of the W lanes u[j * W : (j + 1) * W] for j < n. (Vectors are kept in
// plain arrays and moved with memcpy: std::vector does not honour their alignment.)
template <typename A>
STKIT_INLINE void lane_sums(const A* u, int64_t n, A* out) {
  using V = typename Simd<A>::V;
  constexpr int W = Simd<A>::W;
  int64_t j = 0;
  if constexpr (std::is_same_v<A, float>) {
    // 8 vectors -> 8 sums with a shuffle tree (pairwise, then quads, then halves).
    for (; j + 8 <= n; j += 8) {
      V x[8];
      for (int k = 0; k < 8; ++k) x[k] = load<A, A>(u + (j + k) * W);
      const V t0 = STKIT_SHUFFLE(x[0], x[1], 0, 8, 2, 10, 4, 12, 6, 14) +
                   STKIT_SHUFFLE(x[0], x[1], 1, 9, 3, 11, 5, 13, 7, 15);
      const V t1 = STKIT_SHUFFLE(x[2], x[3], 0, 8, 2, 10, 4, 12, 6, 14) +
                   STKIT_SHUFFLE(x[2], x[3], 1, 9, 3, 11, 5, 13, 7, 15);
      const V t2 = STKIT_SHUFFLE(x[4], x[5], 0, 8, 2, 10, 4, 12, 6, 14) +
                   STKIT_SHUFFLE(x[4], x[5], 1, 9, 3, 11, 5, 13, 7, 15);
      const V t3 = STKIT_SHUFFLE(x[6], x[7], 0, 8, 2, 10, 4, 12, 6, 14) +
                   STKIT_SHUFFLE(x[6], x[7], 1, 9, 3, 11, 5, 13, 7, 15);
      const V r0 = STKIT_SHUFFLE(t0, t1, 0, 1, 8, 9, 4, 5, 12, 13) +
                   STKIT_SHUFFLE(t0, t1, 2, 3, 10, 11, 6, 7, 14, 15);
      const V r1 = STKIT_SHUFFLE(t2, t3, 0, 1, 8, 9, 4, 5, 12, 13) +
                   STKIT_SHUFFLE(t2, t3, 2, 3, 10, 11, 6, 7, 14, 15);
      const V s = STKIT_SHUFFLE(r0, r1, 0, 1, 2, 3, 8, 9, 10, 11) +
                  STKIT_SHUFFLE(r0, r1, 4, 5, 6, 7, 12, 13, 14, 15);
      store<A>(out + j, s);
    }
  }
  for (; j < n; ++j) {
    A s = 0;
    for (int k = 0; k < W; ++k) s += u[j * W + k];
    out[j] = s;
  }
}

// -------------------------------------------------------------------------- geometry

// Sizes and a copy of the (tiny) level tables, in int64 whatever the tensors' dtype.
struct Geometry {
  std::vector<int64_t> hw;     // (L, 2) rows (H, W)
  std::vector<int64_t> start;  // (L,)
  int64_t N = 0, S = 0, M = 0, D = 0, Lq = 0, L = 0, P = 0;
};

// A staged head's layout: each level's H x W map inside a border of zero rows,
// (H + 2) x (W + 2), the levels one after another. A point with some corner inside the
// map then has all 4 corners inside the bordered map (a missing corner reads a zero row
// and takes a gradient nobody reads), so a staged head has no slow corners: only points
// entirely outside the map (or non-finite) are slow, and they read nothing.
struct Bordered {
  std::vector<int64_t> start;  // (L,) first row of each level's bordered map
  int64_t rows = 0;            // rows of all levels
  explicit Bordered(const Geometry& g) : start(g.L) {
    for (int64_t l = 0; l < g.L; ++l) {
      start[l] = rows;
      rows += (g.hw[2 * l] + 2) * (g.hw[2 * l + 1] + 2);
    }
  }
  // Row stride of level l's bordered map, and the row of its pixel (y, 0).
  static int64_t width(const Geometry& g, int64_t l) { return g.hw[2 * l + 1] + 2; }
  int64_t pixel(const Geometry& g, int64_t l, int64_t y) const {
    return start[l] + (y + 1) * width(g, l) + 1;
  }
};

// ------------------------------------------------------------------------ work plan

// How one call runs, chosen from the shape alone (make_plan) and shared by its tasks.
// Task ids walk the chunks of one head, then the next head.
//   value rows:  "gather" reads value[n, :, m, :] in place (rows M*D apart);
//                "stage" first copies the head into a contiguous per-thread buffer
//                (in A, rows padded to whole vectors), worth it when rows are reused.
//   grad rows:   "local" accumulates a head's grad_value in a zeroed, contiguous
//                per-thread buffer (in A) written out once per task: always with
//                "stage", and for half types when the buffer is small enough (it spares
//                a float workspace and a rounding pass). "in-place" scatters straight
//                into grad_value (float32/64) or a zeroed workspace: with few queries
//                the zero-fill and write-out of a local buffer cost more than they save.
//   chunks:      K > 1 splits each head's queries when there are fewer heads than
//                threads; each chunk then has a private grad_value workspace.
struct Plan {
  int64_t chunks = 1;   // K query chunks per head
  int64_t workers = 1;  // threads that claim tasks (1: the calling thread alone)
  bool stage = false;   // value rows: staged copy (true) or gathered in place
  bool local = false;   // backward: grad rows accumulate in a per-thread buffer
  int64_t len = 0;      // channels per row as processed: D, or D padded to a vector
  int64_t vrs = 0;      // row stride of the value rows read (M*D in value, len when staged)
  int64_t grs = 0;      // row stride of the grad rows written (M*D in place, len if local)
  bool sweep = false;   // forward with gather: points sorted by row, rows read in order
};

// Work below about this many multiply-adds is not worth waking other threads for.
constexpr int64_t kMinParallelWork = 1 << 17;
// Stage when a task reads each row of its head at least this many times on average
// (corner reads / S). Measured on the benchmark shapes: at 3.5 (shape B) and 4.5
// (stnet-dec-quick) reads per row gathering in place is faster, at 32 (the STNet
// encoder calls) and 64 (shape A) staging is.
constexpr int64_t kStageReuse = 8;
// Largest per-thread grad buffer for "local" without staging (bytes).
constexpr int64_t kLocalGradBytes = int64_t(8) << 20;

// Sweep (sort the points by row) when gathering from a value tensor at least this big:
// beyond the last-level cache (32 MB here), most corner reads go to memory and sorting
// saves them; a value that stays in cache is read faster in point order, where the
// prefetches run ahead across queries, and sorting only costs. Measured (forward, float32,
// 1 / 2 threads, ms, gather vs sweep): stnet-dec-paper (44 MB) 5.72 / 2.79 vs 4.59 /
// 2.37; shape B (11 MB) 0.89 / 0.41 vs 1.10 / 0.56.
constexpr int64_t kSweepValueBytes = int64_t(32) << 20;

// lanes: vector width of A; acc_bytes: sizeof(A); value_bytes: sizeof the value dtype;
// half: the value dtype is a half type.
Plan make_plan(const Geometry& g, int lanes, int64_t acc_bytes, int64_t value_bytes, bool half,
               int64_t threads) {
  Plan plan;
  const int64_t heads = g.N * g.M;
  const int64_t head_work = std::max<int64_t>(1, 4 * g.Lq * g.L * g.P * std::max<int64_t>(g.D, 1));
  const bool parallel = threads > 1 && heads * head_work >= kMinParallelWork;
  if (parallel && heads < 2 * threads)
    plan.chunks =
        std::max<int64_t>(1, std::min({(2 * threads + heads - 1) / heads, threads, g.Lq}));
  plan.workers = parallel ? std::min(threads, heads * plan.chunks) : 1;
  const int64_t reads_per_task = 4 * g.L * g.P * ((g.Lq + plan.chunks - 1) / plan.chunks);
  plan.stage = g.S > 0 && reads_per_task >= kStageReuse * g.S;
  plan.len = plan.stage ? (g.D + lanes - 1) / lanes * lanes : g.D;
  plan.local = plan.stage || (half && g.S * plan.len * acc_bytes <= kLocalGradBytes);
  plan.vrs = plan.stage ? plan.len : g.M * g.D;
  plan.grs = plan.local ? plan.len : g.M * g.D;
  plan.sweep = !plan.stage && g.N * g.S * g.M * g.D * value_bytes >= kSweepValueBytes;
  return plan;
}

// The plan for value dtype T with the current thread count.
template <typename T>
Plan plan_for(const Geometry& g) {
  using A = at::opmath_type<T>;
  return make_plan(g, Simd<A>::W, sizeof(A), sizeof(T), !std::is_same_v<T, A>,
                   at::get_num_threads());
}

std::string describe(const Plan& plan) {
  return std::string("value=") + (plan.stage ? "stage" : plan.sweep ? "sweep" : "gather") +
         ", grad=" + (plan.local ? "local" : "in-place") +
         ", chunks=" + std::to_string(plan.chunks) + ", workers=" + std::to_string(plan.workers);
}

// Queries ahead whose per-query inputs (locations, weights, grad_out) and output row are
// prefetched: a head's slice of each is a small block M times its size apart, a stride
// the hardware prefetcher does not follow well.
constexpr int64_t kQueryAhead = 2;

// Prefetch `bytes` from p (RW = 1: to be written).
template <int RW>
STKIT_INLINE void prefetch_bytes(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(c + b, RW, 3);
}

// Rows ahead that the strided copy into a staged head prefetches.
constexpr int64_t kRowAhead = 8;

// Zero S rows of D elements, `stride` apart, with vector stores in line: a memset call
// per row (what std::fill_n, a plain loop, or a loop of vector stores becomes) took an
// eighth of shape B's backward. The empty asm after each store keeps GCC from
// recognising the loop as a memset.
template <typename A>
STKIT_INLINE void zero_rows(A* __restrict p, int64_t S, int64_t D, int64_t stride) {
  using V = typename Simd<A>::V;
  constexpr int W = Simd<A>::W;
  const V z{};
  for (int64_t s = 0; s < S; ++s) {
    A* r = p + s * stride;
    int64_t d = 0;
    for (; d + W <= D; d += W) {
      store<A>(r + d, z);
      asm volatile("" ::: "memory");
    }
    for (; d < D; ++d) {
      r[d] = A(0);
      asm volatile("" ::: "memory");
    }
  }
}

// dst[0 .. len) = src[0 .. D) as A, then zeros, with vector loads and stores in line (a
// plain loop became a memmove and a memset call per row: 4 % of shape A's forward).
template <typename T, typename A>
STKIT_INLINE void copy_row(const T* __restrict src, A* __restrict dst, int64_t D, int64_t len) {
  constexpr int W = Simd<A>::W;
  int64_t d = 0;
  for (; d + W <= D; d += W) {
    store<A>(dst + d, load<T, A>(src + d));
    asm volatile("" ::: "memory");
  }
  for (; d < len; ++d) {
    dst[d] = d < D ? static_cast<A>(src[d]) : A(0);
    asm volatile("" ::: "memory");
  }
}

// Copy value[n, :, m, :] (rows `stride` apart) into dst in the bordered layout (rows
// len apart) as the accumulation type, zero-filling the border and the padding lanes.
template <typename T, typename A>
STKIT_INLINE void stage_head(const T* __restrict src, int64_t stride, A* __restrict dst,
                             const Geometry& g, const Bordered& b, int64_t len) {
  const int64_t D = g.D;
  for (int64_t l = 0; l < g.L; ++l) {
    const int64_t H = g.hw[2 * l], Wd = g.hw[2 * l + 1], Wb = Bordered::width(g, l);
    A* top = dst + b.start[l] * len;
    zero_rows<A>(top, Wb + 1, len, len);                     // top border, first left cell
    zero_rows<A>(top + ((H + 1) * Wb - 1) * len, Wb + 1, len, len);  // last right cell, bottom
    for (int64_t y = 0; y < H; ++y) {
      const T* s = src + (g.start[l] + y * Wd) * stride;
      A* r = dst + b.pixel(g, l, y) * len;
      for (int64_t x = 0; x < Wd; ++x) {
        if (x + kRowAhead < Wd) prefetch_bytes<0>(s + (x + kRowAhead) * stride, D * sizeof(T));
        copy_row<T, A>(s + x * stride, r + x * len, D, len);
      }
      if (y + 1 < H) zero_rows<A>(r + Wd * len, 2, len, len);  // right cell, next left cell
    }
  }
}

// Per-thread head buffers kept between calls (grow-only; slot 0: staged value rows,
// slot 1: local grad rows), so that a call neither zero-fills nor page-faults megabytes
// of fresh memory. Whoever uses one initialises what it reads: stage_head writes every
// element of its rows, a local grad buffer is zeroed per task. A thread runs one task at
// a time, so a slot is never shared.
template <typename A>
A* thread_buffer(int slot, int64_t n) {
  thread_local std::vector<A> buffers[2];
  std::vector<A>& b = buffers[slot];
  if (static_cast<int64_t>(b.size()) < n) b.resize(static_cast<size_t>(n));
  return b.data();
}

// ------------------------------------------------------------------------ task queue

// The tasks of one call. Each thread of the call claims task ids one at a time until
// none are left, so a thread that starts late (a busy machine) or runs slower simply
// does fewer: the split adapts to the threads as they come, not fixed up front.
struct TaskQueue {
  std::atomic<int64_t> next{0};  // the next unclaimed task id
  int64_t n = 0;                 // number of tasks
  int64_t claim() { return next.fetch_add(1, std::memory_order_relaxed); }
};

// ------------------------------------------------------------- phase 1: resolve points

// Per-task tables over the L*P points of one (query, head), the same for every query.
template <typename A>
struct PointTables {
  std::vector<A> Wf, Hf;           // the point's level width and height
  std::vector<int32_t> Wi, start;  // row stride of the level's map, row of its pixel (0, 0)
  bool bordered = false;           // rows of a staged head (see Bordered): no slow corners
  // Arrays are padded to whole vectors (padding: 1x1 levels, never used). b: the rows
  // are a staged head in that layout; nullptr: rows as in value.
  PointTables(const Geometry& g, int64_t padded, const Bordered* b)
      : Wf(padded, A(1)), Hf(padded, A(1)), Wi(padded, 1), start(padded, 0),
        bordered(b != nullptr) {
    for (int64_t l = 0; l < g.L; ++l)
      for (int64_t p = 0; p < g.P; ++p) {
        const int64_t j = l * g.P + p, Wd = g.hw[2 * l + 1];
        Wf[j] = static_cast<A>(Wd);
        Hf[j] = static_cast<A>(g.hw[2 * l]);
        Wi[j] = static_cast<int32_t>(b ? Bordered::width(g, l) : Wd);
        start[j] = static_cast<int32_t>(b ? b->pixel(g, l, 0) : g.start[l]);
      }
  }
};

// Phase-1 results for one (query, head), structure-of-arrays over its L*P points.
// "Fast" points have all 4 corners inside the map (the vast majority); the others
// ("slow": borders, outside, non-finite) become an explicit list of valid corners.
template <typename A>
struct QueryPoints {
  std::vector<int32_t> fast, row;       // fast flag (0 or -1); top-left corner's row in S
  std::vector<int32_t> code;            // bit k: corner k is inside the map
  std::vector<A> fx, fy, w;             // fractional position, attention weight
  std::vector<A> c0, c1, c2, c3;        // w * bilinear weight of each corner
  std::vector<int32_t> slow;            // indices of slow points
  std::vector<uint8_t> slow_inside;     // ... whether some corner is inside
  std::vector<int32_t> srow;            // slow corners: the corner's row in S
  std::vector<A> cw;                    // ... w * bilinear weight
  std::vector<int32_t> slot;            // ... k * LP + j (corner k of point j)
  int64_t n_slow = 0, n_corners = 0;
  bool nan_out = false;                 // forward: some point makes the output NaN
  std::vector<A> x, y;                  // staging of loc for non-float inputs
  QueryPoints(int64_t LP, int64_t padded)
      : fast(padded), row(padded), code(padded), fx(padded), fy(padded), w(padded),
        c0(padded), c1(padded), c2(padded), c3(padded), slow(LP), slow_inside(LP),
        srow(4 * LP), cw(4 * LP), slot(4 * LP), x(padded), y(padded) {}
};

// Points (i0 .. i0 + LP) of one (query, head) -> QueryPoints. One loop works on W points
// at a time with no branches and resolves every point, slow ones included (their corner
// masks); a second visits only the slow points (a bit mask of them, so no branch per
// point) and lists their valid corners without branches.
template <typename T, typename A>
STKIT_INLINE void resolve(const T* __restrict loc, const T* __restrict attn, int64_t i0,
                          int64_t LP, const PointTables<A>& tb, QueryPoints<A>& qp) {
  using V = typename Simd<A>::V;
  using I = typename Simd<A>::I;
  constexpr int W = Simd<A>::W;
  const T* __restrict lp = loc + 2 * i0;
  const T* __restrict ap = attn + i0;
  // (x, y) pairs -> separate x and y arrays, and weights, as A (W-padded).
  A* __restrict xs = qp.x.data();
  A* __restrict ys = qp.y.data();
  A* __restrict ws = qp.w.data();
  for (int64_t j = 0; j < LP; ++j) {
    xs[j] = static_cast<A>(lp[2 * j]);
    ys[j] = static_cast<A>(lp[2 * j + 1]);
    ws[j] = static_cast<A>(ap[j]);
  }
  const V zero{}, one = zero + A(1), half = zero + A(0.5);
  using Mask = decltype(zero < one);  // lane masks: 0 or -1 in an integer of A's width
  Mask nan_lanes{};
  const Mask border = zero < (tb.bordered ? one : zero);  // all lanes set for staged rows
  for (int64_t j = 0; j < LP; j += W) {
    const V wf = load<A, A>(tb.Wf.data() + j), hf = load<A, A>(tb.Hf.data() + j);
    const V w = load<A, A>(ws + j);
    const V px = load<A, A>(xs + j) * wf - half;
    const V py = load<A, A>(ys + j) * hf - half;
    // Some corner is inside iff -1 <= p < size in both coordinates (NaN fails every
    // comparison); other points read nothing, so their coordinates are replaced by 0
    // before the integer conversion (which could overflow).
    const Mask in = (px >= -one) & (py >= -one) & (px < wf) & (py < hf);
    const V sx = in ? px : zero, sy = in ? py : zero;
    // floor: truncation rounds p in (-1, 0) up to 0, so step those lanes down by one.
    V flx = __builtin_convertvector(__builtin_convertvector(sx, I), V);
    V fly = __builtin_convertvector(__builtin_convertvector(sy, I), V);
    flx = sx < flx ? flx - one : flx;
    fly = sy < fly ? fly - one : fly;
    const Mask x0 = flx >= zero, x1 = flx < wf - one, y0 = fly >= zero, y1 = fly < hf - one;
    // Fast: all 4 corners inside the map, or inside the bordered map of a staged head.
    const Mask f = in & ((x0 & x1 & y0 & y1) | border);
    // Bit k set: corner k is inside the map (no bits: the point is outside).
    const Mask code = in & ((y0 & x0 & 1) | (y0 & x1 & 2) | (y1 & x0 & 4) | (y1 & x1 & 8));
    // An outside point adds weight * 0: NaN only if the weight is not finite.
    nan_lanes |= ~in & (w - w != zero);
    const V ax = sx - flx, ay = sy - fly, bx = one - ax, by = one - ay;
    const I xi = __builtin_convertvector(flx, I), yi = __builtin_convertvector(fly, I);
    store_i<A>(qp.fast.data() + j, __builtin_convertvector(f, I));
    store_i<A>(qp.code.data() + j, __builtin_convertvector(code, I));
    store_i<A>(qp.row.data() + j,
               load_i<A>(tb.start.data() + j) + yi * load_i<A>(tb.Wi.data() + j) + xi);
    store<A>(qp.fx.data() + j, ax);
    store<A>(qp.fy.data() + j, ay);
    store<A>(qp.c0.data() + j, w * by * bx);
    store<A>(qp.c1.data() + j, w * by * ax);
    store<A>(qp.c2.data() + j, w * ay * bx);
    store<A>(qp.c3.data() + j, w * ay * ax);
  }
  bool nan_out = false;
  for (int i = 0; i < W; ++i) nan_out |= nan_lanes[i] != 0;
  const int32_t* __restrict fast = qp.fast.data();
  const int32_t* __restrict code = qp.code.data();
  const int32_t* __restrict row = qp.row.data();
  const int32_t* __restrict Wi = tb.Wi.data();
  int32_t* __restrict srow = qp.srow.data();
  int32_t* __restrict slot = qp.slot.data();
  A* __restrict cw = qp.cw.data();
  int64_t ns = 0, nc = 0;
  for (int64_t j0 = 0; j0 < LP; j0 += 64) {
    const int64_t jn = std::min<int64_t>(64, LP - j0);
    uint64_t bits = 0;  // bit i: point j0 + i is slow
    for (int64_t i = 0; i < jn; ++i) bits |= static_cast<uint64_t>(fast[j0 + i] == 0) << i;
    for (; bits; bits &= bits - 1) {
      const int32_t j = static_cast<int32_t>(j0 + __builtin_ctzll(bits));
      const int32_t c = code[j], r0 = row[j], r2 = r0 + Wi[j];
      qp.slow[ns] = j;
      qp.slow_inside[ns] = c != 0;
      ++ns;
      // Every corner is written, but the count moves only past valid ones (the arrays
      // hold 4 * LP, so the writes past the last valid corner stay in bounds).
      const int32_t rows[4] = {r0, r0 + 1, r2, r2 + 1};
      const A ws4[4] = {qp.c0[j], qp.c1[j], qp.c2[j], qp.c3[j]};
      for (int k = 0; k < 4; ++k) {
        srow[nc] = rows[k];
        cw[nc] = ws4[k];
        slot[nc] = static_cast<int32_t>(k * LP) + j;
        nc += (c >> k) & 1;
      }
    }
  }
  qp.n_slow = ns;
  qp.n_corners = nc;
  qp.nan_out = nan_out;
}

// Query q of head (n, m) -> qp, after prefetching the locations and weights of the query
// kQueryAhead further on (if below q1).
template <typename T, typename A>
STKIT_INLINE void resolve_query(const T* loc, const T* attn, const Geometry& g, int64_t n,
                                int64_t m, int64_t q, int64_t q1, const PointTables<A>& tb,
                                QueryPoints<A>& qp) {
  const int64_t LP = g.L * g.P, i0 = ((n * g.Lq + q) * g.M + m) * LP;
  if (q + kQueryAhead < q1) {
    const int64_t ia = i0 + kQueryAhead * g.M * LP;
    prefetch_bytes<0>(loc + 2 * ia, 2 * LP * sizeof(T));
    prefetch_bytes<0>(attn + ia, LP * sizeof(T));
  }
  resolve<T, A>(loc, attn, i0, LP, tb, qp);
}

// ------------------------------------------------------------------ phase 2: forward

// Rows of this many points ahead are prefetched while a point is summed: the corner
// rows are scattered over the map, so without it each point waits for its cache misses.
constexpr int64_t kPrefetchAhead = 4;

// Prefetch the 4 corner rows (`bytes` each) of fast point j; rw = 1 for rows to write.
template <int RW, typename VT, typename A>
STKIT_INLINE void prefetch_point(const VT* base, int64_t rs, int64_t bytes,
                                 const PointTables<A>& tb, const QueryPoints<A>& qp,
                                 int64_t j) {
  const char* r0 = reinterpret_cast<const char*>(base + qp.row[j] * rs);
  const char* r2 = reinterpret_cast<const char*>(base + (qp.row[j] + tb.Wi[j]) * rs);
  const int64_t step = static_cast<int64_t>(rs * sizeof(VT));
  for (int64_t b = 0; b < bytes; b += 64) {
    __builtin_prefetch(r0 + b, RW, 3);
    __builtin_prefetch(r0 + step + b, RW, 3);
    __builtin_prefetch(r2 + b, RW, 3);
    __builtin_prefetch(r2 + step + b, RW, 3);
  }
}

// While point j of a query is summed, prefetch the point kPrefetchAhead further on in
// the stream of this query's points followed by the next query's (nxt, already
// resolved; nullptr for a task's last query), so that a query's first points are not
// left to wait for their cache misses.
template <int RW, typename VT, typename A>
STKIT_INLINE void prefetch_ahead(const VT* base, int64_t rs, int64_t bytes,
                                 const PointTables<A>& tb, const QueryPoints<A>& qp,
                                 const QueryPoints<A>* nxt, int64_t LP, int64_t j) {
  const int64_t k = j + kPrefetchAhead;
  if (k < LP)
    prefetch_point<RW, VT, A>(base, rs, bytes, tb, qp, k);
  else if (nxt && k - LP < LP)
    prefetch_point<RW, VT, A>(base, rs, bytes, tb, *nxt, k - LP);
}

// out[d .. d + BV*W) = sum over corners of weight * row[d ..]; BV vectors per row block,
// two accumulator sets so that each FMA chain is half as long.
template <int BV, typename VT, typename A>
STKIT_INLINE void gather_block(const VT* __restrict base, int64_t rs, int64_t len,
                               const PointTables<A>& tb, const QueryPoints<A>& qp,
                               const QueryPoints<A>* nxt, int64_t LP, int64_t d,
                               A* __restrict out) {
  using V = typename Simd<A>::V;
  constexpr int W = Simd<A>::W;
  V a[BV], b[BV];
  for (int v = 0; v < BV; ++v) a[v] = b[v] = V{};
  const int32_t* __restrict fast = qp.fast.data();
  const int32_t* __restrict row = qp.row.data();
  const int32_t* __restrict Wi = tb.Wi.data();
  const int64_t bytes = d == 0 ? static_cast<int64_t>(len * sizeof(VT)) : 0;  // first pass
  for (int64_t j = 0; j < LP; ++j) {
    if (bytes) prefetch_ahead<0, VT, A>(base, rs, bytes, tb, qp, nxt, LP, j);
    if (!fast[j]) continue;
    const VT* r0 = base + row[j] * rs + d;
    const VT* r2 = r0 + Wi[j] * rs;
    const A k0 = qp.c0[j], k1 = qp.c1[j], k2 = qp.c2[j], k3 = qp.c3[j];
    for (int v = 0; v < BV; ++v) {
      a[v] += k0 * load<VT, A>(r0 + v * W);
      b[v] += k1 * load<VT, A>(r0 + rs + v * W);
      a[v] += k2 * load<VT, A>(r2 + v * W);
      b[v] += k3 * load<VT, A>(r2 + rs + v * W);
    }
  }
  for (int64_t e = 0; e < qp.n_corners; ++e) {
    const VT* r = base + qp.srow[e] * rs + d;
    for (int v = 0; v < BV; ++v) a[v] += qp.cw[e] * load<VT, A>(r + v * W);
  }
  for (int v = 0; v < BV; ++v) store<A>(out + d + v * W, a[v] + b[v]);
}

// All len channels: blocks of 4 vectors, then 3/2/1, then a scalar tail (unpadded rows).
template <typename VT, typename A>
STKIT_INLINE void gather(const VT* __restrict base, int64_t rs, int64_t len,
                         const PointTables<A>& tb, const QueryPoints<A>& qp,
                         const QueryPoints<A>* nxt, int64_t LP, A* __restrict out) {
  constexpr int W = Simd<A>::W;
  int64_t d = 0;
  for (; d + 4 * W <= len; d += 4 * W)
    gather_block<4, VT, A>(base, rs, len, tb, qp, nxt, LP, d, out);
  switch ((len - d) / W) {
    case 3: gather_block<3, VT, A>(base, rs, len, tb, qp, nxt, LP, d, out); d += 3 * W; break;
    case 2: gather_block<2, VT, A>(base, rs, len, tb, qp, nxt, LP, d, out); d += 2 * W; break;
    case 1: gather_block<1, VT, A>(base, rs, len, tb, qp, nxt, LP, d, out); d += W; break;
    default: break;
  }
  for (; d < len; ++d) {
    A s = 0;
    for (int64_t j = 0; j < LP; ++j) {
      if (!qp.fast[j]) continue;
      const VT* r0 = base + qp.row[j] * rs + d;
      const VT* r2 = r0 + tb.Wi[j] * rs;
      s += qp.c0[j] * static_cast<A>(r0[0]) + qp.c1[j] * static_cast<A>(r0[rs]) +
           qp.c2[j] * static_cast<A>(r2[0]) + qp.c3[j] * static_cast<A>(r2[rs]);
    }
    for (int64_t e = 0; e < qp.n_corners; ++e)
      s += qp.cw[e] * static_cast<A>(base[qp.srow[e] * rs + d]);
    out[d] = s;
  }
}

// ------------------------------------------------------ phase 2: forward, sorted sweep

// Strategy "sweep" (forward only; the backward of such a call gathers in place): rows
// are read in place, but the points of a block of queries are first sorted by their
// top-left row (a counting sort) and then visited in that order, so that the rows of a
// head are read in one monotone pass: a row shared by several points is read once while
// it is in L1, and the rows of upcoming points are prefetched in order, instead of every
// corner being a cache miss at a random place. Each point adds into its query's
// accumulator row (a block of queries stays in L2), so a query's sum runs in row order,
// not point order (the same terms, rounded in another order).

// One fast point of a sweep: top-left row in S, row distance to the lower corners (the
// level width), the query within the block, and w * bilinear weight of each corner.
template <typename A>
struct SweepPoint {
  int32_t row, down, q, pad;
  A c[4];
};

// Points per sorted block (bounds the scratch: two record arrays of this many points).
constexpr int64_t kSweepPoints = 16384;
// Points ahead whose rows a sweep prefetches.
constexpr int64_t kSweepAhead = 24;

// Per-thread scratch of the sweep over one block of queries.
template <typename A>
struct SweepScratch {
  std::vector<SweepPoint<A>> tmp, pts;  // resolved points, unsorted and sorted
  std::vector<int32_t> bucket;          // counting sort: bucket starts
  std::vector<int32_t> crow, cq;        // slow points' valid corners: row, query
  std::vector<A> cw;                    // ... and w * bilinear weight
  std::vector<uint8_t> nan_q;           // per query: the output is NaN
  int shift = 0;                        // bucket = row >> shift
  int64_t qblock = 1;                   // queries per block
  SweepScratch(const Geometry& g) {
    const int64_t LP = std::max<int64_t>(g.L * g.P, 1);
    qblock = std::max<int64_t>(1, kSweepPoints / LP);
    const int64_t cap = qblock * LP;
    tmp.resize(cap);
    pts.resize(cap);
    while ((g.S >> shift) > 2 * cap) ++shift;
    bucket.resize((g.S >> shift) + 2);
    crow.resize(4 * cap);
    cq.resize(4 * cap);
    cw.resize(4 * cap);
    nan_q.resize(qblock);
  }
};

// Resolves the points of queries [qa, qb) of head (n, m) into sc (fast points sorted by
// row, slow corners in a list). Returns the number of fast points.
template <typename T, typename A>
STKIT_INLINE int64_t sweep_collect(const T* loc, const T* attn, const Geometry& g, int64_t n,
                                   int64_t m, int64_t qa, int64_t qb, const PointTables<A>& tb,
                                   QueryPoints<A>& qp, SweepScratch<A>& sc,
                                   int64_t& n_corners) {
  const int64_t LP = g.L * g.P;
  int32_t* __restrict bucket = sc.bucket.data();
  const int64_t nb = static_cast<int64_t>(sc.bucket.size());
  std::fill_n(bucket, nb, 0);
  SweepPoint<A>* __restrict tmp = sc.tmp.data();
  int64_t np = 0, nc = 0;
  const int shift = sc.shift;
  for (int64_t q = qa; q < qb; ++q) {
    resolve_query<T, A>(loc, attn, g, n, m, q, qb, tb, qp);
    const int32_t ql = static_cast<int32_t>(q - qa);
    sc.nan_q[ql] = qp.nan_out;
    for (int64_t j = 0; j < LP; ++j) {
      if (!qp.fast[j]) continue;
      SweepPoint<A>& p = tmp[np++];
      p.row = qp.row[j];
      p.down = tb.Wi[j];
      p.q = ql;
      p.c[0] = qp.c0[j];
      p.c[1] = qp.c1[j];
      p.c[2] = qp.c2[j];
      p.c[3] = qp.c3[j];
      ++bucket[(p.row >> shift) + 1];
    }
    for (int64_t e = 0; e < qp.n_corners; ++e) {
      sc.crow[nc] = qp.srow[e];
      sc.cq[nc] = ql;
      sc.cw[nc] = qp.cw[e];
      ++nc;
    }
  }
  for (int64_t b = 1; b < nb; ++b) bucket[b] += bucket[b - 1];
  SweepPoint<A>* __restrict pts = sc.pts.data();
  for (int64_t i = 0; i < np; ++i) pts[bucket[tmp[i].row >> shift]++] = tmp[i];
  n_corners = nc;
  return np;
}

// acc[q] += sum over the sorted points of q (rows rs apart, len channels; acc rows are
// ars apart). NV > 0: len is exactly NV vectors.
template <int NV, typename VT, typename A>
STKIT_INLINE void sweep_forward(const VT* __restrict base, int64_t rs, int64_t len,
                                const SweepPoint<A>* __restrict pts, int64_t np,
                                A* __restrict acc, int64_t ars) {
  using V = typename Simd<A>::V;
  constexpr int W = Simd<A>::W;
  const int64_t bytes = static_cast<int64_t>(len * sizeof(VT));
  for (int64_t i = 0; i < np; ++i) {
    if (i + kSweepAhead < np) {
      const SweepPoint<A>& f = pts[i + kSweepAhead];
      const char* f0 = reinterpret_cast<const char*>(base + static_cast<int64_t>(f.row) * rs);
      const char* f2 =
          reinterpret_cast<const char*>(base + static_cast<int64_t>(f.row + f.down) * rs);
      const int64_t step = static_cast<int64_t>(rs * sizeof(VT));
      for (int64_t b = 0; b < bytes; b += 64) {
        __builtin_prefetch(f0 + b, 0, 3);
        __builtin_prefetch(f0 + step + b, 0, 3);
        __builtin_prefetch(f2 + b, 0, 3);
        __builtin_prefetch(f2 + step + b, 0, 3);
      }
    }
    const SweepPoint<A>& p = pts[i];
    const VT* r0 = base + static_cast<int64_t>(p.row) * rs;
    const VT* r2 = r0 + static_cast<int64_t>(p.down) * rs;
    A* o = acc + static_cast<int64_t>(p.q) * ars;
    const A k0 = p.c[0], k1 = p.c[1], k2 = p.c[2], k3 = p.c[3];
    if constexpr (NV > 0) {
      for (int v = 0; v < NV; ++v) {
        const V x = k0 * load<VT, A>(r0 + v * W) + k1 * load<VT, A>(r0 + rs + v * W);
        const V y = k2 * load<VT, A>(r2 + v * W) + k3 * load<VT, A>(r2 + rs + v * W);
        store<A>(o + v * W, load<A, A>(o + v * W) + (x + y));
      }
    } else {
      int64_t d = 0;
      for (; d + W <= len; d += W) {
        const V x = k0 * load<VT, A>(r0 + d) + k1 * load<VT, A>(r0 + rs + d);
        const V y = k2 * load<VT, A>(r2 + d) + k3 * load<VT, A>(r2 + rs + d);
        store<A>(o + d, load<A, A>(o + d) + (x + y));
      }
      for (; d < len; ++d)
        o[d] += k0 * static_cast<A>(r0[d]) + k1 * static_cast<A>(r0[rs + d]) +
                k2 * static_cast<A>(r2[d]) + k3 * static_cast<A>(r2[rs + d]);
    }
  }
}

template <typename T>
struct FwdArgs {
  const T* value;  // (N, S, M, D)
  const T* loc;    // (N, Lq, M, L, P, 2)
  const T* attn;   // (N, Lq, M, L, P)
  T* out;          // (N, Lq, M * D)
  Geometry g;
  Plan plan;
  TaskQueue* queue;
};

// Accumulator row stride of a sweep: D rounded up to whole vectors.
template <typename A>
constexpr int64_t sweep_stride(int64_t D) {
  return (D + Simd<A>::W - 1) / Simd<A>::W * Simd<A>::W;
}

// Forward of queries [q0, q1) of head (n, m), rows gathered in place by sorted sweeps.
template <typename T, typename A>
STKIT_INLINE void forward_sweep_task(const FwdArgs<T>& a, int64_t n, int64_t m, int64_t q0,
                                     int64_t q1, const T* vhead, const PointTables<A>& tb,
                                     QueryPoints<A>& qp, SweepScratch<A>& sc,
                                     std::vector<A>& acc) {
  constexpr int W = Simd<A>::W;
  const Geometry& g = a.g;
  const int64_t D = g.D, MD = g.M * g.D, ars = sweep_stride<A>(D), rs = a.plan.vrs;
  for (int64_t qa = q0; qa < q1; qa += sc.qblock) {
    const int64_t qb = std::min(q1, qa + sc.qblock);
    int64_t nc = 0;
    const int64_t np = sweep_collect<T, A>(a.loc, a.attn, g, n, m, qa, qb, tb, qp, sc, nc);
    A* __restrict o = acc.data();
    std::fill_n(o, (qb - qa) * ars, A(0));
    const SweepPoint<A>* pts = sc.pts.data();
    switch (D % W == 0 ? D / W : 0) {
      case 1: sweep_forward<1, T, A>(vhead, rs, D, pts, np, o, ars); break;
      case 2: sweep_forward<2, T, A>(vhead, rs, D, pts, np, o, ars); break;
      case 4: sweep_forward<4, T, A>(vhead, rs, D, pts, np, o, ars); break;
      default: sweep_forward<0, T, A>(vhead, rs, D, pts, np, o, ars); break;
    }
    for (int64_t e = 0; e < nc; ++e) {
      const T* r = vhead + static_cast<int64_t>(sc.crow[e]) * rs;
      A* oq = o + static_cast<int64_t>(sc.cq[e]) * ars;
      const A c = sc.cw[e];
      for (int64_t d = 0; d < D; ++d) oq[d] += c * static_cast<A>(r[d]);
    }
    for (int64_t q = qa; q < qb; ++q) {
      T* out = a.out + (n * g.Lq + q) * MD + m * D;
      const A* src = o + (q - qa) * ars;
      if (sc.nan_q[q - qa]) {
        for (int64_t d = 0; d < D; ++d)
          out[d] = static_cast<T>(std::numeric_limits<A>::quiet_NaN());
      } else {
        for (int64_t d = 0; d < D; ++d) out[d] = static_cast<T>(src[d]);
      }
    }
  }
}

template <typename T>
STKIT_INLINE void forward_tasks(const FwdArgs<T>& a) {
  using A = at::opmath_type<T>;
  const Geometry& g = a.g;
  const Plan& plan = a.plan;
  const int64_t K = plan.chunks, D = g.D, MD = g.M * g.D, LP = g.L * g.P;
  const int64_t LPW = (LP + Simd<A>::W - 1) / Simd<A>::W * Simd<A>::W;  // padded
  // Scratch first (all that may throw), then tasks; a helper that woke late claims
  // nothing and never touches the tensors.
  const Bordered bordered(g);
  const PointTables<A> tb(g, LPW, plan.stage ? &bordered : nullptr);
  QueryPoints<A> qp(LP, LPW), qp_next(LP, LPW);  // one query's points and the next's
  std::vector<A> acc(static_cast<size_t>(plan.len));
  A* staged = plan.stage ? thread_buffer<A>(0, bordered.rows * plan.len) : nullptr;
  std::unique_ptr<SweepScratch<A>> sw;
  std::vector<A> acc_block;
  if (plan.sweep) {
    sw = std::make_unique<SweepScratch<A>>(g);
    acc_block.resize(sw->qblock * sweep_stride<A>(D));
  }
  int64_t staged_head = -1;
  for (int64_t t = a.queue->claim(); t < a.queue->n; t = a.queue->claim()) {
    const int64_t chunk = t % K, nm = t / K, m = nm % g.M, n = nm / g.M;
    const int64_t q0 = g.Lq * chunk / K, q1 = g.Lq * (chunk + 1) / K;
    const T* vhead = a.value + n * g.S * MD + m * D;  // value[n, 0, m, :]
    if (plan.sweep) {
      forward_sweep_task<T, A>(a, n, m, q0, q1, vhead, tb, qp, *sw, acc_block);
      continue;
    }
    if (plan.stage && staged_head != nm) {
      stage_head<T, A>(vhead, MD, staged, g, bordered, plan.len);
      staged_head = nm;
    }
    // Each query is resolved one query early, so that the gather of the one before can
    // prefetch its first rows.
    QueryPoints<A> *cur = &qp, *nxt = &qp_next;
    if (q0 < q1) resolve_query<T, A>(a.loc, a.attn, g, n, m, q0, q1, tb, *cur);
    for (int64_t q = q0; q < q1; ++q) {
      const bool more = q + 1 < q1;
      if (more) resolve_query<T, A>(a.loc, a.attn, g, n, m, q + 1, q1, tb, *nxt);
      if (q + kQueryAhead < q1)
        prefetch_bytes<1>(a.out + (n * g.Lq + q + kQueryAhead) * MD + m * D, D * sizeof(T));
      const QueryPoints<A>* ahead = more ? nxt : nullptr;
      if (plan.stage)
        gather<A, A>(staged, plan.vrs, plan.len, tb, *cur, ahead, LP, acc.data());
      else
        gather<T, A>(vhead, plan.vrs, plan.len, tb, *cur, ahead, LP, acc.data());
      T* o = a.out + (n * g.Lq + q) * MD + m * D;
      if (cur->nan_out) {
        for (int64_t d = 0; d < D; ++d) o[d] = static_cast<T>(std::numeric_limits<A>::quiet_NaN());
      } else {
        for (int64_t d = 0; d < D; ++d) o[d] = static_cast<T>(acc[d]);
      }
      std::swap(cur, nxt);
    }
  }
}

// ----------------------------------------------------------------- phase 2: backward

template <typename T>
struct BwdArgs {
  const T* value;                  // (N, S, M, D)
  const T* loc;                    // (N, Lq, M, L, P, 2)
  const T* attn;                   // (N, Lq, M, L, P)
  const T* grad_out;               // (N, Lq, M * D)
  T* grad_value;                   // (N, S, M, D), written directly when `direct`
  at::opmath_type<T>* workspace;   // (K, N, S, M, D) accumulation buffers otherwise
  bool direct;                     // one chunk per head and grad_value is the target
  T* grad_loc;                     // (N, Lq, M, L, P, 2)
  T* grad_attn;                    // (N, Lq, M, L, P)
  Geometry g;
  Plan plan;
  TaskQueue* queue;
};

// One corner row: u += g * row (lane-wise partial dot product), grow += c * g.
// NV > 0: exactly NV vectors per row with g held in registers; NV == 0: any length,
// with a scalar tail added to *tail.
template <int NV, typename VT, typename A>
STKIT_INLINE void dot_scatter_row(const VT* __restrict r, A* grow, A c,
                                  const typename Simd<A>::V* gv, const A* gr, int64_t len,
                                  typename Simd<A>::V& u, A* tail) {
  using V = typename Simd<A>::V;
  constexpr int W = Simd<A>::W;
  if constexpr (NV > 0) {
    for (int v = 0; v < NV; ++v) {
      u += gv[v] * load<VT, A>(r + v * W);
      store<A>(grow + v * W, load<A, A>(grow + v * W) + c * gv[v]);
    }
  } else {
    int64_t d = 0;
    for (; d + W <= len; d += W) {
      const V g = load<A, A>(gr + d);
      u += g * load<VT, A>(r + d);
      store<A>(grow + d, load<A, A>(grow + d) + c * g);
    }
    A s = 0;
    for (; d < len; ++d) {
      s += gr[d] * static_cast<A>(r[d]);
      grow[d] += c * gr[d];
    }
    *tail += s;
  }
}

// Phase 2 of the backward pass for one (query, head): fills U (slot-major: corner k of
// point j at slot k * LP + j, W lanes each) and tails, and scatters into grad rows.
// Value rows are vrs elements apart, grad rows grs (a head of value or its staged copy;
// grad_value itself, a workspace or a per-thread buffer).
template <int NV, int RS, typename VT, typename A>
STKIT_INLINE void dot_scatter(const VT* __restrict vbase, int64_t vrs_, A* gbase, int64_t grs_,
                              int64_t len, const PointTables<A>& tb, const QueryPoints<A>& qp,
                              const QueryPoints<A>* nxt, int64_t LP, const A* __restrict gr,
                              A* __restrict U, A* __restrict tails) {
  using V = typename Simd<A>::V;
  constexpr int W = Simd<A>::W;
  // RS > 0: value and grad rows are both RS elements apart (a staged head), known here.
  const int64_t vrs = RS > 0 ? RS : vrs_, grs = RS > 0 ? RS : grs_;
  V gv[NV > 0 ? NV : 1];
  if constexpr (NV > 0)
    for (int v = 0; v < NV; ++v) gv[v] = load<A, A>(gr + v * W);
  const int64_t vbytes = static_cast<int64_t>(len * sizeof(VT)), gbytes = len * sizeof(A);
  for (int64_t j = 0; j < LP; ++j) {
    prefetch_ahead<0, VT, A>(vbase, vrs, vbytes, tb, qp, nxt, LP, j);
    prefetch_ahead<1, A, A>(gbase, grs, gbytes, tb, qp, nxt, LP, j);
    if (!qp.fast[j]) continue;
    const int64_t r[4] = {qp.row[j], qp.row[j] + 1, qp.row[j] + tb.Wi[j], qp.row[j] + tb.Wi[j] + 1};
    const A c[4] = {qp.c0[j], qp.c1[j], qp.c2[j], qp.c3[j]};
    for (int k = 0; k < 4; ++k) {
      V u{};
      dot_scatter_row<NV, VT, A>(vbase + r[k] * vrs, gbase + r[k] * grs, c[k], gv, gr, len, u,
                                 tails + k * LP + j);
      store<A>(U + (k * LP + j) * W, u);
    }
  }
  for (int64_t e = 0; e < qp.n_corners; ++e) {
    V u{};
    const int64_t r = qp.srow[e];
    dot_scatter_row<NV, VT, A>(vbase + r * vrs, gbase + r * grs, qp.cw[e], gv, gr, len, u,
                               tails + qp.slot[e]);
    store<A>(U + static_cast<int64_t>(qp.slot[e]) * W, u);
  }
}

// Per-thread scratch of the backward pass.
template <typename A>
struct BwdScratch {
  std::vector<A> gr;     // (len,) grad_out row of the query in A, zero padding
  std::vector<A> U;      // (4 * LP, W) lane partials per corner slot
  std::vector<A> tails;  // (4 * LP,) scalar tails (unpadded rows only)
  std::vector<A> s;      // (4 * LP,) dot products <grad_out, corner row>
  BwdScratch(int64_t len, int64_t LP)
      : gr(len, A(0)), U(4 * LP * Simd<A>::W), tails(4 * LP), s(4 * LP) {}
};

template <int NV, typename T, typename VT>
STKIT_INLINE void backward_queries(const BwdArgs<T>& a, int64_t n, int64_t m, int64_t q0,
                                   int64_t q1, const VT* vhead, at::opmath_type<T>* ghead,
                                   const PointTables<at::opmath_type<T>>& tb,
                                   QueryPoints<at::opmath_type<T>>& qp_a,
                                   QueryPoints<at::opmath_type<T>>& qp_b,
                                   BwdScratch<at::opmath_type<T>>& sc) {
  using A = at::opmath_type<T>;
  constexpr int W = Simd<A>::W;
  const Geometry& g = a.g;
  const Plan& plan = a.plan;
  const int64_t D = g.D, MD = g.M * g.D, LP = g.L * g.P, len = plan.len;
  A* __restrict s = sc.s.data();
  A* __restrict tails = sc.tails.data();
  // Each query is resolved one query early, so that phase 2 of the one before can
  // prefetch its first rows.
  QueryPoints<A> *cur = &qp_a, *nxt = &qp_b;
  if (q0 < q1) resolve_query<T, A>(a.loc, a.attn, g, n, m, q0, q1, tb, *cur);
  for (int64_t q = q0; q < q1; ++q) {
    const T* go = a.grad_out + (n * g.Lq + q) * MD + m * D;
    const int64_t i0 = ((n * g.Lq + q) * g.M + m) * LP;
    const bool more = q + 1 < q1;
    if (more) resolve_query<T, A>(a.loc, a.attn, g, n, m, q + 1, q1, tb, *nxt);
    if (q + kQueryAhead < q1) {
      const int64_t ia = i0 + kQueryAhead * g.M * LP;
      prefetch_bytes<0>(go + kQueryAhead * MD, D * sizeof(T));
      prefetch_bytes<1>(a.grad_loc + 2 * ia, 2 * LP * sizeof(T));
      prefetch_bytes<1>(a.grad_attn + ia, LP * sizeof(T));
    }
    for (int64_t d = 0; d < D; ++d) sc.gr[d] = static_cast<A>(go[d]);  // padding stays 0
    const QueryPoints<A>& qp = *cur;
    // Slots of slow points may be left unwritten by phase 2: clear them (and all tails),
    // with vector stores (std::fill_n of one vector became a memset call: a tenth of
    // shape B's backward).
    for (int64_t e = 0; e < qp.n_slow; ++e)
      for (int k = 0; k < 4; ++k)
        store<A>(sc.U.data() + (k * LP + qp.slow[e]) * W, typename Simd<A>::V{});
    if (NV == 0) std::fill(sc.tails.begin(), sc.tails.end(), A(0));
    if (NV > 0 && plan.stage)
      dot_scatter<NV, NV * W, VT, A>(vhead, plan.vrs, ghead, plan.grs, len, tb, qp,
                                     more ? nxt : nullptr, LP, sc.gr.data(), sc.U.data(), tails);
    else
      dot_scatter<NV, 0, VT, A>(vhead, plan.vrs, ghead, plan.grs, len, tb, qp,
                                more ? nxt : nullptr, LP, sc.gr.data(), sc.U.data(), tails);
    lane_sums<A>(sc.U.data(), 4 * LP, s);
    if (NV == 0)
      for (int64_t e = 0; e < 4 * LP; ++e) s[e] += tails[e];
    // Phase 3: d out / d weight = sample = sum_k bilinear_k * s_k; d / d loc from the
    // derivatives of the bilinear weights (missing corners have s_k = 0).
    const A* __restrict s0 = s;
    const A* __restrict s1 = s + LP;
    const A* __restrict s2 = s + 2 * LP;
    const A* __restrict s3 = s + 3 * LP;
    T* __restrict gattn = a.grad_attn + i0;
    T* __restrict gloc = a.grad_loc + 2 * i0;
    for (int64_t j = 0; j < LP; ++j) {
      const A ax = qp.fx[j], ay = qp.fy[j], bx = A(1) - ax, by = A(1) - ay, w = qp.w[j];
      gattn[j] = static_cast<T>(by * (bx * s0[j] + ax * s1[j]) + ay * (bx * s2[j] + ax * s3[j]));
      gloc[2 * j] = static_cast<T>(w * tb.Wf[j] * (by * (s1[j] - s0[j]) + ay * (s3[j] - s2[j])));
      gloc[2 * j + 1] =
          static_cast<T>(w * tb.Hf[j] * (bx * (s2[j] - s0[j]) + ax * (s3[j] - s1[j])));
    }
    for (int64_t e = 0; e < qp.n_slow; ++e) {  // outside (or non-finite): zero gradients
      if (qp.slow_inside[e]) continue;
      const int64_t j = qp.slow[e];
      gattn[j] = T(0);
      gloc[2 * j] = T(0);
      gloc[2 * j + 1] = T(0);
    }
    std::swap(cur, nxt);
  }
}

template <typename T, typename VT>
STKIT_INLINE void backward_head(const BwdArgs<T>& a, int64_t n, int64_t m, int64_t q0,
                                int64_t q1, const VT* vhead, at::opmath_type<T>* ghead,
                                const PointTables<at::opmath_type<T>>& tb,
                                QueryPoints<at::opmath_type<T>>& qp_a,
                                QueryPoints<at::opmath_type<T>>& qp_b,
                                BwdScratch<at::opmath_type<T>>& sc) {
  constexpr int W = Simd<at::opmath_type<T>>::W;
  const int64_t len = a.plan.len;
  // Compile-time vector counts for the common channel widths; any other width loops.
  switch (len % W == 0 ? len / W : 0) {
    case 1: backward_queries<1, T, VT>(a, n, m, q0, q1, vhead, ghead, tb, qp_a, qp_b, sc);
      break;
    case 2: backward_queries<2, T, VT>(a, n, m, q0, q1, vhead, ghead, tb, qp_a, qp_b, sc);
      break;
    case 4: backward_queries<4, T, VT>(a, n, m, q0, q1, vhead, ghead, tb, qp_a, qp_b, sc);
      break;
    default: backward_queries<0, T, VT>(a, n, m, q0, q1, vhead, ghead, tb, qp_a, qp_b, sc);
      break;
  }
}

// Copy a head's grad rows from a per-thread buffer (rows len apart; in the bordered
// layout when b is given, its border dropped) to dst (rows `stride` apart) as OT.
template <typename OT, typename A>
STKIT_INLINE void write_rows(const A* __restrict src, int64_t len, const Bordered* b,
                             const Geometry& g, OT* __restrict dst, int64_t stride) {
  for (int64_t l = 0; l < g.L; ++l) {
    const int64_t H = g.hw[2 * l], Wd = g.hw[2 * l + 1];
    for (int64_t y = 0; y < H; ++y) {
      const A* r = src + (b ? b->pixel(g, l, y) : g.start[l] + y * Wd) * len;
      OT* o = dst + (g.start[l] + y * Wd) * stride;
      for (int64_t x = 0; x < Wd; ++x)
        for (int64_t d = 0; d < g.D; ++d) o[x * stride + d] = static_cast<OT>(r[x * len + d]);
    }
  }
}

template <typename T>
STKIT_INLINE void backward_tasks(const BwdArgs<T>& a) {
  using A = at::opmath_type<T>;
  const Geometry& g = a.g;
  const Plan& plan = a.plan;
  const int64_t K = plan.chunks, D = g.D, MD = g.M * g.D, LP = g.L * g.P;
  const int64_t LPW = (LP + Simd<A>::W - 1) / Simd<A>::W * Simd<A>::W;  // padded
  // Scratch first (all that may throw), then tasks; a helper that woke late claims
  // nothing and never touches the tensors.
  const Bordered bordered(g);
  const Bordered* layout = plan.stage ? &bordered : nullptr;  // of the per-thread rows
  const PointTables<A> tb(g, LPW, layout);
  QueryPoints<A> qp(LP, LPW), qp_next(LP, LPW);  // one query's points and the next's
  BwdScratch<A> sc(plan.len, LP);
  const int64_t SL = (plan.stage ? bordered.rows : g.S) * plan.len;  // per-thread buffer
  A* staged = plan.stage ? thread_buffer<A>(0, SL) : nullptr;
  A* local = plan.local ? thread_buffer<A>(1, SL) : nullptr;  // grad rows, like staged
  int64_t staged_head = -1;
  for (int64_t t = a.queue->claim(); t < a.queue->n; t = a.queue->claim()) {
    const int64_t chunk = t % K, nm = t / K, m = nm % g.M, n = nm / g.M;
    const int64_t q0 = g.Lq * chunk / K, q1 = g.Lq * (chunk + 1) / K;
    const int64_t head = n * g.S * MD + m * D;  // offset of [n, 0, m, 0]
    A* ws = a.direct ? nullptr : a.workspace + chunk * g.N * g.S * MD + head;
    if (plan.local) {
      std::fill_n(local, SL, A(0));
      if (plan.stage) {
        if (staged_head != nm)
          stage_head<T, A>(a.value + head, MD, staged, g, bordered, plan.len);
        staged_head = nm;
        backward_head<T, A>(a, n, m, q0, q1, staged, local, tb, qp, qp_next, sc);
      } else {
        backward_head<T, T>(a, n, m, q0, q1, a.value + head, local, tb, qp, qp_next, sc);
      }
      // This task is the only writer of its (chunk, n, m) slice: plain stores.
      if (a.direct)
        write_rows<T, A>(local, plan.len, layout, g, a.grad_value + head, MD);
      else
        write_rows<A, A>(local, plan.len, layout, g, ws, MD);
    } else {
      // Accumulate in place: into grad_value itself or this chunk's workspace slice,
      // zeroed here by its only writer (no fork-join fill before the tasks).
      A* gv = ws;
      if constexpr (std::is_same_v<T, A>)
        if (a.direct) gv = a.grad_value + head;
      zero_rows<A>(gv, g.S, D, MD);
      backward_head<T, T>(a, n, m, q0, q1, a.value + head, gv, tb, qp, qp_next, sc);
    }
  }
}

// Non-template, per-dtype entry points: the unit that gets SIMD clones.
#define STKIT_DEFINE_WORKERS(T, SUFFIX)                                                    \
  STKIT_SIMD_CLONES void forward_tasks_##SUFFIX(const FwdArgs<T>& a) { forward_tasks<T>(a); } \
  STKIT_SIMD_CLONES void backward_tasks_##SUFFIX(const BwdArgs<T>& a) {                     \
    backward_tasks<T>(a);                                                                 \
  }                                                                                       \
  inline void run_tasks(const FwdArgs<T>& a) { forward_tasks_##SUFFIX(a); }               \
  inline void run_tasks(const BwdArgs<T>& a) { backward_tasks_##SUFFIX(a); }

STKIT_DEFINE_WORKERS(float, f32)
STKIT_DEFINE_WORKERS(double, f64)
STKIT_DEFINE_WORKERS(c10::Half, f16)
STKIT_DEFINE_WORKERS(c10::BFloat16, bf16)
#undef STKIT_DEFINE_WORKERS

// Runs the tasks on plan.workers threads of ATen's intra-op pool (the caller among
// them), each claiming tasks until none are left. These are the threads every other CPU
// op uses, so right after one (a linear layer, the reference) they are awake and start
// at once; helpers of a separate pool sleep between calls, and waking one on this
// 2-core virtual machine took as long as a decoder-sized call (measured: shape B forward
// calls alternated between 0.5 and 0.83 ms with ATen's inter-op pool as helpers, and
// ran at 0.83 ms for the first ~10 ms after an intra-op region, whose threads spin then).
// An exception in one thread is rethrown here once all have finished.
template <typename Args>
void run_parallel(Args a) {
  TaskQueue queue;
  queue.n = a.g.N * a.g.M * a.plan.chunks;
  a.queue = &queue;
  if (a.plan.workers > 1)
    at::parallel_for(0, a.plan.workers, 1, [&](int64_t, int64_t) { run_tasks(a); });
  else
    run_tasks(a);
}

// ------------------------------------------------------------------------ validation

// Checks shapes, dtypes and the level tables; returns int64 CPU copies of the tables.
// Bounds are checked here so that the kernel can never read outside value.
Geometry check_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes,
                      const at::Tensor& level_start_index, const at::Tensor& sampling_loc,
                      const at::Tensor& attn_weight) {
  TORCH_CHECK(value.dim() == 4, "ms_deform_attn: value must be (N, S, M, D), got shape ",
              value.sizes());
  TORCH_CHECK(sampling_loc.dim() == 6 && sampling_loc.size(5) == 2,
              "ms_deform_attn: sampling_loc must be (N, Lq, M, L, P, 2), got shape ",
              sampling_loc.sizes());
  TORCH_CHECK(attn_weight.dim() == 5,
              "ms_deform_attn: attn_weight must be (N, Lq, M, L, P), got shape ",
              attn_weight.sizes());
  TORCH_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(1) == 2,
              "ms_deform_attn: spatial_shapes must be (L, 2), got shape ", spatial_shapes.sizes());
  TORCH_CHECK(level_start_index.dim() == 1,
              "ms_deform_attn: level_start_index must be (L,), got shape ",
              level_start_index.sizes());
  TORCH_CHECK(!at::isFloatingType(spatial_shapes.scalar_type()) &&
                  !at::isFloatingType(level_start_index.scalar_type()),
              "ms_deform_attn: spatial_shapes and level_start_index must be integer tensors");
  TORCH_CHECK(at::isFloatingType(value.scalar_type()),
              "ms_deform_attn: value must be a floating-point tensor, got ", value.scalar_type());
  TORCH_CHECK(sampling_loc.scalar_type() == value.scalar_type() &&
                  attn_weight.scalar_type() == value.scalar_type(),
              "ms_deform_attn: value, sampling_loc and attn_weight must share a dtype, got ",
              value.scalar_type(), ", ", sampling_loc.scalar_type(), ", ",
              attn_weight.scalar_type());
  Geometry g;
  g.N = value.size(0);
  g.S = value.size(1);
  g.M = value.size(2);
  g.D = value.size(3);
  g.Lq = sampling_loc.size(1);
  g.L = sampling_loc.size(3);
  g.P = sampling_loc.size(4);
  TORCH_CHECK(sampling_loc.size(0) == g.N && sampling_loc.size(2) == g.M,
              "ms_deform_attn: sampling_loc ", sampling_loc.sizes(),
              " does not match value (N, S, M, D) = ", value.sizes());
  TORCH_CHECK(attn_weight.sizes() == sampling_loc.sizes().slice(0, 5),
              "ms_deform_attn: attn_weight ", attn_weight.sizes(),
              " must equal sampling_loc's first five sizes ", sampling_loc.sizes());
  TORCH_CHECK(spatial_shapes.size(0) == g.L && level_start_index.size(0) == g.L,
              "ms_deform_attn: sampling_loc has L=", g.L, " levels but spatial_shapes has ",
              spatial_shapes.size(0), " and level_start_index has ", level_start_index.size(0));
  const at::Tensor shapes_i64 = spatial_shapes.to(at::kCPU, at::kLong).contiguous();
  const at::Tensor starts_i64 = level_start_index.to(at::kCPU, at::kLong).contiguous();
  g.hw.assign(shapes_i64.const_data_ptr<int64_t>(), shapes_i64.const_data_ptr<int64_t>() + 2 * g.L);
  g.start.assign(starts_i64.const_data_ptr<int64_t>(),
                 starts_i64.const_data_ptr<int64_t>() + g.L);
  int64_t expected_start = 0;
  for (int64_t l = 0; l < g.L; ++l) {
    const int64_t H = g.hw[2 * l], W = g.hw[2 * l + 1];
    TORCH_CHECK(H >= 1 && W >= 1, "ms_deform_attn: spatial_shapes[", l, "] = (", H, ", ", W,
                ") must be positive");
    TORCH_CHECK(g.start[l] == expected_start, "ms_deform_attn: level_start_index[", l,
                "] = ", g.start[l], " but the levels before it hold ", expected_start, " rows");
    expected_start += H * W;
  }
  // Rows are indexed in int32, a staged head's (with the border of Bordered) too.
  TORCH_CHECK(Bordered(g).rows < std::numeric_limits<int32_t>::max(),
              "ms_deform_attn: S=", g.S, " rows is more than the kernel indexes");
  TORCH_CHECK(expected_start == g.S, "ms_deform_attn: value has S=", g.S,
              " rows but spatial_shapes sum to ", expected_start);
  return g;
}

}  // namespace

// ------------------------------------------------------------------------ entry points

at::Tensor ms_deform_attn_cpu_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index,
                                      const at::Tensor& sampling_loc,
                                      const at::Tensor& attn_weight) {
  TORCH_CHECK(value.device().is_cpu() && sampling_loc.device().is_cpu() &&
                  attn_weight.device().is_cpu(),
              "ms_deform_attn_cpu_forward: all tensors must be on the CPU");
  const Geometry g = check_inputs(value, spatial_shapes, level_start_index, sampling_loc,
                                  attn_weight);
  const at::Tensor v = value.contiguous(), loc = sampling_loc.contiguous(),
                   w = attn_weight.contiguous();
  at::Tensor out = at::empty({g.N, g.Lq, g.M * g.D}, value.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(),
                                  "ms_deform_attn_cpu_forward", [&] {
    using A = at::opmath_type<scalar_t>;
    const Plan plan = plan_for<scalar_t>(g);
    const FwdArgs<scalar_t> a{v.const_data_ptr<scalar_t>(), loc.const_data_ptr<scalar_t>(),
                              w.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
                              g, plan, nullptr};
    run_parallel(a);
  });
  return out;
}

std::vector<at::Tensor> ms_deform_attn_cpu_backward(const at::Tensor& value,
                                                    const at::Tensor& spatial_shapes,
                                                    const at::Tensor& level_start_index,
                                                    const at::Tensor& sampling_loc,
                                                    const at::Tensor& attn_weight,
                                                    const at::Tensor& grad_output) {
  TORCH_CHECK(value.device().is_cpu() && sampling_loc.device().is_cpu() &&
                  attn_weight.device().is_cpu() && grad_output.device().is_cpu(),
              "ms_deform_attn_cpu_backward: all tensors must be on the CPU");
  const Geometry g = check_inputs(value, spatial_shapes, level_start_index, sampling_loc,
                                  attn_weight);
  TORCH_CHECK(grad_output.dim() == 3 && grad_output.size(0) == g.N &&
                  grad_output.size(1) == g.Lq && grad_output.size(2) == g.M * g.D,
              "ms_deform_attn: grad_output must be (N, Lq, M*D) = (", g.N, ", ", g.Lq, ", ",
              g.M * g.D, "), got ", grad_output.sizes());
  TORCH_CHECK(grad_output.scalar_type() == value.scalar_type(),
              "ms_deform_attn: grad_output dtype ", grad_output.scalar_type(),
              " differs from value dtype ", value.scalar_type());
  const at::Tensor v = value.contiguous(), loc = sampling_loc.contiguous(),
                   w = attn_weight.contiguous(), go = grad_output.contiguous();
  at::Tensor grad_loc = at::empty_like(loc);
  at::Tensor grad_attn = at::empty_like(w);
  at::Tensor grad_value;
  const bool reduced = value.scalar_type() == at::kHalf || value.scalar_type() == at::kBFloat16;
  const bool work = v.numel() > 0 && loc.numel() > 0;
  if (!work) {  // degenerate sizes (D = 0, no queries or no points): nothing flows
    grad_loc.zero_();
    grad_attn.zero_();
    return {at::zeros_like(v), grad_loc, grad_attn};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(),
                                  "ms_deform_attn_cpu_backward", [&] {
    using A = at::opmath_type<scalar_t>;
    const Plan plan = plan_for<scalar_t>(g);
    // Where grad_value lands: straight into the result when there is one chunk per head
    // and either a local buffer (each head written out once) or no rounding is involved;
    // otherwise into K float/double buffers that are summed and rounded at the end.
    // Each task zeroes or overwrites its whole head slice, so nothing is filled here.
    const bool direct = plan.chunks == 1 && (plan.local || !reduced);
    at::Tensor ws;
    grad_value = at::empty_like(v);
    if (!direct) {
      const auto opts = v.options().dtype(c10::CppTypeToScalarType<A>::value);
      ws = at::empty({plan.chunks, g.N, g.S, g.M, g.D}, opts);
    }
    const BwdArgs<scalar_t> a{v.const_data_ptr<scalar_t>(),
                              loc.const_data_ptr<scalar_t>(),
                              w.const_data_ptr<scalar_t>(),
                              go.const_data_ptr<scalar_t>(),
                              grad_value.mutable_data_ptr<scalar_t>(),
                              direct ? nullptr : ws.mutable_data_ptr<A>(),
                              direct,
                              grad_loc.mutable_data_ptr<scalar_t>(),
                              grad_attn.mutable_data_ptr<scalar_t>(),
                              g,
                              plan,
                              nullptr};
    run_parallel(a);
    if (!direct) {
      // Sum the K buffers and round to the value dtype (on this thread: a fork-join
      // region would wait for every pool thread to be scheduled on a busy machine).
      const A* src = ws.const_data_ptr<A>();
      scalar_t* dst = grad_value.mutable_data_ptr<scalar_t>();
      const int64_t E = v.numel(), K = plan.chunks;
      for (int64_t j = 0; j < E; ++j) {
        A s = src[j];
        for (int64_t k = 1; k < K; ++k) s += src[k * E + j];
        dst[j] = static_cast<scalar_t>(s);
      }
    }
  });
  return {grad_value, grad_loc, grad_attn};
}

std::string ms_deform_attn_cpu_info() {
  std::string simd = "portable loops";
#if STKIT_HAS_CLONES
  __builtin_cpu_init();
  if (__builtin_cpu_supports("x86-64-v4"))
    simd = "x86-64-v4 (AVX-512) clone";
  else if (__builtin_cpu_supports("x86-64-v3"))
    simd = "x86-64-v3 (AVX2+FMA) clone";
  else
    simd = "baseline x86-64 clone";
#endif
  return "simd=" + simd + ", threads=" + std::to_string(at::get_num_threads());
}

std::string ms_deform_attn_cpu_plan(int64_t N, int64_t S, int64_t M, int64_t D, int64_t Lq,
                                    int64_t L, int64_t P, c10::ScalarType dtype) {
  TORCH_CHECK(N >= 0 && S >= 0 && M >= 0 && D >= 0 && Lq >= 0 && L >= 0 && P >= 0,
              "ms_deform_attn_cpu_plan: sizes must be non-negative");
  Geometry g;
  g.N = N, g.S = S, g.M = M, g.D = D, g.Lq = Lq, g.L = L, g.P = P;
  std::string out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "ms_deform_attn_cpu_plan",
                                  [&] { out = describe(plan_for<scalar_t>(g)); });
  return out;
}

// Multi-scale deformable attention: CUDA forward and backward.
//
// Design (details and reasoning in cuda_ops/CUDA.md):
//   * A *group* of G threads (G a power of two, 1..32, never straddling a warp) handles
//     one (n, q, m) triple and one slab of channels; each thread owns V consecutive
//     channels (V * sizeof(scalar) <= 16 bytes), so every corner read of a value row is
//     one 2/4/8/16-byte load per thread and one contiguous segment per group.
//   * The L*P sampling points are processed in rounds of R = min(G, 8) points: lane k of
//     the group loads the location and weight of point k (coalesced), computes the
//     bilinear corners once and publishes them in shared memory; after __syncwarp every
//     lane gathers its channels for all R points.
//   * Level shapes are validated once per block and kept in shared memory.
//   * Accumulation is in float (double for float64 inputs).
//   * Backward: grad_value by atomics (float4/float2 vector atomics on sm_90+) into a
//     float/double buffer; the four per-corner dot products <grad_out, value_corner>
//     are reduced over the group through shared memory by the lane that owns the point,
//     which then derives grad_attn and grad_loc without any atomics (unless D needs more
//     than one slab).
#include "ms_deform_attn.h"

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <initializer_list>
#include <type_traits>
#include <vector>

namespace {

constexpr int kFwdThreads = 256;  // threads per block, forward
constexpr int kBwdThreads = 128;  // threads per block, backward (more shared memory per thread)
// Resident threads per SM of the architecture being compiled (the host pass takes the
// largest; launch bounds only matter to the device passes).
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ == 750)
constexpr int kMaxThreadsPerSM = 1024;
#elif defined(__CUDA_ARCH__) && (__CUDA_ARCH__ == 860 || __CUDA_ARCH__ == 870 || \
                                 __CUDA_ARCH__ == 890 || __CUDA_ARCH__ >= 1200)
constexpr int kMaxThreadsPerSM = 1536;
#else
constexpr int kMaxThreadsPerSM = 2048;
#endif

constexpr int min_blocks(int threads, int wanted) {
  return wanted * threads <= kMaxThreadsPerSM ? wanted : kMaxThreadsPerSM / threads;
}

// Resident blocks per SM requested from the register allocator. On sm_80/sm_90: forward
// <= 40 registers (75% occupancy), backward <= 64 (50%) for 32/16-bit types; float64 gets
// more room.
template <typename T>
constexpr int kFwdMinBlocks = min_blocks(kFwdThreads, sizeof(T) == 8 ? 4 : 6);
template <typename T>
constexpr int kBwdMinBlocks = min_blocks(kBwdThreads, sizeof(T) == 8 ? 6 : 8);
constexpr int kMaxRound = 8;      // sampling points published per round (R <= kMaxRound)
constexpr int kMaxVecBytes = 16;  // widest load per thread

// ---------------------------------------------------------------------------------------
// Element traits: raw bit pattern <-> accumulation type. Conversions use intrinsics only,
// so the file builds with torch's -D__CUDA_NO_HALF_CONVERSIONS__ family of flags.
// ---------------------------------------------------------------------------------------
template <typename T>
struct ElemTraits;

template <>
struct ElemTraits<float> {
  using acc_t = float;
  using bits_t = unsigned int;
  __device__ __forceinline__ static acc_t to_acc(bits_t b) { return __uint_as_float(b); }
  __device__ __forceinline__ static bits_t from_acc(acc_t x) { return __float_as_uint(x); }
};

template <>
struct ElemTraits<double> {
  using acc_t = double;
  using bits_t = unsigned long long;
  __device__ __forceinline__ static acc_t to_acc(bits_t b) {
    return __longlong_as_double(static_cast<long long>(b));
  }
  __device__ __forceinline__ static bits_t from_acc(acc_t x) {
    return static_cast<bits_t>(__double_as_longlong(x));
  }
};

template <>
struct ElemTraits<c10::Half> {
  using acc_t = float;
  using bits_t = unsigned short;
  __device__ __forceinline__ static acc_t to_acc(bits_t b) {
    return __half2float(__ushort_as_half(b));
  }
  __device__ __forceinline__ static bits_t from_acc(acc_t x) {
    return __half_as_ushort(__float2half_rn(x));
  }
};

template <>
struct ElemTraits<c10::BFloat16> {
  using acc_t = float;
  using bits_t = unsigned short;
  // bfloat16 is the upper half of a float32: widening is exact and needs no intrinsic.
  __device__ __forceinline__ static acc_t to_acc(bits_t b) {
    return __uint_as_float(static_cast<unsigned int>(b) << 16);
  }
  __device__ __forceinline__ static bits_t from_acc(acc_t x) {
    return __bfloat16_as_ushort(__float2bfloat16_rn(x));
  }
};

template <typename T>
using acc_type = typename ElemTraits<T>::acc_t;

// Read-only scalar load (through the non-coherent cache), converted to the accumulator.
template <typename T>
__device__ __forceinline__ acc_type<T> load_scalar(const T* p) {
  using bits_t = typename ElemTraits<T>::bits_t;
  static_assert(sizeof(bits_t) == sizeof(T), "bit container must match the element size");
  return ElemTraits<T>::to_acc(__ldg(reinterpret_cast<const bits_t*>(p)));
}

template <typename T>
__device__ __forceinline__ void store_scalar(T* p, acc_type<T> x) {
  using bits_t = typename ElemTraits<T>::bits_t;
  *reinterpret_cast<bits_t*>(p) = ElemTraits<T>::from_acc(x);
}

// One load/store of 2, 4, 8 or 16 bytes, seen as 32-bit words (little-endian: element 0 sits
// in the low bits of word 0). Elements are extracted with shifts, not through a union or
// an array of 16-bit values, so that everything stays in registers.
template <int kBytes>
struct RawWord;
template <>
struct RawWord<2> {
  using type = unsigned short;
  static constexpr int kWords = 1;
  __device__ __forceinline__ static type zero() { return 0; }
  __device__ __forceinline__ static void split(type r, unsigned (&w)[1]) { w[0] = r; }
  __device__ __forceinline__ static type join(const unsigned (&w)[1]) {
    return static_cast<type>(w[0]);
  }
};
template <>
struct RawWord<4> {
  using type = unsigned int;
  static constexpr int kWords = 1;
  __device__ __forceinline__ static type zero() { return 0u; }
  __device__ __forceinline__ static void split(type r, unsigned (&w)[1]) { w[0] = r; }
  __device__ __forceinline__ static type join(const unsigned (&w)[1]) { return w[0]; }
};
template <>
struct RawWord<8> {
  using type = uint2;
  static constexpr int kWords = 2;
  __device__ __forceinline__ static type zero() { return make_uint2(0u, 0u); }
  __device__ __forceinline__ static void split(type r, unsigned (&w)[2]) {
    w[0] = r.x;
    w[1] = r.y;
  }
  __device__ __forceinline__ static type join(const unsigned (&w)[2]) {
    return make_uint2(w[0], w[1]);
  }
};
template <>
struct RawWord<16> {
  using type = uint4;
  static constexpr int kWords = 4;
  __device__ __forceinline__ static type zero() { return make_uint4(0u, 0u, 0u, 0u); }
  __device__ __forceinline__ static void split(type r, unsigned (&w)[4]) {
    w[0] = r.x;
    w[1] = r.y;
    w[2] = r.z;
    w[3] = r.w;
  }
  __device__ __forceinline__ static type join(const unsigned (&w)[4]) {
    return make_uint4(w[0], w[1], w[2], w[3]);
  }
};

// V consecutive elements moved as one aligned word and converted element-wise.
template <typename T, int V>
struct Pack {
  using Tr = ElemTraits<T>;
  using acc_t = typename Tr::acc_t;
  using bits_t = typename Tr::bits_t;
  static constexpr int kBytes = static_cast<int>(sizeof(T)) * V;
  static_assert(kBytes <= kMaxVecBytes, "vector wider than 16 bytes");
  using RW = RawWord<kBytes>;
  using raw_t = typename RW::type;
  static constexpr int kWords = RW::kWords;

  __device__ __forceinline__ static bits_t element(const unsigned (&w)[kWords], int i) {
    if constexpr (sizeof(T) == 8) {
      return (static_cast<bits_t>(w[2 * i + 1]) << 32) | static_cast<bits_t>(w[2 * i]);
    } else if constexpr (sizeof(T) == 4) {
      return static_cast<bits_t>(w[i]);
    } else {
      return static_cast<bits_t>(w[i / 2] >> (16 * (i % 2)));
    }
  }

  // p must be aligned to kBytes (checked on the host when V is chosen). The raw word is
  // what a gather keeps in flight: V elements in kBytes / 4 registers (all-zero bits are
  // 0.0 in every supported type), converted only when consumed.
  __device__ __forceinline__ static raw_t load_raw(const T* p) {
    return __ldg(reinterpret_cast<const raw_t*>(p));
  }
  __device__ __forceinline__ static raw_t zero_raw() { return RW::zero(); }

  __device__ __forceinline__ static void unpack(raw_t r, acc_t (&out)[V]) {
    unsigned w[kWords];
    RW::split(r, w);
#pragma unroll
    for (int i = 0; i < V; ++i) out[i] = Tr::to_acc(element(w, i));
  }

  __device__ __forceinline__ static void load(const T* p, acc_t (&out)[V]) {
    unpack(load_raw(p), out);
  }

  __device__ __forceinline__ static void store(T* p, const acc_t (&in)[V]) {
    unsigned w[kWords];
#pragma unroll
    for (int k = 0; k < kWords; ++k) w[k] = 0u;
#pragma unroll
    for (int i = 0; i < V; ++i) {
      const bits_t b = Tr::from_acc(in[i]);
      if constexpr (sizeof(T) == 8) {
        w[2 * i] = static_cast<unsigned>(b);
        w[2 * i + 1] = static_cast<unsigned>(b >> 32);
      } else if constexpr (sizeof(T) == 4) {
        w[i] = static_cast<unsigned>(b);
      } else {
        w[i / 2] |= static_cast<unsigned>(b) << (16 * (i % 2));
      }
    }
    *reinterpret_cast<raw_t*>(p) = RW::join(w);
  }
};

// dst[i] += x[i] for i < V; dst aligned to V * sizeof(float).
template <int V>
__device__ __forceinline__ void atomic_add_vec(float* dst, const float (&x)[V]) {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
  if constexpr (V % 4 == 0) {
#pragma unroll
    for (int i = 0; i < V; i += 4)
      atomicAdd(reinterpret_cast<float4*>(dst + i), make_float4(x[i], x[i + 1], x[i + 2], x[i + 3]));
  } else if constexpr (V % 2 == 0) {
#pragma unroll
    for (int i = 0; i < V; i += 2)
      atomicAdd(reinterpret_cast<float2*>(dst + i), make_float2(x[i], x[i + 1]));
  } else {
#pragma unroll
    for (int i = 0; i < V; ++i) atomicAdd(dst + i, x[i]);
  }
#else
#pragma unroll
  for (int i = 0; i < V; ++i) atomicAdd(dst + i, x[i]);
#endif
}

template <int V>
__device__ __forceinline__ void atomic_add_vec(double* dst, const double (&x)[V]) {
#pragma unroll
  for (int i = 0; i < V; ++i) atomicAdd(dst + i, x[i]);
}

__device__ __forceinline__ float floor_acc(float x) { return floorf(x); }
__device__ __forceinline__ double floor_acc(double x) { return floor(x); }

// ---------------------------------------------------------------------------------------
// Geometry of one sampling point.
// ---------------------------------------------------------------------------------------
template <typename acc_t>
struct Corners {
  acc_t w[4];  // bilinear weights of (y0,x0), (y0,x0+1), (y0+1,x0), (y0+1,x0+1)
  int row[4];  // value row of each corner, -1 when outside the level
  acc_t lh, lw;  // fractional parts of the pixel coordinates
  bool valid;    // false: the point lies outside (or is NaN) and contributes nothing
};

// Level (H, W, start) must be validated (start + H*W <= S <= INT_MAX) so no int overflows.
template <typename acc_t>
__device__ __forceinline__ void locate(int H, int W, int start, acc_t loc_x, acc_t loc_y,
                                       Corners<acc_t>& c) {
  const acc_t h_im = loc_y * static_cast<acc_t>(H) - static_cast<acc_t>(0.5);
  const acc_t w_im = loc_x * static_cast<acc_t>(W) - static_cast<acc_t>(0.5);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    c.w[j] = acc_t(0);
    c.row[j] = -1;
  }
  c.lh = acc_t(0);
  c.lw = acc_t(0);
  // Written so that NaN (and +-inf) fail the test: such points are outside.
  c.valid = (h_im >= acc_t(-1)) && (w_im >= acc_t(-1)) && (h_im < static_cast<acc_t>(H)) &&
            (w_im < static_cast<acc_t>(W));
  if (!c.valid) return;
  const acc_t hf = floor_acc(h_im);  // in [-1, H-1]: the int conversion is exact
  const acc_t wf = floor_acc(w_im);
  const int y0 = static_cast<int>(hf);
  const int x0 = static_cast<int>(wf);
  const acc_t lh = h_im - hf;
  const acc_t lw = w_im - wf;
  const acc_t hh = acc_t(1) - lh;
  const acc_t hw = acc_t(1) - lw;
  c.lh = lh;
  c.lw = lw;
  c.w[0] = hh * hw;
  c.w[1] = hh * lw;
  c.w[2] = lh * hw;
  c.w[3] = lh * lw;
  const bool top = y0 >= 0;
  const bool bottom = y0 + 1 < H;
  const bool left = x0 >= 0;
  const bool right = x0 + 1 < W;
  const int base = start + y0 * W + x0;
  c.row[0] = (top && left) ? base : -1;
  c.row[1] = (top && right) ? base + 1 : -1;
  c.row[2] = (bottom && left) ? base + W : -1;
  c.row[3] = (bottom && right) ? base + W + 1 : -1;
}

// Location and attention weight of one point, fetched one round ahead by its owner lane so
// that the latency of these loads overlaps the previous round's gathers.
template <typename acc_t>
struct PointInput {
  acc_t x, y, a;
};

template <typename T>
__device__ __forceinline__ void fetch_point(const T* locp, const T* attp, int pt,
                                            PointInput<acc_type<T>>& in) {
  in.x = load_scalar(locp + 2 * pt);
  in.y = load_scalar(locp + 2 * pt + 1);
  in.a = load_scalar(attp + pt);
}

// What the owner lane of a point publishes to the rest of its group.
template <typename acc_t>
struct alignas(16) Slot {
  acc_t w[4];  // forward: attention * bilinear; backward: bilinear only
  int row[4];
  acc_t a;  // backward: attention weight
};

template <typename acc_t>
struct alignas(16) Acc4 {
  acc_t v[4];
};

template <typename T>
struct Params {
  const T* value;             // (N, S, M, D)
  const int64_t* shapes;      // (L, 2) on the device
  const int64_t* starts;      // (L,)   on the device
  const T* loc;               // (N, Lq, M, L, P, 2)
  const T* attn;              // (N, Lq, M, L, P)
  // forward
  T* out;                     // (N, Lq, M*D)
  // backward
  const T* grad_out;          // (N, Lq, M*D)
  acc_type<T>* grad_value;    // (N, S, M, D), accumulator type, zero-initialised
  T* grad_loc;                // direct stores (single slab), or nullptr
  T* grad_attn;
  acc_type<T>* grad_loc_acc;  // atomics (several slabs), zero-initialised, or nullptr
  acc_type<T>* grad_attn_acc;
  int64_t groups;             // N * Lq * M
  int S, M, D, Lq, L, P;
  int G, log2G, R;            // lanes per group, log2(G), points per round
  int level_bytes;            // shared bytes for the level table (16-aligned)
  int slot_stride;            // shared bytes of one group's slots (padded)
  int part_stride;            // shared bytes of one group's partial sums (backward)
};

// Loads and validates the level table into shared memory: H, W, start per level. A level
// whose rows would fall outside [0, S) is treated as empty (every sample reads zero).
template <typename T>
__device__ __forceinline__ void load_levels(const Params<T>& p, int* lv) {
  const int64_t S = p.S;
  for (int i = threadIdx.x; i < p.L; i += blockDim.x) {
    const int64_t H = p.shapes[2 * i];
    const int64_t W = p.shapes[2 * i + 1];
    const int64_t st = p.starts[i];
    const bool ok = H >= 0 && W >= 0 && st >= 0 && H <= S && W <= S && st + H * W <= S;
    lv[3 * i + 0] = ok ? static_cast<int>(H) : 0;
    lv[3 * i + 1] = ok ? static_cast<int>(W) : 0;
    lv[3 * i + 2] = ok ? static_cast<int>(st) : 0;
  }
}

__device__ __forceinline__ unsigned group_mask(int G) {
  if (G >= 32) return 0xffffffffu;
  const int first = (threadIdx.x & 31) & ~(G - 1);
  return ((1u << G) - 1u) << first;
}

extern __shared__ __align__(16) unsigned char ms_deform_smem[];

// ---------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------
template <typename T, int V>
__global__ void __launch_bounds__(kFwdThreads, kFwdMinBlocks<T>)
ms_deform_attn_fwd_kernel(const Params<T> p) {
  using acc_t = acc_type<T>;
  using PK = Pack<T, V>;

  int* lv = reinterpret_cast<int*>(ms_deform_smem);
  load_levels(p, lv);
  __syncthreads();  // the only block-wide barrier; groups are independent afterwards

  const int G = p.G;
  const int R = p.R;
  const int group = threadIdx.x >> p.log2G;
  const int lane = threadIdx.x & (G - 1);
  const int64_t gid = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> p.log2G) + group;
  if (gid >= p.groups) return;  // the whole group leaves together
  const unsigned gmask = group_mask(G);

  Slot<acc_t>* slots = reinterpret_cast<Slot<acc_t>*>(ms_deform_smem + p.level_bytes +
                                                      group * p.slot_stride);
  const int m = static_cast<int>(gid % p.M);
  const int64_t n = gid / (static_cast<int64_t>(p.Lq) * p.M);
  const int c0 = (static_cast<int>(blockIdx.y) * G + lane) * V;  // first channel of this lane
  const bool chan_ok = c0 < p.D;  // D % V == 0, so c0 < D means all V channels exist
  const int MD = p.M * p.D;       // stride between value rows
  const int LP = p.L * p.P;
  const T* vbase = p.value + (n * p.S * p.M + m) * static_cast<int64_t>(p.D) + c0;
  const T* locp = p.loc + gid * LP * 2;
  const T* attp = p.attn + gid * LP;

  acc_t acc[V];
#pragma unroll
  for (int i = 0; i < V; ++i) acc[i] = acc_t(0);

  PointInput<acc_t> next{};
  if (lane < min(R, LP)) fetch_point(locp, attp, lane, next);
  for (int r0 = 0; r0 < LP; r0 += R) {
    const int cnt = min(R, LP - r0);
    if (lane < cnt) {
      const int pt = r0 + lane;
      const int l = pt / p.P;
      Corners<acc_t> c;
      locate(lv[3 * l], lv[3 * l + 1], lv[3 * l + 2], next.x, next.y, c);
      Slot<acc_t>& s = slots[lane];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        s.w[j] = c.w[j] * next.a;
        s.row[j] = c.row[j];
      }
    }
    __syncwarp(gmask);
    if (lane < min(R, LP - r0 - R)) fetch_point(locp, attp, r0 + R + lane, next);  // next round
    if (chan_ok) {
      // Two points in flight (8 corner loads) while a thread's accumulators stay <= 16 bytes.
      constexpr int kUnroll = sizeof(acc_t) * V <= 16 ? 2 : 1;
#pragma unroll kUnroll
      for (int k = 0; k < cnt; ++k) {
        const Slot<acc_t>& s = slots[k];
        int row[4];
        acc_t w[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          row[j] = s.row[j];
          w[j] = s.w[j];
        }
        // Issue the four corner loads before using any (memory-level parallelism); keep
        // them raw until consumed so that 16-bit types need half the registers.
        typename PK::raw_t raw[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          raw[j] = row[j] >= 0 ? PK::load_raw(vbase + static_cast<int64_t>(row[j]) * MD)
                               : PK::zero_raw();
        }
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          acc_t v[V];
          PK::unpack(raw[j], v);
#pragma unroll
          for (int i = 0; i < V; ++i) acc[i] = fma(w[j], v[i], acc[i]);
        }
      }
    }
    __syncwarp(gmask);  // slots are rewritten by the next round
  }
  if (chan_ok) PK::store(p.out + gid * p.D + c0, acc);
}

// ---------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------
template <typename T, int V>
__global__ void __launch_bounds__(kBwdThreads, kBwdMinBlocks<T>)
ms_deform_attn_bwd_kernel(const Params<T> p) {
  using acc_t = acc_type<T>;
  using PK = Pack<T, V>;

  int* lv = reinterpret_cast<int*>(ms_deform_smem);
  load_levels(p, lv);
  __syncthreads();

  const int G = p.G;
  const int R = p.R;
  const int group = threadIdx.x >> p.log2G;
  const int groups_per_block = blockDim.x >> p.log2G;
  const int lane = threadIdx.x & (G - 1);
  const int64_t gid = static_cast<int64_t>(blockIdx.x) * groups_per_block + group;
  if (gid >= p.groups) return;
  const unsigned gmask = group_mask(G);

  Slot<acc_t>* slots = reinterpret_cast<Slot<acc_t>*>(ms_deform_smem + p.level_bytes +
                                                      group * p.slot_stride);
  // part[k * (G + 1) + lane]: lane's four corner dot products for point k of the round.
  // The row stride G + 1 keeps the owner's column read free of bank conflicts.
  Acc4<acc_t>* part = reinterpret_cast<Acc4<acc_t>*>(
      ms_deform_smem + p.level_bytes + groups_per_block * p.slot_stride + group * p.part_stride);
  const int pstride = G + 1;

  const int m = static_cast<int>(gid % p.M);
  const int64_t n = gid / (static_cast<int64_t>(p.Lq) * p.M);
  const int c0 = (static_cast<int>(blockIdx.y) * G + lane) * V;
  const bool chan_ok = c0 < p.D;
  const int MD = p.M * p.D;
  const int LP = p.L * p.P;
  const int64_t vofs = (n * p.S * p.M + m) * static_cast<int64_t>(p.D) + c0;
  const T* vbase = p.value + vofs;
  acc_t* gvbase = p.grad_value + vofs;
  const T* locp = p.loc + gid * LP * 2;
  const T* attp = p.attn + gid * LP;

  acc_t g[V];
  if (chan_ok) {
    PK::load(p.grad_out + gid * p.D + c0, g);
  } else {
#pragma unroll
    for (int i = 0; i < V; ++i) g[i] = acc_t(0);
  }

  PointInput<acc_t> next{};
  if (lane < min(R, LP)) fetch_point(locp, attp, lane, next);
  for (int r0 = 0; r0 < LP; r0 += R) {
    const int cnt = min(R, LP - r0);
    // Owner lanes: geometry of point r0 + lane, kept in registers for the final step.
    Corners<acc_t> mine;
    acc_t my_a = acc_t(0);
    int my_H = 0, my_W = 0;
    if (lane < cnt) {
      const int pt = r0 + lane;
      const int l = pt / p.P;
      my_a = next.a;
      my_H = lv[3 * l];
      my_W = lv[3 * l + 1];
      locate(my_H, my_W, lv[3 * l + 2], next.x, next.y, mine);
      Slot<acc_t>& s = slots[lane];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        s.w[j] = mine.w[j];
        s.row[j] = mine.row[j];
      }
      s.a = my_a;
    }
    __syncwarp(gmask);
    if (lane < min(R, LP - r0 - R)) fetch_point(locp, attp, r0 + R + lane, next);  // next round

    for (int k = 0; k < cnt; ++k) {
      Acc4<acc_t> d;
#pragma unroll
      for (int j = 0; j < 4; ++j) d.v[j] = acc_t(0);
      if (chan_ok) {
        const Slot<acc_t>& s = slots[k];
        int row[4];
        acc_t w[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          row[j] = s.row[j];
          w[j] = s.w[j];
        }
        const acc_t a = s.a;
        typename PK::raw_t raw[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          raw[j] = row[j] >= 0 ? PK::load_raw(vbase + static_cast<int64_t>(row[j]) * MD)
                               : PK::zero_raw();
        }
        // The scatter does not depend on the loads: issue it while they are in flight.
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          if (row[j] >= 0) {
            const acc_t aw = a * w[j];
            acc_t add[V];
#pragma unroll
            for (int i = 0; i < V; ++i) add[i] = aw * g[i];
            atomic_add_vec<V>(gvbase + static_cast<int64_t>(row[j]) * MD, add);
          }
        }
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          acc_t v[V];
          PK::unpack(raw[j], v);
#pragma unroll
          for (int i = 0; i < V; ++i) d.v[j] = fma(g[i], v[i], d.v[j]);
        }
      }
      part[k * pstride + lane] = d;  // inactive channel lanes publish zeros
    }
    __syncwarp(gmask);

    if (lane < cnt) {
      // Sum the group's partial dot products of this lane's point.
      acc_t d0 = acc_t(0), d1 = acc_t(0), d2 = acc_t(0), d3 = acc_t(0);
      const Acc4<acc_t>* col = part + lane * pstride;
      for (int j = 0; j < G; ++j) {
        const Acc4<acc_t> q = col[j];
        d0 += q.v[0];
        d1 += q.v[1];
        d2 += q.v[2];
        d3 += q.v[3];
      }
      acc_t g_attn = acc_t(0), g_x = acc_t(0), g_y = acc_t(0);
      if (mine.valid) {
        // sample = sum_j w_j * v_j; d(sample)/d(lw), d(sample)/d(lh) are linear in v_j.
        const acc_t lh = mine.lh, lw = mine.lw;
        const acc_t hh = acc_t(1) - lh, hw = acc_t(1) - lw;
        g_attn = mine.w[0] * d0 + mine.w[1] * d1 + mine.w[2] * d2 + mine.w[3] * d3;
        const acc_t d_lw = hh * (d1 - d0) + lh * (d3 - d2);
        const acc_t d_lh = hw * (d2 - d0) + lw * (d3 - d1);
        g_x = my_a * d_lw * static_cast<acc_t>(my_W);  // d(w_im)/d(loc_x) = W
        g_y = my_a * d_lh * static_cast<acc_t>(my_H);  // d(h_im)/d(loc_y) = H
      }
      const int64_t pidx = gid * LP + r0 + lane;
      if (p.grad_loc_acc != nullptr) {
        atomicAdd(p.grad_loc_acc + 2 * pidx, g_x);
        atomicAdd(p.grad_loc_acc + 2 * pidx + 1, g_y);
        atomicAdd(p.grad_attn_acc + pidx, g_attn);
      } else {
        store_scalar(p.grad_loc + 2 * pidx, g_x);
        store_scalar(p.grad_loc + 2 * pidx + 1, g_y);
        store_scalar(p.grad_attn + pidx, g_attn);
      }
    }
    __syncwarp(gmask);  // slots and partials are rewritten by the next round
  }
}

// ---------------------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------------------
struct Plan {
  int V = 1;      // elements per thread per load
  int G = 1;      // lanes per group
  int log2G = 0;
  int R = 1;      // points per round
  int slabs = 1;  // channel slabs (grid.y)
};

bool aligned_to(const void* ptr, int64_t bytes) {
  return reinterpret_cast<std::uintptr_t>(ptr) % static_cast<std::uintptr_t>(bytes) == 0;
}

// Widest V (power of two, V * elem <= 16 bytes) dividing D with every vector-accessed
// pointer aligned; then the smallest power-of-two group covering D / V channels-words
// (at most a warp; wider D runs as several slabs along grid.y).
Plan make_plan(int64_t D, int64_t elem_size, std::initializer_list<const void*> ptrs) {
  Plan plan;
  for (int v = static_cast<int>(kMaxVecBytes / elem_size); v > 1; v >>= 1) {
    if (D % v != 0) continue;
    bool ok = true;
    for (const void* ptr : ptrs) ok = ok && aligned_to(ptr, v * elem_size);
    if (ok) {
      plan.V = v;
      break;
    }
  }
  const int64_t words = D / plan.V;
  while (plan.G < words && plan.G < 32) {
    plan.G <<= 1;
    ++plan.log2G;
  }
  plan.slabs = static_cast<int>((words + plan.G - 1) / plan.G);
  plan.R = std::min(plan.G, kMaxRound);
  return plan;
}

void check_common(const at::Tensor& value, const at::Tensor& spatial_shapes,
                  const at::Tensor& level_start_index, const at::Tensor& sampling_loc,
                  const at::Tensor& attn_weight) {
  TORCH_CHECK(value.is_cuda(), "ms_deform_attn_cuda: value must be a CUDA tensor");
  TORCH_CHECK(value.dim() == 4, "ms_deform_attn_cuda: value must be (N, S, M, D), got ",
              value.sizes());
  TORCH_CHECK(sampling_loc.dim() == 6 && sampling_loc.size(5) == 2,
              "ms_deform_attn_cuda: sampling_loc must be (N, Lq, M, L, P, 2), got ",
              sampling_loc.sizes());
  TORCH_CHECK(attn_weight.dim() == 5,
              "ms_deform_attn_cuda: attn_weight must be (N, Lq, M, L, P), got ",
              attn_weight.sizes());
  const int64_t N = value.size(0), M = value.size(2);
  const int64_t Lq = sampling_loc.size(1), L = sampling_loc.size(3), P = sampling_loc.size(4);
  TORCH_CHECK(sampling_loc.size(0) == N && sampling_loc.size(2) == M,
              "ms_deform_attn_cuda: sampling_loc ", sampling_loc.sizes(),
              " does not match value ", value.sizes());
  TORCH_CHECK(attn_weight.size(0) == N && attn_weight.size(1) == Lq && attn_weight.size(2) == M &&
                  attn_weight.size(3) == L && attn_weight.size(4) == P,
              "ms_deform_attn_cuda: attn_weight ", attn_weight.sizes(),
              " does not match sampling_loc ", sampling_loc.sizes());
  TORCH_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(0) == L &&
                  spatial_shapes.size(1) == 2,
              "ms_deform_attn_cuda: spatial_shapes must be (L, 2) with L = ", L, ", got ",
              spatial_shapes.sizes());
  TORCH_CHECK(level_start_index.dim() == 1 && level_start_index.size(0) == L,
              "ms_deform_attn_cuda: level_start_index must be (L,) with L = ", L, ", got ",
              level_start_index.sizes());
  TORCH_CHECK(!at::isFloatingType(spatial_shapes.scalar_type()) &&
                  !at::isFloatingType(level_start_index.scalar_type()),
              "ms_deform_attn_cuda: spatial_shapes and level_start_index must be integer tensors");
  const auto st = value.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16,
              "ms_deform_attn_cuda: unsupported dtype ", st);
  TORCH_CHECK(sampling_loc.scalar_type() == st && attn_weight.scalar_type() == st,
              "ms_deform_attn_cuda: value, sampling_loc and attn_weight must share a dtype (got ",
              st, ", ", sampling_loc.scalar_type(), ", ", attn_weight.scalar_type(), ")");
  TORCH_CHECK(sampling_loc.device() == value.device() && attn_weight.device() == value.device(),
              "ms_deform_attn_cuda: value, sampling_loc and attn_weight must be on the same device");
  for (const at::Tensor* t : {&spatial_shapes, &level_start_index}) {
    TORCH_CHECK(t->device().is_cpu() || t->device() == value.device(),
                "ms_deform_attn_cuda: spatial_shapes / level_start_index must be on the CPU or on ",
                value.device());
  }
  TORCH_CHECK(value.size(1) <= INT_MAX && M * value.size(3) <= INT_MAX && Lq <= INT_MAX &&
                  L * P <= INT_MAX / 2,
              "ms_deform_attn_cuda: a dimension exceeds the 32-bit range the kernel indexes with");
}

// Small index tensors on the value's device as int64 (a no-op when they already are).
at::Tensor index_on_device(const at::Tensor& t, const at::Tensor& value) {
  return t.to(value.device(), at::kLong).contiguous();
}

template <typename T>
Params<T> base_params(const at::Tensor& value, const at::Tensor& shapes,
                      const at::Tensor& starts, const at::Tensor& loc, const at::Tensor& attn,
                      const Plan& plan) {
  Params<T> p{};
  p.value = value.data_ptr<T>();
  p.shapes = shapes.data_ptr<int64_t>();
  p.starts = starts.data_ptr<int64_t>();
  p.loc = loc.data_ptr<T>();
  p.attn = attn.data_ptr<T>();
  p.S = static_cast<int>(value.size(1));
  p.M = static_cast<int>(value.size(2));
  p.D = static_cast<int>(value.size(3));
  p.Lq = static_cast<int>(loc.size(1));
  p.L = static_cast<int>(loc.size(3));
  p.P = static_cast<int>(loc.size(4));
  p.groups = value.size(0) * loc.size(1) * value.size(2);
  p.G = plan.G;
  p.log2G = plan.log2G;
  p.R = plan.R;
  p.level_bytes = static_cast<int>((3 * sizeof(int) * p.L + 15) / 16 * 16);
  // +16 bytes between groups: neighbouring groups' slots land in different banks.
  p.slot_stride = static_cast<int>(plan.R * sizeof(Slot<acc_type<T>>) + 16);
  p.part_stride = static_cast<int>(plan.R * (plan.G + 1) * sizeof(Acc4<acc_type<T>>));
  return p;
}

template <typename Kernel>
void configure_smem(Kernel kernel, size_t smem) {
  if (smem > 48 * 1024) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(smem)));
  }
}

template <typename T, int V>
void launch_fwd(const Params<T>& p, const Plan& plan, cudaStream_t stream) {
  const int groups_per_block = kFwdThreads / plan.G;
  const dim3 grid(static_cast<unsigned>((p.groups + groups_per_block - 1) / groups_per_block),
                  static_cast<unsigned>(plan.slabs));
  const size_t smem = static_cast<size_t>(p.level_bytes) +
                      static_cast<size_t>(groups_per_block) * p.slot_stride;
  auto kernel = ms_deform_attn_fwd_kernel<T, V>;
  configure_smem(kernel, smem);
  kernel<<<grid, kFwdThreads, smem, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T, int V>
void launch_bwd(const Params<T>& p, const Plan& plan, cudaStream_t stream) {
  const int groups_per_block = kBwdThreads / plan.G;
  const dim3 grid(static_cast<unsigned>((p.groups + groups_per_block - 1) / groups_per_block),
                  static_cast<unsigned>(plan.slabs));
  const size_t smem = static_cast<size_t>(p.level_bytes) +
                      static_cast<size_t>(groups_per_block) * (p.slot_stride + p.part_stride);
  auto kernel = ms_deform_attn_bwd_kernel<T, V>;
  configure_smem(kernel, smem);
  kernel<<<grid, kBwdThreads, smem, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Runtime V -> template V, instantiating only widths with V * sizeof(T) <= 16.
template <typename T, bool kBackward>
void launch(const Params<T>& p, const Plan& plan, cudaStream_t stream) {
  auto go = [&](auto vtag) {
    constexpr int V = decltype(vtag)::value;
    if constexpr (V * sizeof(T) <= static_cast<size_t>(kMaxVecBytes)) {
      if constexpr (kBackward) {
        launch_bwd<T, V>(p, plan, stream);
      } else {
        launch_fwd<T, V>(p, plan, stream);
      }
    } else {
      TORCH_CHECK(false, "ms_deform_attn_cuda: internal error, vector width ", V);
    }
  };
  switch (plan.V) {
    case 8: go(std::integral_constant<int, 8>{}); break;
    case 4: go(std::integral_constant<int, 4>{}); break;
    case 2: go(std::integral_constant<int, 2>{}); break;
    default: go(std::integral_constant<int, 1>{}); break;
  }
}

}  // namespace

at::Tensor ms_deform_attn_cuda_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index,
                                       const at::Tensor& sampling_loc,
                                       const at::Tensor& attn_weight) {
  check_common(value, spatial_shapes, level_start_index, sampling_loc, attn_weight);
  const c10::cuda::CUDAGuard guard(value.device());
  const at::Tensor v = value.contiguous();
  const at::Tensor loc = sampling_loc.contiguous();
  const at::Tensor attn = attn_weight.contiguous();
  const at::Tensor shapes = index_on_device(spatial_shapes, v);
  const at::Tensor starts = index_on_device(level_start_index, v);

  const int64_t N = v.size(0), M = v.size(2), D = v.size(3), Lq = loc.size(1);
  const int64_t LP = loc.size(3) * loc.size(4);
  if (N * Lq * M * D == 0) return at::empty({N, Lq, M * D}, v.options());
  if (LP == 0) return at::zeros({N, Lq, M * D}, v.options());
  at::Tensor out = at::empty({N, Lq, M * D}, v.options());

  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, v.scalar_type(),
                                  "ms_deform_attn_cuda_forward", [&] {
    const Plan plan = make_plan(D, sizeof(scalar_t), {v.data_ptr(), out.data_ptr()});
    Params<scalar_t> p = base_params<scalar_t>(v, shapes, starts, loc, attn, plan);
    p.out = out.data_ptr<scalar_t>();
    launch<scalar_t, false>(p, plan, stream);
  });
  return out;
}

std::vector<at::Tensor> ms_deform_attn_cuda_backward(const at::Tensor& value,
                                                     const at::Tensor& spatial_shapes,
                                                     const at::Tensor& level_start_index,
                                                     const at::Tensor& sampling_loc,
                                                     const at::Tensor& attn_weight,
                                                     const at::Tensor& grad_output) {
  check_common(value, spatial_shapes, level_start_index, sampling_loc, attn_weight);
  const int64_t N = value.size(0), M = value.size(2), D = value.size(3);
  const int64_t Lq = sampling_loc.size(1);
  TORCH_CHECK(grad_output.dim() == 3 && grad_output.size(0) == N && grad_output.size(1) == Lq &&
                  grad_output.size(2) == M * D,
              "ms_deform_attn_cuda: grad_output must be (N, Lq, M*D) = (", N, ", ", Lq, ", ",
              M * D, "), got ", grad_output.sizes());
  TORCH_CHECK(grad_output.scalar_type() == value.scalar_type() &&
                  grad_output.device() == value.device(),
              "ms_deform_attn_cuda: grad_output must match value's dtype and device");
  const c10::cuda::CUDAGuard guard(value.device());
  const at::Tensor v = value.contiguous();
  const at::Tensor loc = sampling_loc.contiguous();
  const at::Tensor attn = attn_weight.contiguous();
  const at::Tensor gout = grad_output.contiguous();
  const at::Tensor shapes = index_on_device(spatial_shapes, v);
  const at::Tensor starts = index_on_device(level_start_index, v);

  const bool half_type = v.scalar_type() == at::kHalf || v.scalar_type() == at::kBFloat16;
  const auto acc_opts = v.options().dtype(half_type ? at::kFloat : v.scalar_type());
  const int64_t LP = loc.size(3) * loc.size(4);
  if (N * Lq * M * D * LP == 0) {
    return {at::zeros_like(v), at::zeros_like(loc), at::zeros_like(attn)};
  }

  // grad_value accumulates by atomics in float (float16/bfloat16/float32) or double.
  at::Tensor grad_value_acc = at::zeros(v.sizes(), acc_opts);
  at::Tensor grad_loc, grad_attn, grad_loc_acc, grad_attn_acc;

  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, v.scalar_type(),
                                  "ms_deform_attn_cuda_backward", [&] {
    using acc_t = acc_type<scalar_t>;
    const Plan plan = make_plan(D, sizeof(scalar_t), {v.data_ptr(), gout.data_ptr()});
    Params<scalar_t> p = base_params<scalar_t>(v, shapes, starts, loc, attn, plan);
    p.grad_out = gout.data_ptr<scalar_t>();
    p.grad_value = grad_value_acc.data_ptr<acc_t>();
    if (plan.slabs == 1) {
      // One group sees all channels: the owner lane stores the point's gradients.
      grad_loc = at::empty(loc.sizes(), loc.options());
      grad_attn = at::empty(attn.sizes(), attn.options());
      p.grad_loc = grad_loc.data_ptr<scalar_t>();
      p.grad_attn = grad_attn.data_ptr<scalar_t>();
    } else {
      // Each slab adds its share.
      grad_loc_acc = at::zeros(loc.sizes(), acc_opts);
      grad_attn_acc = at::zeros(attn.sizes(), acc_opts);
      p.grad_loc_acc = grad_loc_acc.data_ptr<acc_t>();
      p.grad_attn_acc = grad_attn_acc.data_ptr<acc_t>();
    }
    launch<scalar_t, true>(p, plan, stream);
  });

  if (grad_loc_acc.defined()) {
    grad_loc = grad_loc_acc.to(v.scalar_type());
    grad_attn = grad_attn_acc.to(v.scalar_type());
  }
  at::Tensor grad_value = grad_value_acc.to(v.scalar_type());
  return {grad_value, grad_loc, grad_attn};
}

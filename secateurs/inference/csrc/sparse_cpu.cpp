// Sparse CPU kernels for pruned Linear layers (secateurs.inference.fast): y = x W^T, W sparse.
//
// Layouts (built in Python, see fast.py):
//   bitmask: mask uint8 [N, KB] (column c of row r is bit 7 - c % 8 of byte r*KB + c / 8, most significant
//            bit first, as secateurs.storage.sparse stores it), values [nnz + 16] (kept values, row-major,
//            16 zeros of padding), offsets int64 [N + 1] (where each row's values start).
//   N:M:     values [N, G*n] (n per group of m columns, a group with fewer is padded with zeros),
//            idx uint8 [N, RB] (the column of each value inside its group, `bits` bits each, least
//            significant first).
//   index16: values [nnz + 16] as for bitmask, idx uint16 [nnz + 16] (each value's column), offsets int64 [N + 1];
//            the work is proportional to the kept weights, not to all of them (columns < 65,536).
// Values are float32 or bfloat16; x and y are float32. The ISA is chosen at run time: AVX-512 (F/BW/VL/VBMI2:
// expanding loads) or AVX2+FMA where the CPU has it, else portable C++ (set_isa lowers it, for tests).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <cstdint>
#include <cstring>
#include <type_traits>

#define T256 __attribute__((target("avx2,fma,popcnt,bmi,bmi2,lzcnt")))
#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi2,gfni,avx2,fma,popcnt,bmi,bmi2,lzcnt")))

namespace {

int g_isa = -1;  // -1: not detected yet; 0: portable; 1: AVX2 + FMA; 2: AVX-512 (F, BW, VL, VBMI2) + GFNI

int isa() {
  if (g_isa < 0) {
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vbmi2") &&
                        __builtin_cpu_supports("gfni");
    g_isa = avx512 ? 2 : (avx2 ? 1 : 0);
  }
  return g_isa;
}

inline float to_f(float v) { return v; }
inline float to_f(uint16_t v) { uint32_t u = uint32_t(v) << 16; float f; std::memcpy(&f, &u, 4); return f; }

constexpr int64_t kTile = 16;  // batch columns per accumulator tile in the transposed (large-batch) kernels
constexpr int64_t kLargeBatch = 8;

// step(std::integral_constant<int, NB>{}, i) over i in [0, count): NB = 4 at a time, then the 1 to 3 left. The
// kernels are templates on how many batch rows (or batch tiles) they handle at once; this picks the instance.
template <typename Step>
inline void in_blocks_of_4(int64_t count, Step&& step) {
  int64_t i = 0;
  for (; i + 4 <= count; i += 4) step(std::integral_constant<int, 4>{}, i);
  switch (count - i) {
    case 3: step(std::integral_constant<int, 3>{}, i); break;
    case 2: step(std::integral_constant<int, 2>{}, i); break;
    case 1: step(std::integral_constant<int, 1>{}, i); break;
    default: break;
  }
}
// Values (and indices) are prefetched this many elements ahead of the small-batch AVX-512 loops, every cache
// line of them (measured at batch 1, 4096x4096 float32: index16 at 90% went from 0.45 to 0.79 of the bandwidth
// limit; BENCHMARKS.md). N:M reads 4 rows at a time and prefetches into L2, further ahead (1024x4096 float32
// 2:4: 1.21x -> 1.43x dense together with the 4 rows).
constexpr int64_t kAhead = 4096;     // N:M
constexpr int64_t kAheadIdx = 512;   // index16

// ---------------------------------------------------------------- portable code
template <typename T>
void bitmask_portable(const uint8_t* mask, const T* vals, const int64_t* off, const float* x, float* y,
                      int64_t N, int64_t KB, int64_t B, int64_t r0, int64_t r1) {
  const int64_t K = KB * 8;
  for (int64_t r = r0; r < r1; r++) {
    const uint8_t* m = mask + r * KB;
    for (int64_t b = 0; b < B; b++) {
      const T* p = vals + off[r];
      const float* xb = x + b * K;
      float acc = 0.f;
      for (int64_t kb = 0; kb < KB; kb++) {
        unsigned byte = m[kb];
        while (byte) {
          int t = __builtin_clz(byte) - 24;
          byte &= ~(0x80u >> t);
          acc += to_f(*p++) * xb[kb * 8 + t];
        }
      }
      y[b * N + r] = acc;
    }
  }
}

inline int64_t nm_col(const uint8_t* idx, int64_t j, int n, int m, int bits) {
  int64_t bit = j * bits;
  return (j / n) * m + ((idx[bit >> 3] >> (bit & 7)) & ((1 << bits) - 1));
}

template <typename T>
void nm_portable(const uint8_t* idx, const T* vals, const float* x, float* y, int64_t N, int64_t K, int64_t L,
                 int64_t RB, int n, int m, int bits, int64_t B, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; r++) {
    const uint8_t* ir = idx + r * RB;
    const T* v = vals + r * L;
    for (int64_t b = 0; b < B; b++) {
      const float* xb = x + b * K;
      float acc = 0.f;
      for (int64_t j = 0; j < L; j++) acc += to_f(v[j]) * xb[nm_col(ir, j, n, m, bits)];
      y[b * N + r] = acc;
    }
  }
}

// ---------------------------------------------------------------- AVX2 + FMA
alignas(32) int32_t g_perm[256][8];  // g_perm[byte][lane]: rank of the lane among the set lanes (MSB = lane 0)

void init_perm() {
  for (int byte = 0; byte < 256; byte++) {
    int rank = 0;
    for (int lane = 0; lane < 8; lane++) {
      bool set = byte & (0x80 >> lane);
      g_perm[byte][lane] = set ? rank : 0;
      rank += set;
    }
  }
}

T256 inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
T256 inline __m256 load8(const uint16_t* p) {
  __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
T256 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Small batch: per 8 columns, expand the kept values into their lanes (permute + mask), FMA with NB rows of x.
template <typename T, int NB>
T256 void bitmask_avx2_row(const uint8_t* m, const T* p, const float* x, float* y,
                                                          int64_t N, int64_t KB, int64_t r) {
  const int64_t K = KB * 8;
  const __m256i bits = _mm256_setr_epi32(128, 64, 32, 16, 8, 4, 2, 1);
  __m256 acc[NB];
  for (int j = 0; j < NB; j++) acc[j] = _mm256_setzero_ps();
  for (int64_t kb = 0; kb < KB; kb++) {
    unsigned byte = m[kb];
    if (!byte) continue;
    __m256i perm = _mm256_load_si256(reinterpret_cast<const __m256i*>(g_perm[byte]));
    __m256i lanes = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(byte), bits), bits);
    __m256 w = _mm256_and_ps(_mm256_permutevar8x32_ps(load8(p), perm), _mm256_castsi256_ps(lanes));
    p += __builtin_popcount(byte);
    for (int j = 0; j < NB; j++) acc[j] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + j * K + kb * 8), acc[j]);
  }
  for (int j = 0; j < NB; j++) y[j * N + r] = hsum(acc[j]);
}

// Large batch, x transposed and padded: xt [K, Bp]; yt [N, Bp]. Per kept weight, NT tiles of 16 batch columns.
template <typename T, int NT>
T256 void bitmask_avx2_tiles(const uint8_t* m, const T* p, const float* xt, float* yt,
                                                            int64_t KB, int64_t Bp, int64_t r, int64_t t0) {
  __m256 acc[2 * NT];
  for (int j = 0; j < 2 * NT; j++) acc[j] = _mm256_setzero_ps();
  const float* xs = xt + t0 * kTile;
  for (int64_t kb = 0; kb < KB; kb++) {
    unsigned byte = m[kb];
    while (byte) {
      int t = __builtin_clz(byte) - 24;
      byte &= ~(0x80u >> t);
      __m256 w = _mm256_set1_ps(to_f(*p++));
      const float* xr = xs + (kb * 8 + t) * Bp;
      for (int j = 0; j < 2 * NT; j++) acc[j] = _mm256_fmadd_ps(w, _mm256_loadu_ps(xr + 8 * j), acc[j]);
    }
  }
  for (int j = 0; j < 2 * NT; j++) _mm256_storeu_ps(yt + r * Bp + t0 * kTile + 8 * j, acc[j]);
}

template <typename T>
T256 void bitmask_avx2(const uint8_t* mask, const T* vals, const int64_t* off,
                                                      const float* x, float* y, int64_t N, int64_t KB, int64_t B,
                                                      int64_t r0, int64_t r1) {
  const int64_t K = KB * 8;
  for (int64_t r = r0; r < r1; r++) {
    const uint8_t* m = mask + r * KB;
    const T* p = vals + off[r];
    in_blocks_of_4(B, [&](auto nb, int64_t b) {
      bitmask_avx2_row<T, decltype(nb)::value>(m, p, x + b * K, y + b * N, N, KB, r);
    });
  }
}

template <typename T>
T256 void bitmask_avx2_t(const uint8_t* mask, const T* vals, const int64_t* off,
                                                        const float* xt, float* yt, int64_t KB, int64_t Bp,
                                                        int64_t r0, int64_t r1) {
  const int64_t tiles = Bp / kTile;
  for (int64_t r = r0; r < r1; r++) {
    const uint8_t* m = mask + r * KB;
    const T* p = vals + off[r];
    in_blocks_of_4(tiles, [&](auto nb, int64_t t) {
      bitmask_avx2_tiles<T, decltype(nb)::value>(m, p, xt, yt, KB, Bp, r, t);
    });
  }
}

// N:M, small batch, n dividing 8: 8 values at a time, their columns decoded in lanes and gathered from x.
template <typename T, int NB>
T256 void nm_avx2_row(const uint8_t* ir, const T* v, const float* x, float* y,
                                                     int64_t N, int64_t K, int64_t L, int n, int m, int bits,
                                                     int64_t r) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i shifts = _mm256_mullo_epi32(lane, _mm256_set1_epi32(bits));
  const __m256i base = _mm256_mullo_epi32(_mm256_srli_epi32(lane, __builtin_ctz(n)), _mm256_set1_epi32(m));
  const __m256i low = _mm256_set1_epi32((1 << bits) - 1);
  const bool span16 = 8 * m == 16 * n;
  __m256 acc[NB];
  for (int j = 0; j < NB; j++) acc[j] = _mm256_setzero_ps();
  int64_t j8 = 0;
  for (; j8 + 8 <= L; j8 += 8) {
    uint32_t word = 0;
    if (bits == 2) {  // 8 values x bits = `bits` bytes; fixed sizes so that the copy is one load
      uint16_t w16;
      std::memcpy(&w16, ir + j8 / 4, 2);
      word = w16;
    } else {
      std::memcpy(&word, ir + j8 / 2, 4);
    }
    __m256i cols = _mm256_add_epi32(_mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(int(word)), shifts), low),
                                    base);
    const int64_t first = (j8 / n) * m;
    __m256 w = load8(v + j8);
    if (span16) {  // 2:4, 4:8, 8:16: the 8 values lie in 16 columns; two in-register permutes replace a gather
      for (int j = 0; j < NB; j++) {
        const float* xs = x + j * K + first;
        __m256 xg = _mm256_blend_ps(_mm256_permutevar8x32_ps(_mm256_loadu_ps(xs), cols),
                                    _mm256_permutevar8x32_ps(_mm256_loadu_ps(xs + 8), cols), 0xF0);
        acc[j] = _mm256_fmadd_ps(w, xg, acc[j]);
      }
    } else {
      for (int j = 0; j < NB; j++)
        acc[j] = _mm256_fmadd_ps(w, _mm256_i32gather_ps(x + j * K + first, cols, 4), acc[j]);
    }
  }
  for (int j = 0; j < NB; j++) {
    float s = hsum(acc[j]);
    for (int64_t jj = j8; jj < L; jj++) s += to_f(v[jj]) * x[j * K + nm_col(ir, jj, n, m, bits)];
    y[j * N + r] = s;
  }
}

template <typename T>
T256 void nm_avx2(const uint8_t* idx, const T* vals, const float* x, float* y,
                                                 int64_t N, int64_t K, int64_t L, int64_t RB, int n, int m,
                                                 int bits, int64_t B, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; r++) {
    const uint8_t* ir = idx + r * RB;
    const T* v = vals + r * L;
    in_blocks_of_4(B, [&](auto nb, int64_t b) {
      nm_avx2_row<T, decltype(nb)::value>(ir, v, x + b * K, y + b * N, N, K, L, n, m, bits, r);
    });
  }
}

template <typename T>
T256 void nm_avx2_t(const uint8_t* idx, const T* vals, const float* xt, float* yt,
                                                   int64_t L, int64_t RB, int n, int m, int bits, int64_t Bp,
                                                   int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; r++) {
    const uint8_t* ir = idx + r * RB;
    const T* v = vals + r * L;
    for (int64_t t0 = 0; t0 < Bp; t0 += 64) {
      const int64_t width = std::min<int64_t>(64, Bp - t0);
      __m256 acc[8];
      for (int j = 0; j < 8; j++) acc[j] = _mm256_setzero_ps();
      for (int64_t j = 0; j < L; j++) {
        __m256 w = _mm256_set1_ps(to_f(v[j]));
        const float* xr = xt + nm_col(ir, j, n, m, bits) * Bp + t0;
        for (int q = 0; q < width / 8; q++) acc[q] = _mm256_fmadd_ps(w, _mm256_loadu_ps(xr + 8 * q), acc[q]);
      }
      for (int q = 0; q < width / 8; q++) _mm256_storeu_ps(yt + r * Bp + t0 + 8 * q, acc[q]);
    }
  }
}

// ---------------------------------------------------------------- AVX-512 (F, BW, VL, VBMI2)
uint8_t g_rev[256];  // bit-reversed bytes: the stored mask is most significant bit first, AVX-512 masks are not

void init_rev() {
  for (int b = 0; b < 256; b++) {
    int r = 0;
    for (int i = 0; i < 8; i++) r |= ((b >> i) & 1) << (7 - i);
    g_rev[b] = uint8_t(r);
  }
}

// A full (unmasked) load then a register expand: the expanding load from memory costs several more micro-ops.
// Reads up to 16 values past the row's last one: the values carry 16 of padding.
T512 inline __m512 expand16(const float* p, __mmask16 k) { return _mm512_maskz_expand_ps(k, _mm512_loadu_ps(p)); }
T512 inline __m512 expand16(const uint16_t* p, __mmask16 k) {
  __m256i h = _mm256_maskz_expand_epi16(k, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
T512 inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
T512 inline __m512 load16(const uint16_t* p) {
  __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// The stored mask is most significant bit first inside each byte; AVX-512 lane k is bit k. One GFNI affine
// transform reverses the bits of every byte of a 64-bit word.
T512 inline uint64_t reverse_bytes_bits(uint64_t w) {
  const __m128i r = _mm_gf2p8affine_epi64_epi8(_mm_cvtsi64_si128(int64_t(w)), _mm_set1_epi64x(0x8040201008040201LL), 0);
  return uint64_t(_mm_cvtsi128_si64(r));
}

// Small batch: per 64 columns (one mask word), four expanding loads put the kept values in their lanes; four
// accumulators per batch row keep the FMAs independent (one accumulator would wait on each FMA's latency).
template <typename T, int NB>
T512 void bitmask_512_row(const uint8_t* m, const T* p, const float* x, float* y, int64_t N, int64_t KB, int64_t r) {
  const int64_t K = KB * 8;
  __m512 acc[NB][4];
  for (int j = 0; j < NB; j++)
    for (int q = 0; q < 4; q++) acc[j][q] = _mm512_setzero_ps();
  int64_t kb = 0;
  for (; kb + 8 <= KB; kb += 8) {
    uint64_t word;
    std::memcpy(&word, m + kb, 8);
    if (!word) continue;
    word = reverse_bytes_bits(word);
    const __mmask16 k0 = __mmask16(word), k1 = __mmask16(word >> 16), k2 = __mmask16(word >> 32),
                    k3 = __mmask16(word >> 48);
    const T* p1 = p + _mm_popcnt_u32(k0);
    const T* p2 = p1 + _mm_popcnt_u32(k1);
    const T* p3 = p2 + _mm_popcnt_u32(k2);
    const __m512 w0 = expand16(p, k0), w1 = expand16(p1, k1), w2 = expand16(p2, k2), w3 = expand16(p3, k3);
    p += _mm_popcnt_u64(word);
    for (int j = 0; j < NB; j++) {
      const float* xs = x + j * K + kb * 8;
      acc[j][0] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xs), acc[j][0]);
      acc[j][1] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xs + 16), acc[j][1]);
      acc[j][2] = _mm512_fmadd_ps(w2, _mm512_loadu_ps(xs + 32), acc[j][2]);
      acc[j][3] = _mm512_fmadd_ps(w3, _mm512_loadu_ps(xs + 48), acc[j][3]);
    }
  }
  for (; kb < KB; kb++) {  // the last columns, 8 at a time
    const __mmask16 k = __mmask16(g_rev[m[kb]]);
    const __m512 w = expand16(p, k);
    p += _mm_popcnt_u32(k);
    for (int j = 0; j < NB; j++)
      acc[j][0] = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(0xFF, x + j * K + kb * 8), acc[j][0]);
  }
  for (int j = 0; j < NB; j++)
    y[j * N + r] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[j][0], acc[j][1]),
                                                      _mm512_add_ps(acc[j][2], acc[j][3])));
}

template <typename T>
T512 void bitmask_512(const uint8_t* mask, const T* vals, const int64_t* off, const float* x, float* y, int64_t N,
                      int64_t KB, int64_t B, int64_t r0, int64_t r1) {
  const int64_t K = KB * 8;
  for (int64_t r = r0; r < r1; r++) {
    const uint8_t* m = mask + r * KB;
    const T* p = vals + off[r];
    in_blocks_of_4(B, [&](auto nb, int64_t b) {
      bitmask_512_row<T, decltype(nb)::value>(m, p, x + b * K, y + b * N, N, KB, r);
    });
  }
}

// N:M, small batch, n dividing 16: 16 values at a time; where they span 32 columns (m = 2n: 2:4, 4:8, 8:16)
// one two-register permute fetches their inputs, else a gather.
struct NMLanes {
  __m512i shifts, base, low;
  int n, m, bits;
  bool span32;
};

// The columns (inside x) of values j16 .. j16 + 15 of one row.
T512 inline __m512i nm_cols(const uint8_t* ir, const NMLanes& c, int64_t j16) {
  uint64_t word = 0;
  if (c.bits == 2) {  // 16 values x bits = 2 * bits bytes; fixed sizes so that the copy is one load
    uint32_t w32;
    std::memcpy(&w32, ir + j16 / 4, 4);
    word = w32;
  } else {
    std::memcpy(&word, ir + j16 / 2, 8);
  }
  const uint32_t lo = uint32_t(word & ((uint64_t(1) << (8 * c.bits)) - 1)), hi = uint32_t(word >> (8 * c.bits));
  const __m512i words = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi32(int(lo))),
                                           _mm256_set1_epi32(int(hi)), 1);
  return _mm512_add_epi32(_mm512_and_si512(_mm512_srlv_epi32(words, c.shifts), c.low), c.base);
}

// R rows at once: every row of an N:M layer reads the same 32 inputs at the same step, so the two loads of x
// serve R rows, and R value streams are in flight at once.
template <typename T, int NB, int R>
T512 inline void nm_512_step(const uint8_t* const (&ir)[R], const T* const (&v)[R], const float* x, int64_t K,
                             const NMLanes& c, int64_t j16, __m512 (&acc)[R][NB]) {
  __m512i cols[R];
  __m512 w[R];
  for (int q = 0; q < R; q++) cols[q] = nm_cols(ir[q], c, j16), w[q] = load16(v[q] + j16);
  const int64_t first = (j16 / c.n) * c.m;
  for (int j = 0; j < NB; j++) {
    const float* xs = x + j * K + first;
    if (c.span32) {
      const __m512 x0 = _mm512_loadu_ps(xs), x1 = _mm512_loadu_ps(xs + 16);
      for (int q = 0; q < R; q++) acc[q][j] = _mm512_fmadd_ps(w[q], _mm512_permutex2var_ps(x0, cols[q], x1), acc[q][j]);
    } else {
      for (int q = 0; q < R; q++) acc[q][j] = _mm512_fmadd_ps(w[q], _mm512_i32gather_ps(cols[q], xs, 4), acc[q][j]);
    }
  }
}

// Two sets of accumulators, used in turn, keep consecutive FMAs independent.
template <typename T, int NB, int R>
T512 void nm_512_rows(const uint8_t* idx, const T* vals, const float* x, float* y, int64_t N, int64_t K, int64_t L,
                      int64_t RB, const NMLanes& c, int64_t r) {
  const uint8_t* ir[R];
  const T* v[R];
  for (int q = 0; q < R; q++) ir[q] = idx + (r + q) * RB, v[q] = vals + (r + q) * L;
  __m512 a0[R][NB], a1[R][NB];
  for (int q = 0; q < R; q++)
    for (int j = 0; j < NB; j++) a0[q][j] = a1[q][j] = _mm512_setzero_ps();
  int64_t j16 = 0;
  for (; j16 + 32 <= L; j16 += 32) {
    for (int q = 0; q < R; q++) {
      _mm_prefetch(reinterpret_cast<const char*>(v[q] + j16 + kAhead), _MM_HINT_T1);
      if (sizeof(T) == 4) _mm_prefetch(reinterpret_cast<const char*>(v[q] + j16 + kAhead + 16), _MM_HINT_T1);
      _mm_prefetch(reinterpret_cast<const char*>(ir[q] + (j16 + kAhead) * c.bits / 8), _MM_HINT_T1);
    }
    nm_512_step<T, NB, R>(ir, v, x, K, c, j16, a0);
    nm_512_step<T, NB, R>(ir, v, x, K, c, j16 + 16, a1);
  }
  if (j16 + 16 <= L) {
    nm_512_step<T, NB, R>(ir, v, x, K, c, j16, a0);
    j16 += 16;
  }
  for (int q = 0; q < R; q++)
    for (int j = 0; j < NB; j++) {
      float s = _mm512_reduce_add_ps(_mm512_add_ps(a0[q][j], a1[q][j]));
      for (int64_t jj = j16; jj < L; jj++) s += to_f(v[q][jj]) * x[j * K + nm_col(ir[q], jj, c.n, c.m, c.bits)];
      y[j * N + r + q] = s;
    }
}

template <typename T>
T512 void nm_512(const uint8_t* idx, const T* vals, const float* x, float* y, int64_t N, int64_t K, int64_t L,
                 int64_t RB, int n, int m, int bits, int64_t B, int64_t r0, int64_t r1) {
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  NMLanes c;
  c.shifts = _mm512_mullo_epi32(_mm512_and_si512(lane, _mm512_set1_epi32(7)), _mm512_set1_epi32(bits));
  c.base = _mm512_mullo_epi32(_mm512_srli_epi32(lane, __builtin_ctz(n)), _mm512_set1_epi32(m));
  c.low = _mm512_set1_epi32((1 << bits) - 1);
  c.n = n, c.m = m, c.bits = bits, c.span32 = m == 2 * n;
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4)  // 4 rows at once for 1 or 2 batch rows, 2 for more (32 registers hold the sums)
    in_blocks_of_4(B, [&](auto nb, int64_t b) {
      constexpr int NB = decltype(nb)::value, R = NB <= 2 ? 4 : 2;
      for (int q = 0; q < 4; q += R)
        nm_512_rows<T, NB, R>(idx, vals, x + b * K, y + b * N, N, K, L, RB, c, r + q);
    });
  for (; r < r1; r++)
    in_blocks_of_4(B, [&](auto nb, int64_t b) {
      nm_512_rows<T, decltype(nb)::value, 1>(idx, vals, x + b * K, y + b * N, N, K, L, RB, c, r);
    });
}

// ---------------------------------------------------------------- 16-bit column indices
template <typename T>
void index16_portable(const uint16_t* idx, const T* vals, const int64_t* off, const float* x, float* y, int64_t N,
                      int64_t K, int64_t B, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; r++)
    for (int64_t b = 0; b < B; b++) {
      const float* xb = x + b * K;
      float acc = 0.f;
      for (int64_t i = off[r]; i < off[r + 1]; i++) acc += to_f(vals[i]) * xb[idx[i]];
      y[b * N + r] = acc;
    }
}

// Small batch, AVX2: 8 kept weights at a time, their inputs gathered by column.
template <typename T, int NB>
T256 void index16_avx2_row(const uint16_t* ix, const T* v, int64_t cnt, const float* x, float* y, int64_t N,
                           int64_t K, int64_t r) {
  __m256 a0[NB], a1[NB];
  for (int j = 0; j < NB; j++) a0[j] = a1[j] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= cnt; i += 16) {
    const __m256i c0 = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(ix + i)));
    const __m256i c1 = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(ix + i + 8)));
    const __m256 w0 = load8(v + i), w1 = load8(v + i + 8);
    for (int j = 0; j < NB; j++) {
      a0[j] = _mm256_fmadd_ps(w0, _mm256_i32gather_ps(x + j * K, c0, 4), a0[j]);
      a1[j] = _mm256_fmadd_ps(w1, _mm256_i32gather_ps(x + j * K, c1, 4), a1[j]);
    }
  }
  for (int j = 0; j < NB; j++) {
    float s = hsum(_mm256_add_ps(a0[j], a1[j]));
    for (int64_t q = i; q < cnt; q++) s += to_f(v[q]) * x[j * K + ix[q]];
    y[j * N + r] = s;
  }
}

// Small batch, AVX-512: 16 kept weights at a time; the last (fewer than 16) through masked loads and gathers.
template <typename T, int NB>
T512 void index16_512_row(const uint16_t* ix, const T* v, int64_t cnt, const float* x, float* y, int64_t N,
                          int64_t K, int64_t r) {
  __m512 a0[NB], a1[NB];
  for (int j = 0; j < NB; j++) a0[j] = a1[j] = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= cnt; i += 32) {
    _mm_prefetch(reinterpret_cast<const char*>(v + i + kAheadIdx), _MM_HINT_T0);  // the streams, well ahead
    _mm_prefetch(reinterpret_cast<const char*>(v + i + kAheadIdx + 16), _MM_HINT_T0);  // float32: 2 lines per 32
    _mm_prefetch(reinterpret_cast<const char*>(ix + i + kAheadIdx), _MM_HINT_T0);
    const __m512i c0 = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(ix + i)));
    const __m512i c1 = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(ix + i + 16)));
    const __m512 w0 = load16(v + i), w1 = load16(v + i + 16);
    for (int j = 0; j < NB; j++) {
      a0[j] = _mm512_fmadd_ps(w0, _mm512_i32gather_ps(c0, x + j * K, 4), a0[j]);
      a1[j] = _mm512_fmadd_ps(w1, _mm512_i32gather_ps(c1, x + j * K, 4), a1[j]);
    }
  }
  for (; i < cnt; i += 16) {
    const __mmask16 k = cnt - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (cnt - i)) - 1);
    const __m512i c = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, ix + i));
    const __m512 w = _mm512_maskz_mov_ps(k, load16(v + i));  // the values carry 16 of padding past the last row
    for (int j = 0; j < NB; j++)
      a0[j] = _mm512_fmadd_ps(w, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), k, c, x + j * K, 4), a0[j]);
  }
  for (int j = 0; j < NB; j++) y[j * N + r] = _mm512_reduce_add_ps(_mm512_add_ps(a0[j], a1[j]));
}

template <typename T>
void index16_small(const uint16_t* idx, const T* vals, const int64_t* off, const float* x, float* y, int64_t N,
                   int64_t K, int64_t B, int64_t r0, int64_t r1) {
  if (isa() == 0) return index16_portable<T>(idx, vals, off, x, y, N, K, B, r0, r1);
  for (int64_t r = r0; r < r1; r++) {
    const uint16_t* ix = idx + off[r];
    const T* v = vals + off[r];
    const int64_t cnt = off[r + 1] - off[r];
    in_blocks_of_4(B, [&](auto nb, int64_t b) {
      constexpr int NB = decltype(nb)::value;
      if (isa() == 2) index16_512_row<T, NB>(ix, v, cnt, x + b * K, y + b * N, N, K, r);
      else index16_avx2_row<T, NB>(ix, v, cnt, x + b * K, y + b * N, N, K, r);
    });
  }
}

// Large batch, x transposed and padded (xt [K, Bp], yt [N, Bp]): per kept weight, one broadcast and FMAs over
// up to 64 batch columns of its input row.
template <typename T>
T256 void index16_avx2_t(const uint16_t* idx, const T* vals, const int64_t* off, const float* xt, float* yt,
                         int64_t Bp, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; r++)
    for (int64_t t0 = 0; t0 < Bp; t0 += 64) {
      const int64_t width = std::min<int64_t>(64, Bp - t0);
      __m256 acc[8];
      for (int q = 0; q < 8; q++) acc[q] = _mm256_setzero_ps();
      for (int64_t i = off[r]; i < off[r + 1]; i++) {
        const __m256 w = _mm256_set1_ps(to_f(vals[i]));
        const float* xr = xt + int64_t(idx[i]) * Bp + t0;
        for (int q = 0; q < width / 8; q++) acc[q] = _mm256_fmadd_ps(w, _mm256_loadu_ps(xr + 8 * q), acc[q]);
      }
      for (int q = 0; q < width / 8; q++) _mm256_storeu_ps(yt + r * Bp + t0 + 8 * q, acc[q]);
    }
}

template <typename T>
T512 void index16_512_t(const uint16_t* idx, const T* vals, const int64_t* off, const float* xt, float* yt,
                        int64_t Bp, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; r++)
    for (int64_t t0 = 0; t0 < Bp; t0 += 64) {
      const int64_t tiles = std::min<int64_t>(64, Bp - t0) / 16;
      __m512 acc[4];
      for (int q = 0; q < 4; q++) acc[q] = _mm512_setzero_ps();
      for (int64_t i = off[r]; i < off[r + 1]; i++) {
        const __m512 w = _mm512_set1_ps(to_f(vals[i]));
        const float* xr = xt + int64_t(idx[i]) * Bp + t0;
        for (int q = 0; q < tiles; q++) acc[q] = _mm512_fmadd_ps(w, _mm512_loadu_ps(xr + 16 * q), acc[q]);
      }
      for (int q = 0; q < tiles; q++) _mm512_storeu_ps(yt + r * Bp + t0 + 16 * q, acc[q]);
    }
}

// ---------------------------------------------------------------- dispatch
int64_t grain(int64_t N, int64_t work_per_row) {
  return std::max<int64_t>(1, std::min<int64_t>(N, 16384 / std::max<int64_t>(1, work_per_row)));
}

bool large(int64_t B) { return isa() >= 1 && B >= kLargeBatch; }

at::Tensor transposed(const at::Tensor& x, int64_t& Bp) {
  const int64_t B = x.size(0);
  Bp = (B + kTile - 1) / kTile * kTile;
  at::Tensor xt = at::zeros({x.size(1), Bp}, x.options());
  xt.narrow(1, 0, B).copy_(x.t());
  return xt;
}

template <typename T>
at::Tensor bitmask_typed(const at::Tensor& mask, const at::Tensor& values, const at::Tensor& offsets,
                         const at::Tensor& x) {
  const int64_t N = mask.size(0), KB = mask.size(1), B = x.size(0);
  const uint8_t* mp = mask.data_ptr<uint8_t>();
  const T* vp = reinterpret_cast<const T*>(values.data_ptr());
  const int64_t* op = offsets.data_ptr<int64_t>();
  const int64_t g = grain(N, KB * std::max<int64_t>(1, B / 4));
  if (large(B)) {
    int64_t Bp = 0;
    at::Tensor xt = transposed(x, Bp);
    at::Tensor yt = at::empty({N, Bp}, x.options());
    const float* xp = xt.data_ptr<float>();
    float* yp = yt.data_ptr<float>();
    at::parallel_for(0, N, g, [&](int64_t r0, int64_t r1) { bitmask_avx2_t<T>(mp, vp, op, xp, yp, KB, Bp, r0, r1); });
    return yt.narrow(1, 0, B).t().contiguous();
  }
  at::Tensor y = at::empty({B, N}, x.options());
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, N, g, [&](int64_t r0, int64_t r1) {
    if (isa() == 2) bitmask_512<T>(mp, vp, op, xp, yp, N, KB, B, r0, r1);
    else if (isa() == 1) bitmask_avx2<T>(mp, vp, op, xp, yp, N, KB, B, r0, r1);
    else bitmask_portable<T>(mp, vp, op, xp, yp, N, KB, B, r0, r1);
  });
  return y;
}

template <typename T>
at::Tensor nm_typed(const at::Tensor& idx, const at::Tensor& values, const at::Tensor& x, int64_t n, int64_t m,
                    int64_t bits) {
  const int64_t N = values.size(0), L = values.size(1), RB = idx.size(1), B = x.size(0), K = x.size(1);
  const uint8_t* ip = idx.data_ptr<uint8_t>();
  const T* vp = reinterpret_cast<const T*>(values.data_ptr());
  const int64_t g = grain(N, L * std::max<int64_t>(1, B / 4));
  const int ni = int(n), mi = int(m), bi = int(bits);
  if (large(B)) {
    int64_t Bp = 0;
    at::Tensor xt = transposed(x, Bp);
    at::Tensor yt = at::empty({N, Bp}, x.options());
    const float* xp = xt.data_ptr<float>();
    float* yp = yt.data_ptr<float>();
    at::parallel_for(0, N, g, [&](int64_t r0, int64_t r1) { nm_avx2_t<T>(ip, vp, xp, yp, L, RB, ni, mi, bi, Bp, r0, r1); });
    return yt.narrow(1, 0, B).t().contiguous();
  }
  at::Tensor y = at::empty({B, N}, x.options());
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const bool vec = isa() >= 1 && 8 % n == 0, wide = isa() == 2 && 16 % n == 0;
  at::parallel_for(0, N, g, [&](int64_t r0, int64_t r1) {
    if (wide) nm_512<T>(ip, vp, xp, yp, N, K, L, RB, ni, mi, bi, B, r0, r1);
    else if (vec) nm_avx2<T>(ip, vp, xp, yp, N, K, L, RB, ni, mi, bi, B, r0, r1);
    else nm_portable<T>(ip, vp, xp, yp, N, K, L, RB, ni, mi, bi, B, r0, r1);
  });
  return y;
}

template <typename T>
at::Tensor index16_typed(const at::Tensor& idx, const at::Tensor& values, const at::Tensor& offsets,
                         const at::Tensor& x, int64_t N) {
  const int64_t K = x.size(1), B = x.size(0);
  const uint16_t* ip = reinterpret_cast<const uint16_t*>(idx.data_ptr());
  const T* vp = reinterpret_cast<const T*>(values.data_ptr());
  const int64_t* op = offsets.data_ptr<int64_t>();
  const int64_t per_row = std::max<int64_t>(1, (values.numel() / std::max<int64_t>(1, N)) * std::max<int64_t>(1, B / 4));
  const int64_t g = grain(N, per_row);
  if (large(B)) {
    int64_t Bp = 0;
    at::Tensor xt = transposed(x, Bp);
    at::Tensor yt = at::empty({N, Bp}, x.options());
    const float* xp = xt.data_ptr<float>();
    float* yp = yt.data_ptr<float>();
    at::parallel_for(0, N, g, [&](int64_t r0, int64_t r1) {
      if (isa() == 2) index16_512_t<T>(ip, vp, op, xp, yp, Bp, r0, r1);
      else index16_avx2_t<T>(ip, vp, op, xp, yp, Bp, r0, r1);
    });
    return yt.narrow(1, 0, B).t().contiguous();
  }
  at::Tensor y = at::empty({B, N}, x.options());
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, N, g, [&](int64_t r0, int64_t r1) { index16_small<T>(ip, vp, op, xp, yp, N, K, B, r0, r1); });
  return y;
}

void check_x(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous(), "x: contiguous 2-D float32");
}

}  // namespace

at::Tensor bitmask_mm(const at::Tensor& mask, const at::Tensor& values, const at::Tensor& offsets, const at::Tensor& x) {
  check_x(x);
  TORCH_CHECK(mask.scalar_type() == at::kByte && mask.dim() == 2 && mask.is_contiguous(), "mask: uint8 [N, K/8]");
  TORCH_CHECK(x.size(1) == mask.size(1) * 8, "x: K must be 8 * mask.size(1)");
  TORCH_CHECK(offsets.scalar_type() == at::kLong && offsets.numel() == mask.size(0) + 1, "offsets: int64 [N+1]");
  if (values.scalar_type() == at::kBFloat16) return bitmask_typed<uint16_t>(mask, values, offsets, x);
  TORCH_CHECK(values.scalar_type() == at::kFloat, "values: float32 or bfloat16");
  return bitmask_typed<float>(mask, values, offsets, x);
}

at::Tensor nm_mm(const at::Tensor& idx, const at::Tensor& values, const at::Tensor& x, int64_t n, int64_t m,
                 int64_t bits) {
  check_x(x);
  TORCH_CHECK(values.dim() == 2 && values.is_contiguous() && idx.scalar_type() == at::kByte && idx.is_contiguous(),
              "values [N, L], idx uint8 [N, RB]");
  TORCH_CHECK(x.size(1) == values.size(1) / n * m, "x: K must be L / n * m");
  if (values.scalar_type() == at::kBFloat16) return nm_typed<uint16_t>(idx, values, x, n, m, bits);
  TORCH_CHECK(values.scalar_type() == at::kFloat, "values: float32 or bfloat16");
  return nm_typed<float>(idx, values, x, n, m, bits);
}

at::Tensor index16_mm(const at::Tensor& idx, const at::Tensor& values, const at::Tensor& offsets,
                      const at::Tensor& x) {
  check_x(x);
  const int64_t N = offsets.numel() - 1;
  TORCH_CHECK(offsets.scalar_type() == at::kLong && N >= 0 && offsets.is_contiguous(), "offsets: int64 [N+1]");
  TORCH_CHECK(idx.scalar_type() == at::kShort && idx.is_contiguous() && idx.numel() == values.numel() &&
              values.is_contiguous() && values.numel() >= offsets[N].item<int64_t>() + 16,
              "idx int16 [nnz + 16] and values [nnz + 16]");
  TORCH_CHECK(x.size(1) <= 65536, "index16: at most 65,536 columns");
  if (values.scalar_type() == at::kBFloat16) return index16_typed<uint16_t>(idx, values, offsets, x, N);
  TORCH_CHECK(values.scalar_type() == at::kFloat, "values: float32 or bfloat16");
  return index16_typed<float>(idx, values, offsets, x, N);
}

// The kept columns of a bitmask (most significant bit first), row after row, as uint16 (stored in int16), with
// 16 zeros of padding: the index16 layout of the same weights, built without the dense matrix.
at::Tensor index16_from_bitmask(const at::Tensor& mask, int64_t nnz) {
  TORCH_CHECK(mask.scalar_type() == at::kByte && mask.dim() == 2 && mask.is_contiguous(), "mask: uint8 [N, K/8]");
  TORCH_CHECK(mask.size(1) * 8 <= 65536, "index16: at most 65,536 columns");
  at::Tensor idx = at::zeros({nnz + 16}, mask.options().dtype(at::kShort));
  uint16_t* ip = reinterpret_cast<uint16_t*>(idx.data_ptr());
  const uint8_t* mp = mask.data_ptr<uint8_t>();
  int64_t at = 0;
  for (int64_t i = 0; i < mask.numel(); i++) {
    const int64_t col = (i % mask.size(1)) * 8;
    for (unsigned byte = mp[i]; byte;) {
      const int t = __builtin_clz(byte) - 24;
      byte &= ~(0x80u >> t);
      TORCH_CHECK(at < nnz, "the bitmask keeps more weights than nnz");
      ip[at++] = uint16_t(col + t);
    }
  }
  TORCH_CHECK(at == nnz, "the bitmask keeps fewer weights than nnz");
  return idx;
}

int64_t set_isa(int64_t level) {
  g_isa = -1;
  const int64_t best = isa();
  g_isa = int(std::min(level, best));
  return g_isa;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, mod) {
  init_perm();
  init_rev();
  mod.def("bitmask_mm", &bitmask_mm, "y [B, N] = x W^T, W as bitmask + values");
  mod.def("nm_mm", &nm_mm, "y [B, N] = x W^T, W as N:M values + in-group indices");
  mod.def("index16_mm", &index16_mm, "y [B, N] = x W^T, W as values + 16-bit columns + row offsets");
  mod.def("index16_from_bitmask", &index16_from_bitmask, "uint16 columns (int16 storage) of a bitmask's kept weights");
  mod.def("set_isa", &set_isa, "0: portable, 1: AVX2+FMA, 2: AVX-512 (capped at what the CPU has); returns the level used");
}

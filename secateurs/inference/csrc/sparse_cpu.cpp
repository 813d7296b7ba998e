// Sparse CPU kernels for pruned Linear layers (secateurs.inference.fast): y = x W^T, W sparse.
//
// Layouts (built in Python, see fast.py):
//   bitmask: mask uint8 [N, KB] (column c of row r is bit 7 - c % 8 of byte r*KB + c / 8, most significant
//            bit first, as secateurs.storage.sparse stores it), values [nnz + 8] (kept values, row-major,
//            8 zeros of padding), offsets int64 [N + 1] (where each row's values start).
//   N:M:     values [N, G*n] (n per group of m columns, a group with fewer is padded with zeros),
//            idx uint8 [N, RB] (the column of each value inside its group, `bits` bits each, least
//            significant first).
// Values are float32 or bfloat16; x and y are float32. The ISA is chosen at run time: AVX-512 (F/BW/VL/VBMI2:
// expanding loads) or AVX2+FMA where the CPU has it, else portable C++ (set_isa lowers it, for tests).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <cstdint>
#include <cstring>

#define T256 __attribute__((target("avx2,fma,popcnt,bmi,bmi2,lzcnt")))
#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi2,avx2,fma,popcnt,bmi,bmi2,lzcnt")))

namespace {

int g_isa = -1;  // -1: not detected yet; 0: portable; 1: AVX2 + FMA; 2: AVX-512 (F, BW, VL, VBMI2)

int isa() {
  if (g_isa < 0) {
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vbmi2");
    g_isa = avx512 ? 2 : (avx2 ? 1 : 0);
  }
  return g_isa;
}

inline float to_f(float v) { return v; }
inline float to_f(uint16_t v) { uint32_t u = uint32_t(v) << 16; float f; std::memcpy(&f, &u, 4); return f; }

constexpr int64_t kTile = 16;  // batch columns per accumulator tile in the transposed (large-batch) kernels
constexpr int64_t kLargeBatch = 8;

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
    int64_t b = 0;
    for (; b + 4 <= B; b += 4) bitmask_avx2_row<T, 4>(m, p, x + b * K, y + b * N, N, KB, r);
    switch (B - b) {
      case 3: bitmask_avx2_row<T, 3>(m, p, x + b * K, y + b * N, N, KB, r); break;
      case 2: bitmask_avx2_row<T, 2>(m, p, x + b * K, y + b * N, N, KB, r); break;
      case 1: bitmask_avx2_row<T, 1>(m, p, x + b * K, y + b * N, N, KB, r); break;
      default: break;
    }
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
    int64_t t = 0;
    for (; t + 4 <= tiles; t += 4) bitmask_avx2_tiles<T, 4>(m, p, xt, yt, KB, Bp, r, t);
    switch (tiles - t) {
      case 3: bitmask_avx2_tiles<T, 3>(m, p, xt, yt, KB, Bp, r, t); break;
      case 2: bitmask_avx2_tiles<T, 2>(m, p, xt, yt, KB, Bp, r, t); break;
      case 1: bitmask_avx2_tiles<T, 1>(m, p, xt, yt, KB, Bp, r, t); break;
      default: break;
    }
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
    int64_t b = 0;
    for (; b + 4 <= B; b += 4) nm_avx2_row<T, 4>(ir, v, x + b * K, y + b * N, N, K, L, n, m, bits, r);
    switch (B - b) {
      case 3: nm_avx2_row<T, 3>(ir, v, x + b * K, y + b * N, N, K, L, n, m, bits, r); break;
      case 2: nm_avx2_row<T, 2>(ir, v, x + b * K, y + b * N, N, K, L, n, m, bits, r); break;
      case 1: nm_avx2_row<T, 1>(ir, v, x + b * K, y + b * N, N, K, L, n, m, bits, r); break;
      default: break;
    }
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

T512 inline __m512 expand16(const float* p, __mmask16 k) { return _mm512_maskz_expandloadu_ps(k, p); }
T512 inline __m512 expand16(const uint16_t* p, __mmask16 k) {
  __m256i h = _mm256_maskz_expandloadu_epi16(k, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
T512 inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
T512 inline __m512 load16(const uint16_t* p) {
  __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// Small batch: per 16 columns, one expanding load puts the kept values in their lanes.
template <typename T, int NB>
T512 void bitmask_512_row(const uint8_t* m, const T* p, const float* x, float* y, int64_t N, int64_t KB, int64_t r) {
  const int64_t K = KB * 8;
  __m512 acc[NB];
  for (int j = 0; j < NB; j++) acc[j] = _mm512_setzero_ps();
  int64_t kb = 0;
  for (; kb + 2 <= KB; kb += 2) {
    const unsigned k = g_rev[m[kb]] | (unsigned(g_rev[m[kb + 1]]) << 8);
    __m512 w = expand16(p, __mmask16(k));
    p += _mm_popcnt_u32(k);
    for (int j = 0; j < NB; j++) acc[j] = _mm512_fmadd_ps(w, _mm512_loadu_ps(x + j * K + kb * 8), acc[j]);
  }
  if (kb < KB) {  // the last 8 columns
    __m512 w = expand16(p, __mmask16(g_rev[m[kb]]));
    for (int j = 0; j < NB; j++) acc[j] = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(0xFF, x + j * K + kb * 8), acc[j]);
  }
  for (int j = 0; j < NB; j++) y[j * N + r] = _mm512_reduce_add_ps(acc[j]);
}

template <typename T>
T512 void bitmask_512(const uint8_t* mask, const T* vals, const int64_t* off, const float* x, float* y, int64_t N,
                      int64_t KB, int64_t B, int64_t r0, int64_t r1) {
  const int64_t K = KB * 8;
  for (int64_t r = r0; r < r1; r++) {
    const uint8_t* m = mask + r * KB;
    const T* p = vals + off[r];
    int64_t b = 0;
    for (; b + 4 <= B; b += 4) bitmask_512_row<T, 4>(m, p, x + b * K, y + b * N, N, KB, r);
    switch (B - b) {
      case 3: bitmask_512_row<T, 3>(m, p, x + b * K, y + b * N, N, KB, r); break;
      case 2: bitmask_512_row<T, 2>(m, p, x + b * K, y + b * N, N, KB, r); break;
      case 1: bitmask_512_row<T, 1>(m, p, x + b * K, y + b * N, N, KB, r); break;
      default: break;
    }
  }
}

// N:M, small batch, n dividing 16: 16 values at a time; where they span 32 columns (m = 2n: 2:4, 4:8, 8:16)
// one two-register permute fetches their inputs, else a gather.
template <typename T, int NB>
T512 void nm_512_row(const uint8_t* ir, const T* v, const float* x, float* y, int64_t N, int64_t K, int64_t L, int n,
                     int m, int bits, int64_t r) {
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i shifts = _mm512_mullo_epi32(_mm512_and_si512(lane, _mm512_set1_epi32(7)), _mm512_set1_epi32(bits));
  const __m512i base = _mm512_mullo_epi32(_mm512_srli_epi32(lane, __builtin_ctz(n)), _mm512_set1_epi32(m));
  const __m512i low = _mm512_set1_epi32((1 << bits) - 1);
  const bool span32 = m == 2 * n;
  __m512 acc[NB];
  for (int j = 0; j < NB; j++) acc[j] = _mm512_setzero_ps();
  int64_t j16 = 0;
  for (; j16 + 16 <= L; j16 += 16) {
    uint64_t word = 0;
    if (bits == 2) {  // 16 values x bits = 2 * bits bytes; fixed sizes so that the copy is one load
      uint32_t w32;
      std::memcpy(&w32, ir + j16 / 4, 4);
      word = w32;
    } else {
      std::memcpy(&word, ir + j16 / 2, 8);
    }
    const uint32_t lo = uint32_t(word & ((uint64_t(1) << (8 * bits)) - 1)), hi = uint32_t(word >> (8 * bits));
    __m512i words = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi32(int(lo))), _mm256_set1_epi32(int(hi)), 1);
    __m512i cols = _mm512_add_epi32(_mm512_and_si512(_mm512_srlv_epi32(words, shifts), low), base);
    const int64_t first = (j16 / n) * m;
    __m512 w = load16(v + j16);
    for (int j = 0; j < NB; j++) {
      const float* xs = x + j * K + first;
      __m512 xg = span32 ? _mm512_permutex2var_ps(_mm512_loadu_ps(xs), cols, _mm512_loadu_ps(xs + 16))
                         : _mm512_i32gather_ps(cols, xs, 4);
      acc[j] = _mm512_fmadd_ps(w, xg, acc[j]);
    }
  }
  for (int j = 0; j < NB; j++) {
    float s = _mm512_reduce_add_ps(acc[j]);
    for (int64_t jj = j16; jj < L; jj++) s += to_f(v[jj]) * x[j * K + nm_col(ir, jj, n, m, bits)];
    y[j * N + r] = s;
  }
}

template <typename T>
T512 void nm_512(const uint8_t* idx, const T* vals, const float* x, float* y, int64_t N, int64_t K, int64_t L,
                 int64_t RB, int n, int m, int bits, int64_t B, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; r++) {
    const uint8_t* ir = idx + r * RB;
    const T* v = vals + r * L;
    int64_t b = 0;
    for (; b + 4 <= B; b += 4) nm_512_row<T, 4>(ir, v, x + b * K, y + b * N, N, K, L, n, m, bits, r);
    switch (B - b) {
      case 3: nm_512_row<T, 3>(ir, v, x + b * K, y + b * N, N, K, L, n, m, bits, r); break;
      case 2: nm_512_row<T, 2>(ir, v, x + b * K, y + b * N, N, K, L, n, m, bits, r); break;
      case 1: nm_512_row<T, 1>(ir, v, x + b * K, y + b * N, N, K, L, n, m, bits, r); break;
      default: break;
    }
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
  mod.def("set_isa", &set_isa, "0: portable, 1: AVX2+FMA, 2: AVX-512 (capped at what the CPU has); returns the level used");
}

// Per-pixel math of the dense-CRF mean-field update, shared by the CPU and CUDA paths so both give the same
// numbers: pydensecrf's expAndNormalize (softmax of one pixel's K energies) with a vectorisable exp.
#pragma once

#include <cstdint>
#include <cstring>

#include "lattice_math.h"

namespace toco_fast {

// exp(x) for float32 with Cephes' range reduction and polynomial (the one Eigen uses for pydensecrf's
// vectorised exp), about 1 ulp. Written with plain float arithmetic only, so compilers vectorise the softmax loop
// (a libm expf call per element would cost a large part of a CPU mean-field iteration). Arguments are clamped to
// [-87.3, 88] (below, the result is about 1e-38 instead of a denormal or 0); NaN propagates.
TOCO_HD float fast_exp(float x) {
  const float kMax = 88.0f;
  const float kMin = -87.33654475f;  // ln(2^-126): keeps 2^n a normal number
  const float kRound = 12582912.0f;  // 1.5 * 2^23: (v + kRound) - kRound rounds v to the nearest integer
  x = x > kMax ? kMax : x;
  x = x < kMin ? kMin : x;
  const float n = (x * 1.44269504088896341f + kRound) - kRound;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  const float r2 = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r2 + r + 1.0f;
  // 2^n through the exponent bits (n in [-126, 127]).
  const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
  float scale;
  memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// pydensecrf's expAndNormalize of one pixel: dst = softmax(sign * src) over `channels` values.
TOCO_HD void softmax_row(const float* src, float* dst, int64_t channels, float sign) {
  // The maximum in kLanes independent running maxima (same value in any order; the compiler vectorises it).
  constexpr int kLanes = 8;
  float lanes[kLanes];
  for (int j = 0; j < kLanes; ++j) lanes[j] = sign * src[0];
  int64_t k = 0;
  for (; k + kLanes <= channels; k += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const float v = sign * src[k + j];
      lanes[j] = v > lanes[j] ? v : lanes[j];
    }
  }
  for (; k < channels; ++k) {
    const float v = sign * src[k];
    lanes[0] = v > lanes[0] ? v : lanes[0];
  }
  float top = lanes[0];
  for (int j = 1; j < kLanes; ++j) top = lanes[j] > top ? lanes[j] : top;
  // Separate loops: the exponentials vectorise, the (ordered) float sum does not.
  for (int64_t k = 0; k < channels; ++k) dst[k] = fast_exp(sign * src[k] - top);
  float total = 0.0f;
  for (int64_t k = 0; k < channels; ++k) total += dst[k];
  for (int64_t k = 0; k < channels; ++k) dst[k] = dst[k] / total;
}

}  // namespace toco_fast

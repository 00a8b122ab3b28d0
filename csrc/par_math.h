// Per-pixel math of PAR (pixel-adaptive refinement, toco_fast/ops/par.py; the formulas are stated in
// kernels/par.py), shared by the CPU path (par_cpu.cpp) and any CUDA path so both give the same numbers. Float
// operations follow the Triton kernel one for one (fp32, same order; -ffp-contract=off keeps a*b+c unfused).
#pragma once

#include <cmath>
#include <cstdint>

#include "lattice_math.h"  // TOCO_HD

namespace toco_fast {

// Replicate padding: coordinate v clamped to [0, size).
TOCO_HD int64_t clamp_coord(int64_t v, int64_t size) { return v < 0 ? 0 : (v >= size ? size - 1 : v); }

// An offset beyond the image reads the same clamped pixels as one of exactly the image size, so offsets are
// clamped to [-size, size] once: later sums cannot overflow and padding never needs to be wider than the image.
TOCO_HD int64_t clamp_offset(int64_t d, int64_t size) { return d < -size ? -size : (d > size ? size : d); }

// One colour channel's part of a neighbour's affinity logit, (|v - centre| / (std + eps) / w1)^2, in the
// reference's order of operations.
TOCO_HD float colour_distance2(float value, float centre, float std_dev, float eps, float w1) {
  const float q = fabsf(value - centre) / (std_dev + eps) / w1;
  return q * q;
}

// The logit of a neighbour from its colour_distance2 summed over the 3 channels: minus their mean.
TOCO_HD float affinity_logit(float distance2_sum) { return -distance2_sum / 3.0f; }

// Unbiased standard deviation of n >= 2 values from their sum of squared deviations from the mean.
TOCO_HD float unbiased_std(double sum_squared_deviations, int64_t n) {
  return static_cast<float>(sqrt(sum_squared_deviations / static_cast<double>(n - 1)));
}

}  // namespace toco_fast

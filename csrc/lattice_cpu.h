// CPU lattice shared by the CPU bilateral filter (lattice_cpu.cpp) and the CPU dense CRF (crf_cpu.cpp).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "lattice.h"

namespace toco_fast {
namespace cpu {

// The lattice of one image: which lattice points each pixel splats to, with what weight, and each lattice
// point's blur neighbours.
struct Lattice {
  int dim = 0;
  int64_t num_pixels = 0;
  int64_t num_points = 0;
  float alpha = 0.0f;
  std::vector<int32_t> point;        // [N * (D+1)] lattice point of entry e = pixel * (D+1) + vertex
  std::vector<float> weight;         // [N * (D+1)] barycentric weight of entry e
  std::vector<int32_t> neighbors;    // [(D+1) * M * 2] (minus, plus) neighbour of point m along direction j, or -1
};

// Builds the lattice of features [N, dim] (dim 2 or 5).
Lattice build_lattice(const float* features, int64_t num_pixels, int dim);

// Lattice-value buffers reused across filtering passes (a CRF filters 2 x iterations times).
struct FilterBuffers {
  std::vector<float> values;
  std::vector<float> scratch;
  std::vector<float> zeros;
};

void filter(const Lattice& lattice, const FilterArgs& args, FilterBuffers& buffers);

// Runs fn(b) for every image of a batch of images of num_pixels pixels: in parallel over images when there are
// several and they are large enough to be worth a thread each; otherwise one after another on the calling thread,
// so that the lattice passes inside an image can use all threads.
void for_each_image(int64_t batch, int64_t num_pixels, const std::function<void(int64_t)>& fn);

}  // namespace cpu
}  // namespace toco_fast

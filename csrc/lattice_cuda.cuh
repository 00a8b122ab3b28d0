// CUDA lattice shared by the CUDA bilateral filter (lattice_cuda.cu) and the CUDA dense CRF (crf_cuda.cu).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "lattice.h"

namespace toco_fast {
namespace cuda {

// The lattices of a chunk of B images (one hash table per image, lattice points numbered across the chunk).
// Entry e = pixel * (D+1) + vertex, pixel = image * N + n. Splatting is a gather over each point's entries in
// pixel order (a stable sort), so it is deterministic and sums in the reference's order.
struct DeviceLattice {
  int dim = 0;
  int64_t num_pixels = 0;  // B * N
  int64_t num_points = 0;  // M
  float alpha = 0.0f;
  at::Tensor point;        // int32 [B*N*(D+1)] lattice point of each entry
  at::Tensor weight;       // float [B*N*(D+1)] barycentric weight of each entry
  at::Tensor neighbors;    // int32 [D+1, M, 2] (minus, plus) neighbour along each direction, or -1
  at::Tensor splat_start;  // int32 [M+1] entries of point m: splat_entry[splat_start[m] : splat_start[m+1]]
  at::Tensor splat_entry;  // int32 [B*N*(D+1)] entries grouped by lattice point
};

// Builds the lattices of features [B, N, D] (a CUDA tensor, D 2 or 5) on the current stream.
DeviceLattice build_lattice(const at::Tensor& features);

// One filtering pass (see FilterArgs) with device pointers of [B*N, K] rows.
void filter(const DeviceLattice& lattice, const FilterArgs& args);

// How many images of N pixels go into one lattice build, bounding the memory of the build (keys, hash tables)
// and keeping every index within int32.
int64_t images_per_chunk(int64_t batch, int64_t num_pixels, int64_t dim);

}  // namespace cuda
}  // namespace toco_fast

// device_stage_cpu.cpp: device_stage.h for builds without CUDA (plain host memory, no staging).
#ifndef MO_WITH_CUDA
#include <cstdlib>
#include <new>

#include "autograd/check.h"
#include "data/device_stage.h"

namespace mo::data {

HostBuffer::HostBuffer(size_t bytes) : bytes_(bytes) {
  ptr_ = static_cast<uint8_t*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64));
  if (!ptr_) throw std::bad_alloc();
}
HostBuffer::~HostBuffer() { std::free(ptr_); }

struct DeviceStage::Impl {};
DeviceStage::DeviceStage(int, size_t, int) { MO_FAIL("DeviceStage: this build of mo has no CUDA support"); }
DeviceStage::~DeviceStage() = default;
void DeviceStage::upload(const void*, size_t, int) {}
Tensor DeviceStage::acquire(int) { return {}; }
void DeviceStage::release(int) {}
void DeviceStage::wait_upload(int) {}

}  // namespace mo::data
#endif

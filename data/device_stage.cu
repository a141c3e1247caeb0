// device_stage.cu: pinned host buffers and the staging buffers of the loader (see device_stage.h).
#include <cstdlib>
#include <new>
#include <vector>

#include "autograd/cuda_allocator.h"
#include "autograd/cuda_check.h"
#include "data/device_stage.h"

namespace mo::data {

HostBuffer::HostBuffer(size_t bytes) : bytes_(bytes) {
  if (cuda_available() && cudaHostAlloc(reinterpret_cast<void**>(&ptr_), bytes, cudaHostAllocDefault) == cudaSuccess) {
    pinned_ = true;
    return;
  }
  cudaGetLastError();  // clear a failed cudaHostAlloc; fall back to pageable memory
  ptr_ = static_cast<uint8_t*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64));
  if (!ptr_) throw std::bad_alloc();
}

HostBuffer::~HostBuffer() {
  if (pinned_) cudaFreeHost(ptr_);
  else std::free(ptr_);
}

struct DeviceStage::Impl {
  int device = 0;
  cudaStream_t copy = nullptr;
  std::vector<Tensor> bufs;
  std::vector<cudaEvent_t> uploaded, consumed;
};

DeviceStage::DeviceStage(int device, size_t bytes, int count) : impl_(new Impl) {
  impl_->device = device;
  CUDA_CHECK(cudaSetDevice(device));
  CUDA_CHECK(cudaStreamCreateWithFlags(&impl_->copy, cudaStreamNonBlocking));
  for (int i = 0; i < count; ++i) {
    impl_->bufs.push_back(Tensor::empty({static_cast<int64_t>(bytes)}, DType::u8, Device::cuda(device)));
    cudaEvent_t a, b;
    CUDA_CHECK(cudaEventCreateWithFlags(&a, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&b, cudaEventDisableTiming));
    impl_->uploaded.push_back(a);
    impl_->consumed.push_back(b);
    CUDA_CHECK(cudaEventRecord(b, stream()));  // the buffers start free
  }
}

// A destructor cannot report: the calls' errors are ignored here (a failed device has already failed the
// work that used these streams, and that error was reported there).
DeviceStage::~DeviceStage() {
  if (!impl_) return;
  cudaStreamSynchronize(impl_->copy);
  cudaStreamSynchronize(stream());
  for (auto e : impl_->uploaded) cudaEventDestroy(e);
  for (auto e : impl_->consumed) cudaEventDestroy(e);
  cudaStreamDestroy(impl_->copy);
  delete impl_;
}

void DeviceStage::upload(const void* host, size_t bytes, int which) {
  MO_CHECK(bytes <= impl_->bufs[which].nbytes(), "DeviceStage: {} bytes into a {}-byte staging buffer", bytes,
           impl_->bufs[which].nbytes());
  CUDA_CHECK(cudaStreamWaitEvent(impl_->copy, impl_->consumed[which], 0));
  CUDA_CHECK(cudaMemcpyAsync(impl_->bufs[which].raw_data(), host, bytes, cudaMemcpyHostToDevice, impl_->copy));
  CUDA_CHECK(cudaEventRecord(impl_->uploaded[which], impl_->copy));
}

Tensor DeviceStage::acquire(int which) {
  CUDA_CHECK(cudaStreamWaitEvent(stream(), impl_->uploaded[which], 0));
  return impl_->bufs[which];
}

void DeviceStage::release(int which) { CUDA_CHECK(cudaEventRecord(impl_->consumed[which], stream())); }

void DeviceStage::wait_upload(int which) { CUDA_CHECK(cudaEventSynchronize(impl_->uploaded[which])); }

}  // namespace mo::data

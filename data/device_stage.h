// device_stage.h: host <-> GPU plumbing of the loader. HostBuffer is page-locked (cudaHostAlloc) when
// CUDA is built in and a GPU is present, plain memory otherwise. DeviceStage owns a few device staging
// buffers that batches are uploaded into on a dedicated copy stream (one cudaMemcpyAsync per batch);
// the compute stream waits for the upload before reading, and an upload into a staging buffer waits
// until the compute stream has finished with it. Defined in device_stage.cu; a CPU-only build gets
// HostBuffer as plain memory and a DeviceStage that refuses to start (device_stage_cpu.cpp).
#pragma once
#include <cstddef>
#include <cstdint>

#include "autograd/tensor.h"

namespace mo::data {

class HostBuffer {
 public:
  explicit HostBuffer(size_t bytes);
  ~HostBuffer();
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;
  uint8_t* data() const { return ptr_; }
  size_t size() const { return bytes_; }
  bool pinned() const { return pinned_; }

 private:
  uint8_t* ptr_ = nullptr;
  size_t bytes_ = 0;
  bool pinned_ = false;
};

class DeviceStage {
 public:
  DeviceStage(int device, size_t bytes, int count = 2);
  ~DeviceStage();
  DeviceStage(const DeviceStage&) = delete;
  DeviceStage& operator=(const DeviceStage&) = delete;
  // Starts copying `bytes` from host (ideally a pinned HostBuffer) into staging buffer `which`.
  void upload(const void* host, size_t bytes, int which);
  // The staging buffer as a uint8 tensor; the compute stream is made to wait for its upload first.
  Tensor acquire(int which);
  // Marks the compute stream's use of `which` as finished (call after enqueueing the kernels that read it).
  void release(int which);
  // Blocks until the upload into `which` is complete (its host memory may then be reused).
  void wait_upload(int which);

 private:
  struct Impl;
  Impl* impl_ = nullptr;
};

}  // namespace mo::data

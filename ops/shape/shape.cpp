// shape.cpp: split/concat along the last dim (each the other's backward), permute (backward is the
// inverse permutation) and reshape. Strided copies go through Tensor::copy_ (CPU and CUDA).
#include "ops/shape/shape.h"

#include "ops/common.h"

namespace mo {

namespace {

// dst[..., off:off+w] = src[..., :]   (or the reverse when to_piece)
void copy_block(const Tensor& big, int64_t off, const Tensor& piece, bool to_piece) {
  int64_t C = big.size(-1), w = piece.size(-1);
  Shape st = big.strides();
  Tensor view = big.as_strided(piece.shape(), st, big.offset() + off);
  if (to_piece) Tensor(piece).copy_(view);
  else view.copy_(piece);
  (void)C;
}

}  // namespace

std::vector<Tensor> split_last(const Tensor& x_in, const std::vector<int64_t>& sizes) {
  Tensor x = x_in.contiguous();
  int64_t total = 0;
  for (auto s : sizes) total += s;
  MO_CHECK(x.dim() >= 1 && total == x.size(-1), "split_last: sizes [{}] do not add up to the last dim of {}",
           fmt::join(sizes, ", "), x.str());
  std::vector<Tensor> out;
  int64_t off = 0;
  for (auto s : sizes) {
    Shape sh = x.shape();
    sh.back() = s;
    Tensor p = Tensor::empty(sh, x.dtype(), x.device());
    copy_block(x, off, p, true);
    out.push_back(p);
    off += s;
  }
  std::vector<Tensor*> outs;
  for (auto& t : out) outs.push_back(&t);
  record("split_last", {x_in}, outs, [sizes, shape = x.shape(), dt = x.dtype(), dev = x.device()](std::vector<Tensor>& g) -> std::vector<Tensor> {
    Tensor dx = Tensor::zeros(shape, dt, dev);
    int64_t off = 0;
    for (size_t i = 0; i < sizes.size(); ++i) {
      if (g[i].defined()) copy_block(dx, off, g[i].contiguous(), false);
      off += sizes[i];
    }
    return {dx};
  });
  return out;
}

Tensor concat_last(const std::vector<Tensor>& xs) {
  MO_CHECK(!xs.empty(), "concat_last: no tensors");
  Shape sh = xs[0].shape();
  int64_t total = 0;
  std::vector<int64_t> sizes;
  for (auto& t : xs) {
    MO_CHECK(t.dim() == xs[0].dim() && std::equal(sh.begin(), sh.end() - 1, t.shape().begin()),
             "concat_last: {} does not match {} outside the last dim", t.str(), xs[0].str());
    check_same("concat_last", {&xs[0], &t});
    sizes.push_back(t.size(-1));
    total += t.size(-1);
  }
  sh.back() = total;
  Tensor out = Tensor::empty(sh, xs[0].dtype(), xs[0].device());
  int64_t off = 0;
  for (auto& t : xs) {
    copy_block(out, off, t.contiguous(), false);
    off += t.size(-1);
  }
  record("concat_last", xs, {&out}, [sizes](std::vector<Tensor>& g) -> std::vector<Tensor> {
    Tensor dy = g[0].contiguous();
    std::vector<Tensor> d;
    int64_t off = 0;
    for (auto s : sizes) {
      Shape sh = dy.shape();
      sh.back() = s;
      Tensor p = Tensor::empty(sh, dy.dtype(), dy.device());
      copy_block(dy, off, p, true);
      d.push_back(p);
      off += s;
    }
    return d;
  });
  return out;
}

Tensor permute(const Tensor& x, const std::vector<int64_t>& perm) {
  MO_CHECK(static_cast<int64_t>(perm.size()) == x.dim(), "permute: {} dims given for {}", perm.size(), x.str());
  Shape sh(perm.size()), st(perm.size());
  std::vector<int64_t> inv(perm.size(), -1);
  for (size_t i = 0; i < perm.size(); ++i) {
    MO_CHECK(perm[i] >= 0 && perm[i] < x.dim() && inv[perm[i]] < 0, "permute: invalid permutation [{}] for {}",
             fmt::join(perm, ", "), x.str());
    inv[perm[i]] = static_cast<int64_t>(i);
    sh[i] = x.shape()[perm[i]];
    st[i] = x.strides()[perm[i]];
  }
  Tensor out = x.as_strided(sh, st, x.offset()).contiguous();
  if (out.storage() == x.storage()) out = out.clone();  // identity permutation: still a fresh tensor
  record("permute", {x}, {&out}, [inv](std::vector<Tensor>& g) -> std::vector<Tensor> {
    NoGradGuard ng;
    return {permute(g[0], inv)};
  });
  return out;
}

Tensor reshape(const Tensor& x, const Shape& shape) {
  Tensor out = x.contiguous().view(shape);
  if (out.storage() == x.storage()) out = out.detach();
  record("reshape", {x}, {&out}, [xs = x.shape()](std::vector<Tensor>& g) -> std::vector<Tensor> {
    return {g[0].contiguous().view(xs)};
  });
  return out;
}

}  // namespace mo

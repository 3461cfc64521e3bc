// RUN: einc opt %s -t triton | filecheck %s

// A "contraction" group: x @ w^T + b, then relu, as one tl.dot kernel whose
// epilogue applies the bias and max in registers before the one store.
// CHECK:      @triton.autotune(configs=tuned([
// CHECK:      def [[K:k0_\w+]](in_x, in_w, in_b, out_out0, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
// CHECK-NEXT:   # y[m, n] = add_{k}(gx[m, k] * gw[n, k])
// CHECK-NEXT:   # r[m, n] = max(y[m, n] + gb[n], 0.0)
// CHECK-NEXT:   # M = 64 (m), N = 48 (n), K = 96
// CHECK:        rn = offs_n % 48
// CHECK:        for k0 in range(0, 96, BLOCK_K):
// CHECK:          [[A:v[0-9]+]] = tl.load(in_x + rm[:, None] * 96 + kk[None, :], mask=kk[None, :] < 96, other=0.0)
// CHECK-NEXT:     [[B:v[0-9]+]] = tl.load(in_w + kk[:, None] + rn[None, :] * 96, mask=kk[:, None] < 96, other=0.0)
// CHECK-NEXT:     acc = tl.dot([[A]], [[B]], acc)
// CHECK-NEXT:   [[BIAS:v[0-9]+]] = tl.load(in_b + offs_n[None, :], mask=offs_n[None, :] < 48, other=0.0).to(tl.float32)
// CHECK-NEXT:   [[SUM:v[0-9]+]] = acc + [[BIAS]]
// CHECK-NEXT:   [[RELU:v[0-9]+]] = tl.maximum([[SUM]], 0.0)
// CHECK-NEXT:   tl.store(out_out0 + offs_m[:, None] * 48 + offs_n[None, :], [[RELU]].to(tl.float16), mask=offs_n[None, :] < 48)
// CHECK:      def launch(buffers):
// CHECK:        [[K]][lambda meta: (triton.cdiv(64, meta["BLOCK_M"]) * triton.cdiv(48, meta["BLOCK_N"]), 1)](in_x, in_w, in_b, out_out0)
// 
func.func @main(%x: tensor<64x96xf16>, %w: tensor<48x96xf16>, %b: tensor<48xf16>) -> tensor<64x48xf16> {
  %0 = ein.group "contraction" (%x, %w, %b) : (tensor<64x96xf16>, tensor<48x96xf16>, tensor<48xf16>) -> tensor<64x48xf16> {
  ^bb0(%gx: tensor<64x96xf16>, %gw: tensor<48x96xf16>, %gb: tensor<48xf16>):
    %y = ein.einsum (%gx[m, k], %gw[n, k]) -> [m, n] map "$0 * $1" reduce add : (tensor<64x96xf16>, tensor<48x96xf16>) -> tensor<64x48xf16>
    %r = ein.einsum (%y[m, n], %gb[n]) -> [m, n] map "max($0 + $1, 0.0)" : (tensor<64x48xf16>, tensor<48xf16>) -> tensor<64x48xf16>
    ein.yield %r : tensor<64x48xf16>
  }
  func.return %0 : tensor<64x48xf16>
}

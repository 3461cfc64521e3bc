// RUN: einc opt %s -t triton | filecheck %s

// Transposes, broadcasts and order-keeping reshapes are strided views: the
// kernel reading them indexes the buffer underneath, and no copy is made; the
// output, a reshape of the sum, is written by the kernel that computes the sum.
// CHECK-NOT:  @triton.autotune
// CHECK:      def [[K:k0_\w+]](in_x, in_y, out_out0):
// CHECK:        [[I:v[0-9]+]] = p // 128
// CHECK-NEXT:   [[J:v[0-9]+]] = (p // 16) % 8
// CHECK-NEXT:   [[K2:v[0-9]+]] = p % 16
// CHECK-NEXT:   [[T:v[0-9]+]] = tl.load(in_x + [[I]] * 16 + [[J]] * 64 + [[K2]])
// CHECK-NEXT:   [[B:v[0-9]+]] = tl.load(in_y + [[K2]])
// CHECK-NEXT:   [[S:v[0-9]+]] = [[T]] + [[B]]
// CHECK-NEXT:   tl.store(out_out0 + p, [[S]])
// CHECK-NOT:  @triton.autotune
// CHECK:      def launch(buffers):
// CHECK-NOT:  k1_
// CHECK:        [[K]][(1,)](in_x, in_y, out_out0, num_warps=4)
// CHECK-NOT:  k1_
// 
func.func @main(%x: tensor<8x4x16xf32>, %y: tensor<16xf32>) -> tensor<4x128xf32> {
  %t = ein.einsum (%x[i, j, k]) -> [j, i, k] : (tensor<8x4x16xf32>) -> tensor<4x8x16xf32>
  %b = ein.einsum (%y[k]) -> [j, i, k] : (tensor<16xf32>) -> tensor<4x8x16xf32>
  %s = ein.einsum (%t[a, b, c], %b[a, b, c]) -> [a, b, c] map "$0 + $1" : (tensor<4x8x16xf32>, tensor<4x8x16xf32>) -> tensor<4x8x16xf32>
  %o = ein.reshape %s : tensor<4x8x16xf32> -> tensor<4x128xf32>
  func.return %o : tensor<4x128xf32>
}

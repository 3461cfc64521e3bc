// RUN: einc opt %s -p "tile{mr=6 nr=16 kc=256 mc=72 nc=512 lanes=8}" | filecheck %s

// The block sizes are recorded on the contraction group; its body is unchanged.
// CHECK-LABEL: func.func @matmul
// CHECK:       ein.group "contraction"
// CHECK-SAME:  einc.tile = {mr = 6 : i64, nr = 16 : i64, kc = 256 : i64, mc = 72 : i64, nc = 512 : i64, lanes = 8 : i64}
// CHECK-NEXT:  ^{{.+}}
// CHECK-NEXT:    ein.einsum
func.func @matmul(%a: tensor<4x8xf32>, %b: tensor<8x3xf32>) -> tensor<4x3xf32> {
  %0 = ein.group "contraction" (%a, %b) : (tensor<4x8xf32>, tensor<8x3xf32>) -> tensor<4x3xf32> {
  ^bb0(%x: tensor<4x8xf32>, %y: tensor<8x3xf32>):
    %1 = ein.einsum (%x[m, k], %y[k, n]) -> [m, n] map "$0 * $1" reduce add : (tensor<4x8xf32>, tensor<8x3xf32>) -> tensor<4x3xf32>
    ein.yield %1 : tensor<4x3xf32>
  }
  func.return %0 : tensor<4x3xf32>
}

// RUN: einc opt %s -p onnx-to-ein --split-input-file | filecheck %s

// Gemm with a bias: the contraction, then the bias as a broadcast map.
// CHECK-LABEL: func.func @gemm
// CHECK:       %[[Y:.+]] = ein.einsum (%{{.*}}[m, k], %{{.*}}[n, k]) -> [m, n] map "$0 * $1" reduce add : (tensor<64x784xf32>, tensor<10x784xf32>) -> tensor<64x10xf32>
// CHECK-NEXT:  %[[B:.+]] = ein.einsum (%[[Y]][i0, i1], %{{.*}}[i1]) -> [i0, i1] map "$0 + $1"
// CHECK-NEXT:  %[[R:.+]] = ein.einsum (%[[B]][i0, i1]) -> [i0, i1] map "max($0, 0.0)"
// CHECK-NEXT:  func.return %[[R]]
// CHECK-NOT:   onnx.
func.func @gemm(%x: tensor<64x784xf32>, %w: tensor<10x784xf32>, %b: tensor<10xf32>) -> tensor<64x10xf32> {
  %h = onnx.Gemm(%x, %w, %b) {transB = 1 : i64, onnx_node = "fc1"} : (tensor<64x784xf32>, tensor<10x784xf32>, tensor<10xf32>) -> tensor<64x10xf32>
  %y = onnx.Relu(%h) : (tensor<64x10xf32>) -> tensor<64x10xf32>
  func.return %y : tensor<64x10xf32>
}

// -----

// Softmax over the last axis is the 3-pass cascade: max, exp(x - max), sum, divide.
// CHECK-LABEL: func.func @softmax
// CHECK:       %[[GM:.+]] = ein.einsum (%[[X:.+]][i0, i1]) -> [i0] reduce max
// CHECK-NEXT:  %[[SN:.+]] = ein.einsum (%[[X]][i0, i1], %[[GM]][i0]) -> [i0, i1] map "exp($0 - $1)"
// CHECK-NEXT:  %[[SD:.+]] = ein.einsum (%[[SN]][i0, i1]) -> [i0] reduce add
// CHECK-NEXT:  %[[A:.+]] = ein.einsum (%[[SN]][i0, i1], %[[SD]][i0]) -> [i0, i1] map "$0 / $1"
func.func @softmax(%x: tensor<4x16xf32>) -> tensor<4x16xf32> {
  %y = onnx.Softmax(%x) {axis = -1 : i64} : (tensor<4x16xf32>) -> tensor<4x16xf32>
  func.return %y : tensor<4x16xf32>
}

// -----

// Batched matmul broadcasts the batch of the 2-D operand; transpose is an
// einsum that permutes indices; reshape is a view.
// CHECK-LABEL: func.func @attention_pieces
// CHECK:       ein.einsum (%{{.*}}[b0, m, k], %{{.*}}[k, n]) -> [b0, m, n] map "$0 * $1" reduce add
// CHECK:       ein.einsum (%{{.*}}[i0, i1, i2]) -> [i1, i0, i2] : (tensor<2x8x4xf32>) -> tensor<8x2x4xf32>
// CHECK:       ein.reshape %{{.*}} : tensor<8x2x4xf32> -> tensor<8x8xf32>
func.func @attention_pieces(%x: tensor<2x8x16xf32>, %w: tensor<16x4xf32>, %s: tensor<2xi64>) -> tensor<8x8xf32> {
  %p = onnx.MatMul(%x, %w) : (tensor<2x8x16xf32>, tensor<16x4xf32>) -> tensor<2x8x4xf32>
  %t = onnx.Transpose(%p) {perm = array<i64: 1, 0, 2>} : (tensor<2x8x4xf32>) -> tensor<8x2x4xf32>
  %r = onnx.Reshape(%t, %s) : (tensor<8x2x4xf32>, tensor<2xi64>) -> tensor<8x8xf32>
  func.return %r : tensor<8x8xf32>
}

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

// -----

// If on a run-time condition: the branches move into an ein.if and their onnx
// ops lower in place, reading the outer %x directly. The importer puts the
// subgraphs in attribute-name order; the attributes say which region is which.
// CHECK-LABEL: func.func @if_runtime
// CHECK:       %[[R:.+]] = ein.if %{{.*}} : tensor<i1> -> (tensor<4xf32>) {
// CHECK-NEXT:    %[[E:.+]] = ein.einsum (%[[X:.+]][i0]) -> [i0] map "exp($0)"
// CHECK-NEXT:    ein.yield %[[E]] : tensor<4xf32>
// CHECK-NEXT:  } else {
// CHECK-NEXT:    %[[N:.+]] = ein.einsum (%[[X]][i0]) -> [i0] map "-$0"
// CHECK-NEXT:    ein.yield %[[N]] : tensor<4xf32>
// CHECK-NEXT:  }
// CHECK-NEXT:  func.return %[[R]]
func.func @if_runtime(%c: tensor<i1>, %x: tensor<4xf32>) -> tensor<4xf32> {
  %y = onnx.If(%c) {else_branch = 0 : i64, then_branch = 1 : i64} : (tensor<i1>) -> tensor<4xf32> {
    %e = onnx.Neg(%x) : (tensor<4xf32>) -> tensor<4xf32>
    onnx.yield %e : tensor<4xf32>
  } {
    %t = onnx.Exp(%x) : (tensor<4xf32>) -> tensor<4xf32>
    onnx.yield %t : tensor<4xf32>
  }
  func.return %y : tensor<4xf32>
}

// -----

// If on a compile-time condition: the taken branch is inlined; no ein.if remains.
// CHECK-LABEL: func.func @if_known
// CHECK-NOT:   ein.if
// CHECK:       %[[N:.+]] = ein.einsum (%{{.*}}[i0]) -> [i0] map "-$0"
// CHECK-NEXT:  func.return %[[N]]
func.func @if_known(%x: tensor<4xf32>) -> tensor<4xf32> {
  %c = ein.constant dense<false> : tensor<i1>
  %y = onnx.If(%c) {else_branch = 0 : i64, then_branch = 1 : i64} : (tensor<i1>) -> tensor<4xf32> {
    %e = onnx.Neg(%x) : (tensor<4xf32>) -> tensor<4xf32>
    onnx.yield %e : tensor<4xf32>
  } {
    %t = onnx.Exp(%x) : (tensor<4xf32>) -> tensor<4xf32>
    onnx.yield %t : tensor<4xf32>
  }
  func.return %y : tensor<4xf32>
}

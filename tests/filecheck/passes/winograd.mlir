// RUN: einc opt %s -p "fuse,winograd{min_pixels=4 min_channels=1}" --split-input-file | filecheck %s

// A 3x3 convolution with bias and ReLU at 4x4: the input transform, the 16 GEMMs (the
// transformed weight a new constant) and the output transform with the epilogue.
// CHECK-LABEL: func.func @conv
// CHECK:       %[[P:.+]] = ein.pad
// CHECK:       %[[U:.+]] = ein.constant {{.+}} : tensor<4x4x2x1xf32>
// CHECK:       %[[BT:.+]] = ein.constant {{.+}} : tensor<4x4xf32>
// CHECK:       %[[AT:.+]] = ein.constant {{.+}} : tensor<2x4xf32>
// CHECK:       %[[V:.+]] = ein.group "winograd-input" (%[[BT]], %[[P]])
// CHECK:         ein.einsum (%{{.+}}[x, a], %{{.+}}[y, b], %{{.+}}[n, c, t * 2 + a, u * 2 + b]) -> [x, y, n, c, t, u] map "$0 * $1 * $2" reduce add
// CHECK:       %[[V2:.+]] = ein.reshape %[[V]] : tensor<4x4x1x1x2x2xf32> -> tensor<4x4x1x1x4xf32>
// CHECK:       %[[M:.+]] = ein.group "contraction" (%[[U]], %[[V2]]) {einc.why = "the 16 GEMMs of a Winograd convolution
// CHECK-SAME:  einc.winograd
// CHECK:         ein.einsum (%{{.+}}[x, y, m, c], %{{.+}}[x, y, n, c, t]) -> [x, y, n, m, t] map "$0 * $1" reduce add
// CHECK:       %[[M2:.+]] = ein.reshape %[[M]] : tensor<4x4x1x2x4xf32> -> tensor<4x4x1x2x2x2xf32>
// CHECK:       %[[Y:.+]] = ein.group "winograd-output" (%[[AT]], %[[M2]], %{{.+}})
// CHECK:         %[[T:.+]] = ein.einsum (%{{.+}}[i, x], %{{.+}}[j, y], %{{.+}}[x, y, n, m, t, u]) -> [n, m, t, i, u, j] map "$0 * $1 * $2" reduce add
// CHECK-NEXT:    %[[B:.+]] = ein.einsum (%[[T]][n, m, t, i, u, j], %{{.+}}[m]) -> [n, m, t, i, u, j] map "$0 + $1"
// CHECK-NEXT:    %[[R:.+]] = ein.einsum (%[[B]][n, m, t, i, u, j]) -> [n, m, t, i, u, j] map "max($0, 0.0)"
// CHECK:       %[[OUT:.+]] = ein.reshape %[[Y]] : tensor<1x2x2x2x2x2xf32> -> tensor<1x2x4x4xf32>
// CHECK:       func.return %[[OUT]]
func.func @conv(%x: tensor<1x1x4x4xf32>) -> tensor<1x2x4x4xf32> {
  %w = ein.constant dense<[[[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]], [[[0.5, 0.0, -0.5], [1.0, 0.0, -1.0], [0.5, 0.0, -0.5]]]]> : tensor<2x1x3x3xf32>
  %b = ein.constant dense<[0.25, -0.25]> : tensor<2xf32>
  %p = ein.pad %x low [0, 0, 1, 1] high [0, 0, 1, 1] interior [0, 0, 0, 0] constant 0.0 : tensor<1x1x4x4xf32> -> tensor<1x1x6x6xf32>
  %0 = ein.einsum (%p[n, c, p0 + r0, p1 + r1], %w[m, c, r0, r1]) -> [n, m, p0, p1] map "$0 * $1" reduce add : (tensor<1x1x6x6xf32>, tensor<2x1x3x3xf32>) -> tensor<1x2x4x4xf32>
  %1 = ein.einsum (%0[i0, i1, i2, i3], %b[i1]) -> [i0, i1, i2, i3] map "$0 + $1" : (tensor<1x2x4x4xf32>, tensor<2xf32>) -> tensor<1x2x4x4xf32>
  %2 = ein.einsum (%1[i0, i1, i2, i3]) -> [i0, i1, i2, i3] map "max($0, 0.0)" : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  func.return %2 : tensor<1x2x4x4xf32>
}

// -----

// An odd map is not tiled by 2x2 blocks: the group stays, and says why.
// CHECK-LABEL: func.func @odd
// CHECK:       ein.group "contraction"
// CHECK-SAME:  not in Winograd form: an odd map (3x3): 2x2 blocks do not tile it
// CHECK-NOT:   winograd-input
func.func @odd(%p: tensor<1x1x5x5xf32>) -> tensor<1x2x3x3xf32> {
  %w = ein.constant dense<[[[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]], [[[0.5, 0.0, -0.5], [1.0, 0.0, -1.0], [0.5, 0.0, -0.5]]]]> : tensor<2x1x3x3xf32>
  %0 = ein.einsum (%p[n, c, p0 + r0, p1 + r1], %w[m, c, r0, r1]) -> [n, m, p0, p1] map "$0 * $1" reduce add : (tensor<1x1x5x5xf32>, tensor<2x1x3x3xf32>) -> tensor<1x2x3x3xf32>
  func.return %0 : tensor<1x2x3x3xf32>
}

// -----

// A weight that is a function argument is not known at compile time.
// CHECK-LABEL: func.func @runtime_weight
// CHECK:       ein.group "contraction"
// CHECK-NOT:   Winograd
func.func @runtime_weight(%p: tensor<1x1x6x6xf32>, %w: tensor<2x1x3x3xf32>) -> tensor<1x2x4x4xf32> {
  %0 = ein.einsum (%p[n, c, p0 + r0, p1 + r1], %w[m, c, r0, r1]) -> [n, m, p0, p1] map "$0 * $1" reduce add : (tensor<1x1x6x6xf32>, tensor<2x1x3x3xf32>) -> tensor<1x2x4x4xf32>
  func.return %0 : tensor<1x2x4x4xf32>
}

// RUN: einc opt %s | einc opt | filecheck %s
// Round trip of every op of the ein dialect through its text form.

// CHECK-LABEL: func.func @matmul
func.func @matmul(%a: tensor<4x8xf32>, %b: tensor<8x3xf32>) -> tensor<4x3xf32> {
  // CHECK: ein.einsum (%{{.*}}[m, k], %{{.*}}[k, n]) -> [m, n] map "$0 * $1" reduce add : (tensor<4x8xf32>, tensor<8x3xf32>) -> tensor<4x3xf32>
  %0 = ein.einsum (%a[m, k], %b[k, n]) -> [m, n] map "$0 * $1" reduce add : (tensor<4x8xf32>, tensor<8x3xf32>) -> tensor<4x3xf32>
  func.return %0 : tensor<4x3xf32>
}

// CHECK-LABEL: func.func @views
func.func @views(%a: tensor<4x3xf32>) -> tensor<12xf32> {
  // CHECK: %[[T:.+]] = ein.einsum (%{{.*}}[m, n]) -> [n, m] : (tensor<4x3xf32>) -> tensor<3x4xf32>
  %0 = ein.einsum (%a[m, n]) -> [n, m] : (tensor<4x3xf32>) -> tensor<3x4xf32>
  // CHECK-NEXT: ein.reshape %[[T]] : tensor<3x4xf32> -> tensor<12xf32>
  %1 = ein.reshape %0 : tensor<3x4xf32> -> tensor<12xf32>
  func.return %1 : tensor<12xf32>
}

// CHECK-LABEL: func.func @conv
func.func @conv(%i: tensor<1x3x9x9xf32>, %w: tensor<2x3x3x3xf32>) -> tensor<1x2x4x4xf32> {
  // CHECK: ein.einsum (%{{.*}}[n, c, p * 2 + r, q * 2 + t], %{{.*}}[k, c, r, t]) -> [n, k, p, q] map "$0 * $1" reduce add
  %0 = ein.einsum (%i[n, c, p * 2 + r, q*2+t], %w[k, c, r, t]) -> [n, k, p, q] map "$0 * $1" reduce add : (tensor<1x3x9x9xf32>, tensor<2x3x3x3xf32>) -> tensor<1x2x4x4xf32>
  func.return %0 : tensor<1x2x4x4xf32>
}

// CHECK-LABEL: func.func @data
func.func @data() -> tensor<2xf32> {
  // CHECK: ein.weight @fc1.weight : tensor<2x2xf32>
  %0 = ein.weight @fc1.weight : tensor<2x2xf32>
  // CHECK: ein.constant dense<[1.000000e+00, 2.000000e+00]> : tensor<2xf32>
  %1 = ein.constant dense<[1.0, 2.0]> : tensor<2xf32>
  // CHECK: ein.einsum () -> [i] map "0.0" : () -> tensor<2xf32>
  %2 = ein.einsum () -> [i] map "0.0" : () -> tensor<2xf32>
  func.return %1 : tensor<2xf32>
}

// CHECK-LABEL: func.func @data_movement
func.func @data_movement(%x: tensor<5x3xf32>, %i: tensor<2xi64>, %y: tensor<2x3xf32>) -> tensor<9x7xf32> {
  // CHECK: ein.gather %{{.*}}[%{{.*}}] axis 0 : (tensor<5x3xf32>, tensor<2xi64>) -> tensor<2x3xf32>
  %0 = ein.gather %x[%i] axis 0 : (tensor<5x3xf32>, tensor<2xi64>) -> tensor<2x3xf32>
  // CHECK: ein.concat %{{.*}}, %{{.*}} axis 0 : (tensor<5x3xf32>, tensor<2x3xf32>) -> tensor<7x3xf32>
  %1 = ein.concat %x, %0 axis 0 : (tensor<5x3xf32>, tensor<2x3xf32>) -> tensor<7x3xf32>
  // CHECK: ein.pad %{{.*}} low [1, 2] high [1, 0] interior [0, 1] constant 0.0 : tensor<7x3xf32> -> tensor<9x7xf32>
  %2 = ein.pad %1 low [1, 2] high [1, 0] interior [0, 1] constant 0.0 : tensor<7x3xf32> -> tensor<9x7xf32>
  // CHECK: ein.pad %{{.*}} low [0, 0] high [1, 1] interior [0, 0] constant -inf
  %4 = ein.pad %1 low [0, 0] high [1, 1] interior [0, 0] constant -inf : tensor<7x3xf32> -> tensor<8x4xf32>
  // CHECK: ein.einsum (%{{.*}}[6 - i, j]) -> [i, j]
  %3 = ein.einsum (%1[6 - i, j]) -> [i, j] : (tensor<7x3xf32>) -> tensor<7x3xf32>
  func.return %2 : tensor<9x7xf32>
}

// CHECK-LABEL: func.func @group
func.func @group(%x: tensor<4x8xf32>, %w: tensor<3x8xf32>, %b: tensor<3xf32>) -> tensor<4x3xf32> {
  // CHECK: %{{.*}} = ein.group "contraction" (%{{.*}}, %{{.*}}, %{{.*}}) : (tensor<4x8xf32>, tensor<3x8xf32>, tensor<3xf32>) -> tensor<4x3xf32> {
  // CHECK-NEXT: ^{{.*}}(%[[X:.+]]: tensor<4x8xf32>, %[[W:.+]]: tensor<3x8xf32>, %[[B:.+]]: tensor<3xf32>):
  // CHECK-NEXT:   %[[Y:.+]] = ein.einsum (%[[X]][m, k], %[[W]][n, k]) -> [m, n] map "$0 * $1" reduce add
  // CHECK-NEXT:   %[[R:.+]] = ein.einsum (%[[Y]][m, n], %[[B]][n]) -> [m, n] map "max($0 + $1, 0.0)"
  // CHECK-NEXT:   ein.yield %[[R]] : tensor<4x3xf32>
  // CHECK-NEXT: }
  %0 = ein.group "contraction" (%x, %w, %b) : (tensor<4x8xf32>, tensor<3x8xf32>, tensor<3xf32>) -> tensor<4x3xf32> {
  ^bb0(%gx: tensor<4x8xf32>, %gw: tensor<3x8xf32>, %gb: tensor<3xf32>):
    %y = ein.einsum (%gx[m, k], %gw[n, k]) -> [m, n] map "$0 * $1" reduce add : (tensor<4x8xf32>, tensor<3x8xf32>) -> tensor<4x3xf32>
    %r = ein.einsum (%y[m, n], %gb[n]) -> [m, n] map "max($0 + $1, 0.0)" : (tensor<4x3xf32>, tensor<3xf32>) -> tensor<4x3xf32>
    ein.yield %r : tensor<4x3xf32>
  }
  func.return %0 : tensor<4x3xf32>
}

// CHECK-LABEL: func.func @branch
func.func @branch(%c: tensor<i1>, %x: tensor<4xf32>) -> (tensor<4xf32>, tensor<f32>) {
  // CHECK: %{{.*}}, %{{.*}} = ein.if %{{.*}} : tensor<i1> -> (tensor<4xf32>, tensor<f32>) {
  // CHECK-NEXT:   %[[E:.+]] = ein.einsum (%{{.*}}[i]) -> [i] map "exp($0)"
  // CHECK-NEXT:   %[[S:.+]] = ein.einsum (%[[E]][i]) -> [] reduce add
  // CHECK-NEXT:   ein.yield %[[E]], %[[S]] : tensor<4xf32>, tensor<f32>
  // CHECK-NEXT: } else {
  // CHECK-NEXT:   %[[Z:.+]] = ein.constant dense<0.000000e+00> : tensor<f32>
  // CHECK-NEXT:   ein.yield %{{.*}}, %[[Z]] : tensor<4xf32>, tensor<f32>
  // CHECK-NEXT: }
  %0, %1 = ein.if %c : tensor<i1> -> (tensor<4xf32>, tensor<f32>) {
    %e = ein.einsum (%x[i]) -> [i] map "exp($0)" : (tensor<4xf32>) -> tensor<4xf32>
    %s = ein.einsum (%e[i]) -> [] reduce add : (tensor<4xf32>) -> tensor<f32>
    ein.yield %e, %s : tensor<4xf32>, tensor<f32>
  } else {
    %z = ein.constant dense<0.0> : tensor<f32>
    ein.yield %x, %z : tensor<4xf32>, tensor<f32>
  }
  func.return %0, %1 : tensor<4xf32>, tensor<f32>
}

// CHECK-LABEL: func.func @scatter
func.func @scatter(%x: tensor<5x3xf32>, %i: tensor<2xi64>, %u: tensor<2x3xf32>) -> (tensor<5x3xf32>, tensor<5x3xf32>) {
  // CHECK: ein.scatter %{{.*}} into %{{.*}}[%{{.*}}] axis 0 : (tensor<5x3xf32>, tensor<2xi64>, tensor<2x3xf32>) -> tensor<5x3xf32>
  %0 = ein.scatter %u into %x[%i] axis 0 : (tensor<5x3xf32>, tensor<2xi64>, tensor<2x3xf32>) -> tensor<5x3xf32>
  // CHECK: ein.scatter %{{.*}} into %{{.*}}[%{{.*}}] axis 0 reduce max
  %1 = ein.scatter %u into %0[%i] axis 0 reduce max : (tensor<5x3xf32>, tensor<2xi64>, tensor<2x3xf32>) -> tensor<5x3xf32>
  func.return %0, %1 : tensor<5x3xf32>, tensor<5x3xf32>
}

// CHECK-LABEL: func.func @topk
func.func @topk(%x: tensor<4x9xf32>) -> tensor<4x3xi64> {
  // CHECK: ein.topk %{{.*}} k 3 axis 1 smallest : tensor<4x9xf32> -> tensor<4x3xi64>
  %0 = ein.topk %x k 3 axis 1 smallest : tensor<4x9xf32> -> tensor<4x3xi64>
  func.return %0 : tensor<4x3xi64>
}

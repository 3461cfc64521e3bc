// RUN: einc opt %s -p memplan --split-input-file | filecheck %s
// RUN: einc opt %s -p memplan,lower-ein-to-loops --split-input-file | filecheck %s --check-prefix=LOOPS

// A chain: the matmul's result dies at the relu, which writes over it in
// place; the next matmul's result reuses offset 0 once the relu's is dead.
// Two 256-byte buffers are live at once at most, and the plan meets that bound.
// CHECK-LABEL: func.func @main
// CHECK-SAME:  einc.memplan = {arena_bytes = 512 : i64, lower_bound_bytes = 512 : i64, algorithm = "greedy-by-size", schedule = "program", optimal = true}
// CHECK:       %[[H:.+]] = ein.einsum {{.*}} reduce add {einc.offset = 0 : i64}
// CHECK-NEXT:  %[[R:.+]] = ein.einsum (%[[H]][i, j]) -> [i, j] map "max($0, 0.0)" {einc.offset = 0 : i64, einc.inplace = 0 : i64}
// CHECK-NEXT:  %[[G:.+]] = ein.einsum (%[[R]][i, k], %{{.*}}) -> [i, j] {{.*}} reduce add {einc.offset = 256 : i64}
// CHECK-NEXT:  %[[S:.+]] = ein.einsum (%[[G]][i, j]) -> [i, j] map "exp($0)" {einc.offset = 256 : i64, einc.inplace = 0 : i64}
// CHECK-NEXT:  %{{.*}} = ein.einsum (%[[S]][i, j], %[[R]][i, j]) -> [i, j] map "$0 + $1" :

// The in-place relu shares the matmul's argument; the two arena buffers that
// share offset 0 lose noalias, the one alone at 256 keeps it.
// LOOPS-LABEL: func.func @main
// LOOPS-SAME:  (%[[X:.+]]: memref<64xf32>, %[[Y:.+]]: memref<64xf32>, %[[W:.+]]: memref<64xf32>, %[[H:.+]]: memref<64xf32>, %[[G:.+]]: memref<64xf32>)
// LOOPS-SAME:  {role = "temp", name = "h", shape = [8 : i64, 8 : i64], dtype = "float32", offset = 0 : i64}, {role = "temp", name = "g", shape = [8 : i64, 8 : i64], dtype = "float32", offset = 256 : i64}]
// LOOPS-SAME:  einc.noalias_args = array<i64: 0, 1, 2, 3, 4>
// LOOPS:       arith.maximumf
// LOOPS:       memref.store %{{.*}}, %[[H]]
func.func @main(%x: tensor<8x8xf32>) -> tensor<8x8xf32> attributes {einc.inputs = ["x"], einc.outputs = ["y"]} {
  %w = ein.weight @w : tensor<8x8xf32>
  %h = ein.einsum (%x[i, k], %w[k, j]) -> [i, j] map "$0 * $1" reduce add : (tensor<8x8xf32>, tensor<8x8xf32>) -> tensor<8x8xf32>
  %r = ein.einsum (%h[i, j]) -> [i, j] map "max($0, 0.0)" : (tensor<8x8xf32>) -> tensor<8x8xf32>
  %g = ein.einsum (%r[i, k], %w[k, j]) -> [i, j] map "$0 * $1" reduce add : (tensor<8x8xf32>, tensor<8x8xf32>) -> tensor<8x8xf32>
  %s = ein.einsum (%g[i, j]) -> [i, j] map "exp($0)" : (tensor<8x8xf32>) -> tensor<8x8xf32>
  %y = ein.einsum (%s[i, j], %r[i, j]) -> [i, j] map "$0 + $1" : (tensor<8x8xf32>, tensor<8x8xf32>) -> tensor<8x8xf32>
  func.return %y : tensor<8x8xf32>
}

// -----

// No in-place write over an input read transposed in the same einsum, nor over
// one that is still read later: each gets a buffer of its own.
// CHECK-LABEL: func.func @main
// CHECK:       %[[A:.+]] = ein.einsum {{.*}} {einc.offset = [[OA:[0-9]+]] : i64}
// CHECK-NEXT:  %[[B:.+]] = ein.einsum (%[[A]][i, j], %[[A]][j, i]) -> [i, j] map "$0 + $1" {einc.offset = [[OB:[0-9]+]] : i64} :
// CHECK-NOT:   einc.inplace
func.func @main(%x: tensor<4x4xf32>) -> tensor<4x4xf32> attributes {einc.inputs = ["x"], einc.outputs = ["y"]} {
  %a = ein.einsum (%x[i, j]) -> [i, j] map "$0 * 2.0" : (tensor<4x4xf32>) -> tensor<4x4xf32>
  %b = ein.einsum (%a[i, j], %a[j, i]) -> [i, j] map "$0 + $1" : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
  %c = ein.einsum (%b[i, j]) -> [i, j] map "exp($0)" : (tensor<4x4xf32>) -> tensor<4x4xf32>
  %y = ein.einsum (%c[i, j], %b[i, j]) -> [i, j] map "$0 * $1" : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
  func.return %y : tensor<4x4xf32>
}

// -----

// Schedule-aware: two branches whose big intermediates (1 KiB each) are made
// first and reduced last need both at once in program order; running each
// branch to its small result first keeps one alive at a time, so the body is
// reordered.
// CHECK-LABEL: func.func @main
// CHECK-SAME:  arena_bytes = 1152 : i64, lower_bound_bytes = 1152 : i64
// CHECK-SAME:  schedule = "min-memory"
// CHECK:       %[[A:.+]] = ein.einsum (%x[i]
// CHECK-NEXT:  %[[RA:.+]] = ein.einsum (%[[A]][i, j]) -> [i] reduce add
// CHECK-NEXT:  %[[B:.+]] = ein.einsum (%x[i]
// CHECK-NEXT:  %[[RB:.+]] = ein.einsum (%[[B]][i, j]) -> [i] reduce add
func.func @main(%x: tensor<16xf32>) -> tensor<16xf32> attributes {einc.inputs = ["x"], einc.outputs = ["y"]} {
  %a = ein.einsum (%x[i], %x[j]) -> [i, j] map "$0 * $1" : (tensor<16xf32>, tensor<16xf32>) -> tensor<16x16xf32>
  %b = ein.einsum (%x[i], %x[j]) -> [i, j] map "$0 + $1" : (tensor<16xf32>, tensor<16xf32>) -> tensor<16x16xf32>
  %ra = ein.einsum (%a[i, j]) -> [i] reduce add : (tensor<16x16xf32>) -> tensor<16xf32>
  %rb = ein.einsum (%b[i, j]) -> [i] reduce add : (tensor<16x16xf32>) -> tensor<16xf32>
  %y = ein.einsum (%ra[i], %rb[i]) -> [i] map "$0 + $1" : (tensor<16xf32>, tensor<16xf32>) -> tensor<16xf32>
  func.return %y : tensor<16xf32>
}

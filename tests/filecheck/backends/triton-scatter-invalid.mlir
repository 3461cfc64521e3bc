// RUN: not einc opt %s -t triton 2>&1 | filecheck %s

// The Triton target has no scatter kernel yet: compiling one is refused, naming the op.
// CHECK: einc: error: <mlir>: node '?' (ein.scatter): the triton target cannot emit this: no Triton kernel for 'ein.scatter'
func.func @main(%x: tensor<5x3xf32>, %i: tensor<2xi64>, %u: tensor<2x3xf32>) -> tensor<5x3xf32> {
  %0 = ein.scatter %u into %x[%i] axis 0 : (tensor<5x3xf32>, tensor<2xi64>, tensor<2x3xf32>) -> tensor<5x3xf32>
  func.return %0 : tensor<5x3xf32>
}

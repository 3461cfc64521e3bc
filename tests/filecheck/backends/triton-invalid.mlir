// RUN: not einc opt %s -t triton --allow-unregistered-dialect 2>&1 | filecheck %s

// An op the backend has no kernel for is refused at compile time, naming the value.
// CHECK: einc: error: <mlir>: node 'y' (test.op): the triton target cannot emit this: no Triton kernel for 'test.op'
func.func @main(%x: tensor<4xf32>) -> tensor<4xf32> {
  %y = "test.op"(%x) : (tensor<4xf32>) -> tensor<4xf32>
  func.return %y : tensor<4xf32>
}

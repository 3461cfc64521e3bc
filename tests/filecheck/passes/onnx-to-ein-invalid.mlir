// RUN: not einc opt %s -p onnx-to-ein 2>&1 | filecheck %s
// Nodes without a lowering are all reported in one error, before anything changes.

// CHECK: einc: error: 2 unsupported nodes (ops HardSwish, Selu not supported by einc): 'hs' (HardSwish); 'selu' (Selu)
func.func @main(%x: tensor<4xf32>) -> tensor<4xf32> {
  %a = onnx.HardSwish(%x) {onnx_node = "hs"} : (tensor<4xf32>) -> tensor<4xf32>
  %b = onnx.Relu(%a) {onnx_node = "relu"} : (tensor<4xf32>) -> tensor<4xf32>
  %c = onnx.Selu(%b) {onnx_node = "selu"} : (tensor<4xf32>) -> tensor<4xf32>
  func.return %c : tensor<4xf32>
}

// RUN: einc opt %s -p lower-ein-to-loops --split-input-file | filecheck %s

// A matmul: identity into the output, then a nest m, k, n that accumulates.
// CHECK-LABEL: func.func @main
// CHECK-SAME: (%[[A:.+]]: memref<32xf32>, %[[B:.+]]: memref<24xf32>, %[[Y:.+]]: memref<12xf32>)
// CHECK-SAME: einc.buffers = [{role = "input", name = "a", shape = [4 : i64, 8 : i64], dtype = "float32"}, {role = "input", name = "b", shape = [8 : i64, 3 : i64], dtype = "float32"}, {role = "output", name = "y", shape = [4 : i64, 3 : i64], dtype = "float32"}]
// CHECK:      scf.for %[[M0:.+]] =
// CHECK-NEXT:   scf.for %[[N0:.+]] =
// CHECK:          %[[ZERO:.+]] = arith.constant 0.000000e+00 : f32
// CHECK:          memref.store %[[ZERO]], %[[Y]]
// CHECK:      scf.for %[[M:.+]] =
// CHECK:        scf.for %[[K:.+]] =
// CHECK:          scf.for %[[N:.+]] =
// CHECK:            %[[X:.+]] = memref.load %[[A]]
// CHECK:            %[[W:.+]] = memref.load %[[B]]
// CHECK:            %[[P:.+]] = arith.mulf %[[X]], %[[W]] : f32
// CHECK:            %[[ACC:.+]] = memref.load %[[Y]]
// CHECK:            %[[SUM:.+]] = arith.addf %[[ACC]], %[[P]] : f32
// CHECK:            memref.store %[[SUM]], %[[Y]]
func.func @main(%a: tensor<4x8xf32>, %b: tensor<8x3xf32>) -> tensor<4x3xf32> attributes {einc.inputs = ["a", "b"], einc.outputs = ["y"]} {
  %0 = ein.einsum (%a[m, k], %b[k, n]) -> [m, n] map "$0 * $1" reduce add : (tensor<4x8xf32>, tensor<8x3xf32>) -> tensor<4x3xf32>
  func.return %0 : tensor<4x3xf32>
}

// -----

// A weight, an intermediate, a view and an output that is a view (so copied):
// buffers in the order inputs, outputs, weights, intermediates; the reshape
// reads the intermediate's buffer with new strides.
// CHECK-LABEL: func.func @main
// CHECK-SAME: (%[[X:.+]]: memref<6xf32>, %[[OUT:.+]]: memref<6xf32>, %[[W:.+]]: memref<3xf32>, %[[T:.+]]: memref<6xf32>)
// CHECK-SAME: {role = "weight", name = "bias", shape = [3 : i64], dtype = "float32"}, {role = "temp"
// CHECK:       %[[V:.+]] = memref.load %[[W]]
// CHECK:       %[[S:.+]] = arith.addf
// CHECK:       %[[R:.+]] = math.tanh %[[S]] : f32
// CHECK:       memref.store %[[R]], %[[T]]
// CHECK:       %[[C:.+]] = memref.load %[[T]]
// CHECK:       memref.store %[[C]], %[[OUT]]
func.func @main(%x: tensor<2x3xf32>) -> tensor<3x2xf32> {
  %w = ein.weight @bias : tensor<3xf32>
  %0 = ein.einsum (%x[i, j], %w[j]) -> [i, j] map "tanh($0 + $1)" : (tensor<2x3xf32>, tensor<3xf32>) -> tensor<2x3xf32>
  %1 = ein.reshape %0 : tensor<2x3xf32> -> tensor<3x2xf32>
  func.return %1 : tensor<3x2xf32>
}

// -----

// A row-wise max reduces along the contiguous index: it goes innermost.
// CHECK-LABEL: func.func @main
// CHECK:       arith.constant 0xff800000 : f32
// CHECK:       scf.for %[[P:.+]] =
// CHECK-NEXT:    scf.for %[[M:.+]] =
// CHECK:           arith.maximumf
func.func @main(%x: tensor<4x16xf32>) -> tensor<4xf32> {
  %0 = ein.einsum (%x[p, m]) -> [p] reduce max : (tensor<4x16xf32>) -> tensor<4xf32>
  func.return %0 : tensor<4xf32>
}

// -----

// Bools are stored as bytes: a comparison gives i1, widened to i8 to store.
// CHECK-LABEL: func.func @main
// CHECK-SAME: (%{{.*}}: memref<4xf32>, %[[OUT:.+]]: memref<4xi8>)
// CHECK:       %[[C:.+]] = arith.cmpf olt
// CHECK-NEXT:  %[[B:.+]] = arith.extui %[[C]] : i1 to i8
// CHECK-NEXT:  memref.store %[[B]], %[[OUT]]
func.func @main(%x: tensor<4xf32>) -> tensor<4xi1> {
  %0 = ein.einsum (%x[i]) -> [i] map "lt($0, 0.5)" : (tensor<4xf32>) -> tensor<4xi1>
  func.return %0 : tensor<4xi1>
}

// -----

// Gather wraps negative indices and clamps to the axis.
// CHECK-LABEL: func.func @main
// CHECK:       %[[I:.+]] = memref.load %{{.*}} : memref<2xi64>
// CHECK-NEXT:  %[[X:.+]] = arith.index_cast %[[I]] : i64 to index
// CHECK-NEXT:  %[[NEG:.+]] = arith.cmpi slt, %[[X]], %{{.*}} : index
// CHECK:       arith.select %[[NEG]]
// CHECK:       arith.maxsi
// CHECK:       arith.minsi
func.func @main(%x: tensor<5x3xf32>, %i: tensor<2xi64>) -> tensor<2x3xf32> {
  %0 = ein.gather %x[%i] axis 0 : (tensor<5x3xf32>, tensor<2xi64>) -> tensor<2x3xf32>
  func.return %0 : tensor<2x3xf32>
}

// -----

// ein.if: an scf.if on the loaded condition; a value made in a branch gets a
// buffer appended to the arguments (and to einc.buffers); each branch copies
// what it yields into the result's buffer, which lives outside the branch.
// CHECK-LABEL: func.func @main
// CHECK-SAME: (%[[C:.+]]: memref<1xi8>, %[[X:.+]]: memref<4xf32>, %[[Y:.+]]: memref<4xf32>, %[[E:.+]]: memref<4xf32>)
// CHECK-SAME: {role = "temp", name = "e", shape = [4 : i64], dtype = "float32"}
// CHECK:      %[[RAW:.+]] = memref.load %[[C]]
// CHECK:      %[[COND:.+]] = arith.cmpi ne, %[[RAW]]
// CHECK:      scf.if %[[COND]] {
// CHECK:        math.exp
// CHECK:        memref.store %{{.*}}, %[[E]]
// CHECK:        memref.load %[[E]]
// CHECK:        memref.store %{{.*}}, %[[Y]]
// CHECK:      } else {
// CHECK:        memref.load %[[X]]
// CHECK:        memref.store %{{.*}}, %[[Y]]
// CHECK:      }
func.func @main(%c: tensor<i1>, %x: tensor<4xf32>) -> tensor<4xf32> attributes {einc.inputs = ["c", "x"], einc.outputs = ["y"]} {
  %0 = ein.if %c : tensor<i1> -> (tensor<4xf32>) {
    %e = ein.einsum (%x[i]) -> [i] map "exp($0)" : (tensor<4xf32>) -> tensor<4xf32>
    ein.yield %e : tensor<4xf32>
  } else {
    ein.yield %x : tensor<4xf32>
  }
  func.return %0 : tensor<4xf32>
}

// -----

// Scatter: a copy of the data, then a loop over the updates that folds each into
// the output at its wrapped, clamped row.
// CHECK-LABEL: func.func @main
// CHECK-SAME:  (%[[X:.+]]: memref<15xf32>, %[[I:.+]]: memref<2xi64>, %[[U:.+]]: memref<6xf32>, %[[O:.+]]: memref<15xf32>)
// CHECK:       %[[D:.+]] = memref.load %[[X]]
// CHECK-NEXT:  arith.muli
// CHECK-NEXT:  arith.addi
// CHECK-NEXT:  memref.store %[[D]], %[[O]]
// CHECK:       %[[RAW:.+]] = memref.load %[[I]]
// CHECK-NEXT:  %[[IX:.+]] = arith.index_cast %[[RAW]] : i64 to index
// CHECK-NEXT:  %[[NEG:.+]] = arith.cmpi slt, %[[IX]]
// CHECK:       arith.select %[[NEG]]
// CHECK:       %[[V:.+]] = memref.load %[[U]]
// CHECK-NEXT:  %[[OLD:.+]] = memref.load %[[O]][%[[AT:.+]]]
// CHECK-NEXT:  %[[NEW:.+]] = arith.addf %[[OLD]], %[[V]] : f32
// CHECK-NEXT:  memref.store %[[NEW]], %[[O]][%[[AT]]]
func.func @main(%x: tensor<5x3xf32>, %i: tensor<2xi64>, %u: tensor<2x3xf32>) -> tensor<5x3xf32> {
  %0 = ein.scatter %u into %x[%i] axis 0 reduce add : (tensor<5x3xf32>, tensor<2xi64>, tensor<2x3xf32>) -> tensor<5x3xf32>
  func.return %0 : tensor<5x3xf32>
}

// -----

// Bit formats: bf16 in 16-bit and float8 in 8-bit integer buffers. A load decodes
// the bits into f32, the sum is carried in f32 through the reduction loop, and
// the store rounds it once to float8 (NaN and overflow to its NaN pattern).
// CHECK-LABEL: func.func @main
// CHECK-SAME:  (%[[X:.+]]: memref<6xi16>, %[[Y:.+]]: memref<2xi8>)
// CHECK-SAME:  dtype = "bfloat16"}, {role = "output", name = "y", shape = [2 : i64], dtype = "float8_e4m3fn"}
// CHECK:       scf.for %[[I:.+]] =
// CHECK:         %[[ZERO:.+]] = arith.constant 0.000000e+00 : f32
// CHECK-NEXT:    %[[SUM:.+]] = scf.for %{{.+}} = %{{.+}} to %{{.+}} step %{{.+}} iter_args(%[[ACC:.+]] = %[[ZERO]]) -> (f32) {
// CHECK:           %[[RAW:.+]] = memref.load %[[X]]
// CHECK-NEXT:      %[[WIDE:.+]] = arith.extui %[[RAW]] : i16 to i32
// CHECK:           %[[HIGH:.+]] = arith.shli %[[WIDE]]
// CHECK-NEXT:      %[[V:.+]] = arith.bitcast %[[HIGH]] : i32 to f32
// CHECK-NEXT:      %[[NEXT:.+]] = arith.addf %[[ACC]], %[[V]] : f32
// CHECK-NEXT:      scf.yield %[[NEXT]] : f32
// CHECK:         math.roundeven
// CHECK:         %[[CODE:.+]] = arith.trunci %{{.+}} : i32 to i8
// CHECK-NEXT:    memref.store %[[CODE]], %[[Y]][%[[I]]] : memref<2xi8>
func.func @main(%x: tensor<2x3xbf16>) -> tensor<2xf8E4M3FN> attributes {einc.inputs = ["x"], einc.outputs = ["y"]} {
  %0 = ein.einsum (%x[i, j]) -> [i] map "$0" reduce add : (tensor<2x3xbf16>) -> tensor<2xf8E4M3FN>
  func.return %0 : tensor<2xf8E4M3FN>
}

// RUN: einc opt %s -p convert-math-to-llvm --split-input-file | filecheck %s

// Ops with an llvm intrinsic op, ops with only an LLVM intrinsic, and rsqrt.
// CHECK-LABEL: func.func @intrinsics
// CHECK-SAME: (%[[X:.+]]: f32, %[[Y:.+]]: f32, %[[Z:.+]]: f32)
// CHECK:      llvm.intr.exp(%[[X]]) : (f32) -> f32
// CHECK-NEXT: llvm.intr.exp2(%[[X]]) : (f32) -> f32
// CHECK-NEXT: llvm.intr.log(%[[X]]) : (f32) -> f32
// CHECK-NEXT: llvm.intr.log2(%[[X]]) : (f32) -> f32
// CHECK-NEXT: llvm.intr.sqrt(%[[X]]) : (f32) -> f32
// CHECK-NEXT: llvm.intr.fabs(%[[X]]) : (f32) -> f32
// CHECK-NEXT: llvm.intr.floor(%[[X]]) : (f32) -> f32
// CHECK-NEXT: llvm.intr.ceil(%[[X]]) : (f32) -> f32
// CHECK-NEXT: llvm.intr.sin(%[[X]]) : (f32) -> f32
// CHECK-NEXT: llvm.intr.cos(%[[X]]) : (f32) -> f32
// CHECK-NEXT: llvm.intr.pow(%[[X]], %[[Y]]) : (f32, f32) -> f32
// CHECK-NEXT: llvm.intr.copysign(%[[X]], %[[Y]]) : (f32, f32) -> f32
// CHECK-NEXT: llvm.intr.fma(%[[X]], %[[Y]], %[[Z]]) : (f32, f32, f32) -> f32
// CHECK-NEXT: llvm.call_intrinsic "llvm.log10.f32"(%[[X]]) : (f32) -> f32
// CHECK-NEXT: llvm.call_intrinsic "llvm.round.f32"(%[[X]]) : (f32) -> f32
// CHECK-NEXT: llvm.call_intrinsic "llvm.roundeven.f32"(%[[X]]) : (f32) -> f32
// CHECK-NEXT: llvm.call_intrinsic "llvm.trunc.f32"(%[[X]]) : (f32) -> f32
// CHECK-NEXT: %[[ONE:.+]] = llvm.mlir.constant(1.000000e+00 : f32) : f32
// CHECK-NEXT: %[[ROOT:.+]] = llvm.intr.sqrt(%[[X]]) : (f32) -> f32
// CHECK-NEXT: llvm.fdiv %[[ONE]], %[[ROOT]] : f32
func.func @intrinsics(%x: f32, %y: f32, %z: f32) {
  %0 = math.exp %x : f32
  %1 = math.exp2 %x : f32
  %2 = math.log %x : f32
  %3 = math.log2 %x : f32
  %4 = math.sqrt %x : f32
  %5 = math.absf %x : f32
  %6 = math.floor %x : f32
  %7 = math.ceil %x : f32
  %8 = math.sin %x : f32
  %9 = math.cos %x : f32
  %10 = math.powf %x, %y : f32
  %11 = math.copysign %x, %y : f32
  %12 = math.fma %x, %y, %z : f32
  %13 = math.log10 %x : f32
  %14 = math.round %x : f32
  %15 = math.roundeven %x : f32
  %16 = math.trunc %x : f32
  %17 = math.rsqrt %x : f32
  func.return
}

// -----

// Functions without an intrinsic call libm, by type (tanhf for f32, tanh for
// f64), with one declaration per function however often it is called.
// CHECK-LABEL: func.func @libm
// CHECK-SAME: (%[[X:.+]]: f32, %[[Y:.+]]: f32, %[[D:.+]]: f64)
// CHECK:      llvm.call @tanhf(%[[X]]) : (f32) -> f32
// CHECK-NEXT: llvm.call @tanhf(%[[Y]]) : (f32) -> f32
// CHECK-NEXT: llvm.call @tanh(%[[D]]) : (f64) -> f64
// CHECK-NEXT: llvm.call @erff(%[[X]]) : (f32) -> f32
// CHECK-NEXT: llvm.call @atan2f(%[[X]], %[[Y]]) : (f32, f32) -> f32
// CHECK-NEXT: llvm.call @log1pf(%[[X]]) : (f32) -> f32
// CHECK-NEXT: llvm.call @expm1f(%[[X]]) : (f32) -> f32
// CHECK-NEXT: llvm.call @atanf(%[[X]]) : (f32) -> f32
// CHECK-NEXT: llvm.call @asinf(%[[X]]) : (f32) -> f32
// CHECK-NEXT: llvm.call @acosf(%[[X]]) : (f32) -> f32
// CHECK-NEXT: llvm.call @sinhf(%[[X]]) : (f32) -> f32
// CHECK-NEXT: llvm.call @coshf(%[[X]]) : (f32) -> f32
// CHECK-NEXT: llvm.call @tanf(%[[X]]) : (f32) -> f32
// CHECK:      llvm.func @tanhf(f32) -> f32
// CHECK-NOT:  llvm.func @tanhf
// CHECK:      llvm.func @tanh(f64) -> f64
// CHECK:      llvm.func @atan2f(f32, f32) -> f32
func.func @libm(%x: f32, %y: f32, %d: f64) {
  %0 = math.tanh %x : f32
  %1 = math.tanh %y : f32
  %2 = math.tanh %d : f64
  %3 = math.erf %x : f32
  %4 = math.atan2 %x, %y : f32
  %5 = math.log1p %x : f32
  %6 = math.expm1 %x : f32
  %7 = math.atan %x : f32
  %8 = math.asin %x : f32
  %9 = math.acos %x : f32
  %10 = math.sinh %x : f32
  %11 = math.cosh %x : f32
  %12 = math.tan %x : f32
  func.return
}

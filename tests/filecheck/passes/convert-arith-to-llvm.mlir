// RUN: einc opt %s -p convert-arith-to-llvm --split-input-file | filecheck %s

// `index` becomes i64 in signatures, block arguments, constants and results;
// index_cast is a sext, a trunc or nothing.
// CHECK-LABEL: func.func @index
// CHECK-SAME: (%[[X:.+]]: i64, %[[N:.+]]: i32) -> (i64, i64)
// CHECK:      %[[ZERO:.+]] = llvm.mlir.constant(0) : i64
// CHECK:      cf.br ^[[LOOP:.+]](%[[ZERO]] : i64)
// CHECK:      ^[[LOOP]](%[[I:.+]]: i64):
// CHECK:      %[[W:.+]] = llvm.sext %[[N]] : i32 to i64
// CHECK:      %[[SUM:.+]] = llvm.add %[[I]], %[[W]] : i64
// CHECK:      %[[T:.+]] = llvm.trunc %[[SUM]] : i64 to i32
// CHECK-NEXT: %[[TWICE:.+]] = llvm.add %[[X]], %[[X]] : i64
// CHECK-NEXT: func.return %[[SUM]], %[[TWICE]] : i64, i64
// CHECK-NOT:  index
func.func @index(%x: index, %n: i32) -> (index, i64) {
  %c0 = arith.constant 0 : index
  cf.br ^loop(%c0 : index)
^loop(%i: index):
  %w = arith.index_cast %n : i32 to index
  %sum = arith.addi %i, %w : index
  %t = arith.index_cast %sum : index to i32
  %x64 = arith.index_cast %x : index to i64
  %twice = arith.addi %x64, %x64 : i64
  func.return %sum, %twice : index, i64
}

// -----

// Binary ops keep fast-math and overflow flags; integer and NaN-propagating
// min/max become intrinsic calls.
// CHECK-LABEL: func.func @binary
// CHECK-SAME: (%[[A:.+]]: f32, %[[B:.+]]: f32, %[[I:.+]]: i32, %[[J:.+]]: i32)
// CHECK:      llvm.fadd %[[A]], %[[B]] {fastmathFlags = #llvm.fastmath<fast>} : f32
// CHECK-NEXT: llvm.fsub %[[A]], %[[B]] : f32
// CHECK-NEXT: llvm.fmul %[[A]], %[[B]] : f32
// CHECK-NEXT: llvm.fdiv %[[A]], %[[B]] : f32
// CHECK-NEXT: llvm.fneg %[[A]] : f32
// CHECK-NEXT: llvm.intr.maxnum(%[[A]], %[[B]]) : (f32, f32) -> f32
// CHECK-NEXT: llvm.intr.minnum(%[[A]], %[[B]]) : (f32, f32) -> f32
// CHECK-NEXT: llvm.call_intrinsic "llvm.maximum.f32"(%[[A]], %[[B]]) : (f32, f32) -> f32
// CHECK-NEXT: llvm.call_intrinsic "llvm.minimum.f32"(%[[A]], %[[B]]) : (f32, f32) -> f32
// CHECK-NEXT: llvm.add %[[I]], %[[J]] overflow<nsw> : i32
// CHECK-NEXT: llvm.sub %[[I]], %[[J]] : i32
// CHECK-NEXT: llvm.mul %[[I]], %[[J]] : i32
// CHECK-NEXT: llvm.sdiv %[[I]], %[[J]] : i32
// CHECK-NEXT: llvm.udiv %[[I]], %[[J]] : i32
// CHECK-NEXT: llvm.srem %[[I]], %[[J]] : i32
// CHECK-NEXT: llvm.urem %[[I]], %[[J]] : i32
// CHECK-NEXT: llvm.and %[[I]], %[[J]] : i32
// CHECK-NEXT: llvm.or %[[I]], %[[J]] : i32
// CHECK-NEXT: llvm.xor %[[I]], %[[J]] : i32
// CHECK-NEXT: llvm.shl %[[I]], %[[J]] : i32
// CHECK-NEXT: llvm.ashr %[[I]], %[[J]] : i32
// CHECK-NEXT: llvm.lshr %[[I]], %[[J]] : i32
// CHECK-NEXT: llvm.call_intrinsic "llvm.smax.i32"(%[[I]], %[[J]]) : (i32, i32) -> i32
// CHECK-NEXT: llvm.call_intrinsic "llvm.smin.i32"(%[[I]], %[[J]]) : (i32, i32) -> i32
// CHECK-NEXT: llvm.call_intrinsic "llvm.umax.i32"(%[[I]], %[[J]]) : (i32, i32) -> i32
// CHECK-NEXT: llvm.call_intrinsic "llvm.umin.i32"(%[[I]], %[[J]]) : (i32, i32) -> i32
func.func @binary(%a: f32, %b: f32, %i: i32, %j: i32) {
  %0 = arith.addf %a, %b fastmath<fast> : f32
  %1 = arith.subf %a, %b : f32
  %2 = arith.mulf %a, %b : f32
  %3 = arith.divf %a, %b : f32
  %4 = arith.negf %a : f32
  %5 = arith.maxnumf %a, %b : f32
  %6 = arith.minnumf %a, %b : f32
  %7 = arith.maximumf %a, %b : f32
  %8 = arith.minimumf %a, %b : f32
  %9 = arith.addi %i, %j overflow<nsw> : i32
  %10 = arith.subi %i, %j : i32
  %11 = arith.muli %i, %j : i32
  %12 = arith.divsi %i, %j : i32
  %13 = arith.divui %i, %j : i32
  %14 = arith.remsi %i, %j : i32
  %15 = arith.remui %i, %j : i32
  %16 = arith.andi %i, %j : i32
  %17 = arith.ori %i, %j : i32
  %18 = arith.xori %i, %j : i32
  %19 = arith.shli %i, %j : i32
  %20 = arith.shrsi %i, %j : i32
  %21 = arith.shrui %i, %j : i32
  %22 = arith.maxsi %i, %j : i32
  %23 = arith.minsi %i, %j : i32
  %24 = arith.maxui %i, %j : i32
  %25 = arith.minui %i, %j : i32
  func.return
}

// -----

// floordivsi: the quotient, one less where the remainder is nonzero and its
// sign differs from the divisor's.
// CHECK-LABEL: func.func @floordiv
// CHECK-SAME: (%[[A:.+]]: i32, %[[B:.+]]: i32) -> i32
// CHECK-DAG:  %[[ZERO:.+]] = llvm.mlir.constant(0 : i32) : i32
// CHECK-DAG:  %[[ONE:.+]] = llvm.mlir.constant(1 : i32) : i32
// CHECK:      %[[Q:.+]] = llvm.sdiv %[[A]], %[[B]] : i32
// CHECK-NEXT: %[[R:.+]] = llvm.srem %[[A]], %[[B]] : i32
// CHECK-NEXT: %[[NZ:.+]] = llvm.icmp "ne" %[[R]], %[[ZERO]] : i32
// CHECK-NEXT: %[[X:.+]] = llvm.xor %[[R]], %[[B]] : i32
// CHECK-NEXT: %[[NEG:.+]] = llvm.icmp "slt" %[[X]], %[[ZERO]] : i32
// CHECK-NEXT: %[[ADJ:.+]] = llvm.and %[[NZ]], %[[NEG]] : i1
// CHECK-NEXT: %[[QM1:.+]] = llvm.sub %[[Q]], %[[ONE]] : i32
// CHECK-NEXT: %[[RES:.+]] = llvm.select %[[ADJ]], %[[QM1]], %[[Q]] : i1, i32
// CHECK-NEXT: func.return %[[RES]] : i32
func.func @floordiv(%a: i32, %b: i32) -> i32 {
  %0 = arith.floordivsi %a, %b : i32
  func.return %0 : i32
}

// -----

// Comparisons keep their predicate; cmpf true/false fold to constants.
// CHECK-LABEL: func.func @compare
// CHECK-SAME: (%[[A:.+]]: f32, %[[B:.+]]: f32, %[[I:.+]]: i32, %[[J:.+]]: i32)
// CHECK:      %[[LT:.+]] = llvm.icmp "ult" %[[I]], %[[J]] : i32
// CHECK-NEXT: llvm.icmp "sge" %[[I]], %[[J]] : i32
// CHECK-NEXT: llvm.fcmp "one" %[[A]], %[[B]] : f32
// CHECK-NEXT: llvm.fcmp "uno" %[[A]], %[[B]] : f32
// CHECK-NEXT: llvm.mlir.constant(true) : i1
// CHECK-NEXT: llvm.mlir.constant(false) : i1
// CHECK-NEXT: llvm.select %[[LT]], %[[A]], %[[B]] : i1, f32
func.func @compare(%a: f32, %b: f32, %i: i32, %j: i32) {
  %0 = arith.cmpi ult, %i, %j : i32
  %1 = arith.cmpi sge, %i, %j : i32
  %2 = arith.cmpf one, %a, %b : f32
  %3 = arith.cmpf uno, %a, %b : f32
  %4 = arith.cmpf true, %a, %b : f32
  %5 = arith.cmpf false, %a, %b : f32
  %6 = arith.select %0, %a, %b : f32
  func.return
}

// -----

// Casts; fptosi, fptoui and uitofp have no llvm op in xDSL and use llvmx.
// CHECK-LABEL: func.func @casts
// CHECK-SAME: (%[[F:.+]]: f32, %[[I:.+]]: i32, %[[D:.+]]: f64)
// CHECK:      llvm.fpext %[[F]] : f32 to f64
// CHECK-NEXT: llvm.fptrunc %[[D]] : f64 to f32
// CHECK-NEXT: llvm.sext %[[I]] : i32 to i64
// CHECK-NEXT: llvm.zext %[[I]] : i32 to i64
// CHECK-NEXT: llvm.trunc %[[I]] : i32 to i8
// CHECK-NEXT: llvm.sitofp %[[I]] : i32 to f32
// CHECK-NEXT: llvm.bitcast %[[F]] : f32 to i32
// CHECK-NEXT: llvmx.fptosi %[[F]] : f32 to i32
// CHECK-NEXT: llvmx.fptoui %[[F]] : f32 to i32
// CHECK-NEXT: llvmx.uitofp %[[I]] : i32 to f32
func.func @casts(%f: f32, %i: i32, %d: f64) {
  %0 = arith.extf %f : f32 to f64
  %1 = arith.truncf %d : f64 to f32
  %2 = arith.extsi %i : i32 to i64
  %3 = arith.extui %i : i32 to i64
  %4 = arith.trunci %i : i32 to i8
  %5 = arith.sitofp %i : i32 to f32
  %6 = arith.bitcast %f : f32 to i32
  %7 = arith.fptosi %f : f32 to i32
  %8 = arith.fptoui %f : f32 to i32
  %9 = arith.uitofp %i : i32 to f32
  func.return
}

// -----

// Constants of every kind.
// CHECK-LABEL: func.func @constants
// CHECK-NEXT: llvm.mlir.constant(-3 : i32) : i32
// CHECK-NEXT: llvm.mlir.constant(true) : i1
// CHECK-NEXT: llvm.mlir.constant(2.500000e+00 : f32) : f32
// CHECK-NEXT: llvm.mlir.constant(1.000000e+00 : f16) : f16
// CHECK-NEXT: llvm.mlir.constant(dense<1.000000e+00> : vector<4xf32>) : vector<4xf32>
func.func @constants() {
  %0 = arith.constant -3 : i32
  %1 = arith.constant true
  %2 = arith.constant 2.5 : f32
  %3 = arith.constant 1.0 : f16
  %4 = arith.constant dense<1.0> : vector<4xf32>
  func.return
}

// -----

// Pointer arithmetic from convert-ptr-to-llvm becomes a GEP on the base pointer,
// which keeps its provenance (and its noalias).
// CHECK-LABEL: func.func @pointer_offset
// CHECK-SAME: (%[[P:.+]]: !llvm.ptr, %[[OFF:.+]]: i64) -> f32
// CHECK-NEXT: %[[Q:.+]] = llvm.getelementptr inbounds %[[P]][%[[OFF]]] : (!llvm.ptr, i64) -> !llvm.ptr, i8
// CHECK-NEXT: %[[V:.+]] = llvm.load %[[Q]] : !llvm.ptr -> f32
// CHECK-NEXT: func.return %[[V]] : f32
func.func @pointer_offset(%p: !llvm.ptr, %off: i64) -> f32 {
  %0 = llvm.ptrtoint %p : !llvm.ptr to i64
  %1 = arith.addi %0, %off : i64
  %2 = llvm.inttoptr %1 : i64 to !llvm.ptr
  %3 = llvm.load %2 : !llvm.ptr -> f32
  func.return %3 : f32
}

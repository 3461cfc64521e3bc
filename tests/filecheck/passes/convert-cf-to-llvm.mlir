// RUN: einc opt %s -p convert-cf-to-llvm | filecheck %s

// Branches keep their successors and block arguments.
// CHECK-LABEL: func.func @loop
// CHECK-SAME: (%[[N:.+]]: i64, %[[ZERO:.+]]: i64, %[[ONE:.+]]: i64)
// CHECK:      llvm.br ^[[HEAD:.+]](%[[ZERO]], %[[ZERO]] : i64, i64)
// CHECK:      ^[[HEAD]](%[[I:.+]]: i64, %[[ACC:.+]]: i64):
// CHECK:      %[[C:.+]] = llvm.icmp "slt" %[[I]], %[[N]] : i64
// CHECK-NEXT: llvm.cond_br %[[C]], ^[[BODY:.+]], ^[[EXIT:.+]](%[[ACC]] : i64)
// CHECK:      ^[[BODY]]:
// CHECK:      llvm.br ^[[HEAD]](%{{.+}}, %{{.+}} : i64, i64)
// CHECK:      ^[[EXIT]](%[[R:.+]]: i64):
// CHECK-NEXT: func.return %[[R]] : i64
func.func @loop(%n: i64, %zero: i64, %one: i64) -> i64 {
  cf.br ^head(%zero, %zero : i64, i64)
^head(%i: i64, %acc: i64):
  %c = llvm.icmp "slt" %i, %n : i64
  cf.cond_br %c, ^body, ^exit(%acc : i64)
^body:
  %next = llvm.add %i, %one : i64
  %sum = llvm.add %acc, %i : i64
  cf.br ^head(%next, %sum : i64, i64)
^exit(%r: i64):
  func.return %r : i64
}

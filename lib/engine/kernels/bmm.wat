;; Batched small matrix products with wasm SIMD, run on tfjs-backend-wasm's own heap (it imports the backend's
;; memory). Source of lib/engine/kernels/bmm-wasm.ts: `npm run build:wasm-kernels` compiles it (with wabt) once
;; for an unshared and once for a shared (threaded backend) memory; tests/engine/bmm.test.ts checks they agree.
;;
;;   bmm(a, b, c, batch, m, k, n, strideA, strideB, transA):  C[i] = A[i] · B[i] for i < batch
;;
;; A[i] is m×k and B[i] k×n, row-major float32 at byte addresses a + 4·i·strideA and b + 4·i·strideB (stride 0
;; broadcasts one matrix over the batch); C is [batch, m, n] at c. With transA ≠ 0, A[i] is stored as its
;; transpose (k×m row-major) and read with strides — a gradient's Pᵀ·dO needs no transposed copy. Each output row is built eight (then four, then
;; one) columns at a time: one splat of A[r, p] times a row segment of B, accumulated in registers over p — no
;; horizontal sums, so a 64×16·16×77 attention product runs at several GFLOP/s instead of the stock kernel's ~1.
(module
  (import "env" "memory" (memory 1 65536 MEMORY_SHARED))
  (func (export "bmm") (param $a i32) (param $b i32) (param $c i32) (param $batch i32) (param $m i32) (param $k i32)
        (param $n i32) (param $sa i32) (param $sb i32) (param $ta i32)
    (local $aStep i32) (local $aRowStep i32) (local $bi i32) (local $r i32) (local $j i32) (local $p i32) (local $rowBytes i32)
    (local $aRow i32) (local $bMat i32) (local $cRow i32) (local $ap i32) (local $bp i32) (local $cp i32)
    (local $s v128) (local $acc0 v128) (local $acc1 v128) (local $acc f32)
    (local.set $rowBytes (i32.shl (local.get $n) (i32.const 2)))
    ;; bytes from A[r, p] to A[r, p+1] and from row r to row r+1
    (local.set $aStep (select (i32.shl (local.get $m) (i32.const 2)) (i32.const 4) (local.get $ta)))
    (local.set $aRowStep (select (i32.const 4) (i32.shl (local.get $k) (i32.const 2)) (local.get $ta)))
    (local.set $cRow (local.get $c))
    (block $batchDone (loop $batchLoop
      (br_if $batchDone (i32.ge_u (local.get $bi) (local.get $batch)))
      (local.set $aRow (i32.add (local.get $a) (i32.shl (i32.mul (local.get $bi) (local.get $sa)) (i32.const 2))))
      (local.set $bMat (i32.add (local.get $b) (i32.shl (i32.mul (local.get $bi) (local.get $sb)) (i32.const 2))))
      (local.set $r (i32.const 0))
      (block $rowDone (loop $rowLoop
        (br_if $rowDone (i32.ge_u (local.get $r) (local.get $m)))
        (local.set $j (i32.const 0))
        ;; eight columns at a time
        (block $j8Done (loop $j8Loop
          (br_if $j8Done (i32.gt_u (i32.add (local.get $j) (i32.const 8)) (local.get $n)))
          (local.set $acc0 (v128.const i32x4 0 0 0 0))
          (local.set $acc1 (v128.const i32x4 0 0 0 0))
          (local.set $ap (local.get $aRow))
          (local.set $bp (i32.add (local.get $bMat) (i32.shl (local.get $j) (i32.const 2))))
          (local.set $p (local.get $k))
          (block $pDone (loop $pLoop
            (br_if $pDone (i32.eqz (local.get $p)))
            (local.set $s (f32x4.splat (f32.load (local.get $ap))))
            (local.set $acc0 (f32x4.add (local.get $acc0) (f32x4.mul (local.get $s) (v128.load (local.get $bp)))))
            (local.set $acc1 (f32x4.add (local.get $acc1) (f32x4.mul (local.get $s) (v128.load offset=16 (local.get $bp)))))
            (local.set $ap (i32.add (local.get $ap) (local.get $aStep)))
            (local.set $bp (i32.add (local.get $bp) (local.get $rowBytes)))
            (local.set $p (i32.sub (local.get $p) (i32.const 1)))
            (br $pLoop)))
          (local.set $cp (i32.add (local.get $cRow) (i32.shl (local.get $j) (i32.const 2))))
          (v128.store (local.get $cp) (local.get $acc0))
          (v128.store offset=16 (local.get $cp) (local.get $acc1))
          (local.set $j (i32.add (local.get $j) (i32.const 8)))
          (br $j8Loop)))
        ;; four more columns
        (if (i32.le_u (i32.add (local.get $j) (i32.const 4)) (local.get $n)) (then
          (local.set $acc0 (v128.const i32x4 0 0 0 0))
          (local.set $ap (local.get $aRow))
          (local.set $bp (i32.add (local.get $bMat) (i32.shl (local.get $j) (i32.const 2))))
          (local.set $p (local.get $k))
          (block $p4Done (loop $p4Loop
            (br_if $p4Done (i32.eqz (local.get $p)))
            (local.set $acc0 (f32x4.add (local.get $acc0)
              (f32x4.mul (f32x4.splat (f32.load (local.get $ap))) (v128.load (local.get $bp)))))
            (local.set $ap (i32.add (local.get $ap) (local.get $aStep)))
            (local.set $bp (i32.add (local.get $bp) (local.get $rowBytes)))
            (local.set $p (i32.sub (local.get $p) (i32.const 1)))
            (br $p4Loop)))
          (v128.store (i32.add (local.get $cRow) (i32.shl (local.get $j) (i32.const 2))) (local.get $acc0))
          (local.set $j (i32.add (local.get $j) (i32.const 4)))))
        ;; the last columns one by one
        (block $j1Done (loop $j1Loop
          (br_if $j1Done (i32.ge_u (local.get $j) (local.get $n)))
          (local.set $acc (f32.const 0))
          (local.set $ap (local.get $aRow))
          (local.set $bp (i32.add (local.get $bMat) (i32.shl (local.get $j) (i32.const 2))))
          (local.set $p (local.get $k))
          (block $p1Done (loop $p1Loop
            (br_if $p1Done (i32.eqz (local.get $p)))
            (local.set $acc (f32.add (local.get $acc) (f32.mul (f32.load (local.get $ap)) (f32.load (local.get $bp)))))
            (local.set $ap (i32.add (local.get $ap) (local.get $aStep)))
            (local.set $bp (i32.add (local.get $bp) (local.get $rowBytes)))
            (local.set $p (i32.sub (local.get $p) (i32.const 1)))
            (br $p1Loop)))
          (f32.store (i32.add (local.get $cRow) (i32.shl (local.get $j) (i32.const 2))) (local.get $acc))
          (local.set $j (i32.add (local.get $j) (i32.const 1)))
          (br $j1Loop)))
        (local.set $aRow (i32.add (local.get $aRow) (local.get $aRowStep)))
        (local.set $cRow (i32.add (local.get $cRow) (local.get $rowBytes)))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $rowLoop)))
      (local.set $bi (i32.add (local.get $bi) (i32.const 1)))
      (br $batchLoop)))))

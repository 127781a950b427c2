package ctest

import (
	"syscall"
	"testing"
	"time"
)

// CPUPerOp measures the CPU time (user and system, all goroutines, garbage collection included) the
// process spends from now to the call of the returned function, and reports it per operation as
// the benchmark's "cpu-ns/op". Call it just before the b.Loop loop and the result right after it.
// The wall time of a benchmark whose work spreads over several goroutines says how long the job
// takes on this machine's cores; its CPU time says how much work it is, which is what a ratio to a
// single-goroutine baseline compares.
func CPUPerOp(b *testing.B) func() {
	b.Helper()

	start := processCPU(b)

	return func() {
		b.Helper()

		if b.N > 0 {
			b.ReportMetric(float64(processCPU(b)-start)/float64(b.N), "cpu-ns/op")
		}
	}
}

func processCPU(b *testing.B) time.Duration {
	b.Helper()

	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		b.Fatalf("getrusage: %v", err)
	}

	return time.Duration(usage.Utime.Nano() + usage.Stime.Nano())
}

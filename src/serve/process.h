// Process settings the server needs before libtorch's OpenMP runtime starts.
#pragma once

namespace guardkit::serve {

// libgomp's worker threads spin after every parallel region by default (OMP_WAIT_POLICY unset). In a server the
// HTTP threads then fight the spinners for the cores: on 2 cores a loopback request took 30-100x longer (measured
// with bench_serve). libgomp reads the policy only when it loads, so when OMP_WAIT_POLICY is not set this re-executes
// the current program (/proc/self/exe with the same arguments) with OMP_WAIT_POLICY=PASSIVE. Returns only when the
// variable was already set or re-executing failed (then it logs a warning).
void ensure_passive_omp_wait();

}  // namespace guardkit::serve

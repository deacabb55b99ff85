#!/usr/bin/env node
// Placeholder until the benchmark suite lands (issue: benchmarks under interruption load).
console.log("pg-warden benchmarks are not built yet; see bench/README.md.")

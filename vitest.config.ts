import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["./test/support/globalSetup.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Database suites share one server; files run in parallel, each with its own application_name.
    fileParallelism: true,
    maxWorkers: 2,
    minWorkers: 1,
    reporters: ["default"]
  }
})

import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // The repository's test server: DATABASE_URL when set, otherwise an embedded PostgreSQL.
    globalSetup: ["../test/support/globalSetup.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    maxWorkers: 2
  }
})

import { fileURLToPath } from "node:url"
import { defineConfig } from "vitest/config"

const src = fileURLToPath(new URL("../src/", import.meta.url))

export default defineConfig({
  resolve: {
    // The shared interruption scenarios (../cli/src/interruptions.ts) import the Effect-free observer by its
    // package name; in this repository that is ../src/Observer.ts.
    alias: [{ find: /^pg-warden\/Observer$/, replacement: `${src}Observer.ts` }]
  },
  test: {
    include: ["test/**/*.test.ts"],
    // The repository's test server: DATABASE_URL when set, otherwise an embedded PostgreSQL.
    globalSetup: ["../test/support/globalSetup.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    maxWorkers: 2
  }
})

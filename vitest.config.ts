import { fileURLToPath } from "node:url"
import { defineConfig } from "vitest/config"

const src = fileURLToPath(new URL("./src/", import.meta.url))

export default defineConfig({
  resolve: {
    // The command line (cli/) imports the library by its package name; in this repository that is src/.
    alias: [
      { find: /^pg-warden$/, replacement: `${src}index.ts` },
      { find: /^pg-warden\/(.*)$/, replacement: `${src}$1.ts` }
    ]
  },
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

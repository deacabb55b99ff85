/**
 * The core (src/core) is Effect-free, so that every edition (Effect 3 today, Effect 4 next) wraps the
 * same release protocol instead of a copy: no module there may import `effect` or `@effect/*`. The
 * linter says the same (biome.json); this test fails even where the linter is not run.
 */
import { readdirSync, readFileSync } from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"

const core = path.join(import.meta.dirname, "..", "src", "core")
const importPattern = /(?:^|\n)\s*(?:import|export)\s[^;]*?from\s+["']([^"']+)["']|import\(\s*["']([^"']+)["']\s*\)/g

describe("src/core", () => {
  it("imports nothing of Effect", () => {
    const files = readdirSync(core).filter((file) => file.endsWith(".ts"))
    expect(files.length).toBeGreaterThan(5)
    const offending: Array<string> = []
    for (const file of files) {
      const text = readFileSync(path.join(core, file), "utf8")
      for (const match of text.matchAll(importPattern)) {
        const specifier = match[1] ?? match[2] ?? ""
        if (specifier === "effect" || specifier.startsWith("effect/") || specifier.startsWith("@effect/")) {
          offending.push(`${file}: ${specifier}`)
        }
      }
    }
    expect(offending).toEqual([])
  })
})

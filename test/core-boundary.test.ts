/**
 * The core (src/core) is Effect-free, so that every edition (Effect 3 today, Effect 4 next) wraps the
 * same release protocol instead of a copy: no module there may import `effect` or `@effect/*`. The
 * linter says the same (biome.json); this test fails even where the linter is not run.
 */
import { readdirSync, readFileSync } from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"

const core = path.join(import.meta.dirname, "..", "src", "core")
const importPattern =
  /(?:^|\n)\s*(?:import|export)\s[^;]*?from\s+["']([^"']+)["']|import\(\s*["']([^"']+)["']\s*\)|(?:^|\n)\s*import\s+["']([^"']+)["']/g

describe("src/core", () => {
  it("imports nothing of Effect", () => {
    const files = readdirSync(core).filter((file) => file.endsWith(".ts"))
    expect(files.length).toBeGreaterThan(5)
    const offending: Array<string> = []
    for (const file of files) {
      const text = readFileSync(path.join(core, file), "utf8")
      for (const match of text.matchAll(importPattern)) {
        const specifier = match[1] ?? match[2] ?? match[3] ?? ""
        if (specifier === "effect" || specifier.startsWith("effect/") || specifier.startsWith("@effect/")) {
          offending.push(`${file}: ${specifier}`)
        }
      }
    }
    expect(offending).toEqual([])
  })
})

const cli = path.join(import.meta.dirname, "..", "cli")
interface Manifest {
  readonly version: string
  readonly bin?: unknown
  readonly dependencies?: Readonly<Record<string, string>>
  readonly devDependencies?: Readonly<Record<string, string>>
}
const readJson = (file: string) => JSON.parse(readFileSync(file, "utf8")) as Manifest

describe("cli/ (the pg-warden-cli package)", () => {
  it("reaches the library only by its package name, through entry points the library exports", () => {
    // The library exports `pg-warden` and `pg-warden/<Module>`; its internal/ and core/ folders are closed.
    const exported = (subpath: string) => !subpath.includes("/")
    const files = readdirSync(path.join(cli, "src")).filter((file) => file.endsWith(".ts"))
    expect(files.length).toBeGreaterThan(3)
    const offending: Array<string> = []
    for (const file of files) {
      const text = readFileSync(path.join(cli, "src", file), "utf8")
      for (const match of text.matchAll(importPattern)) {
        const specifier = match[1] ?? match[2] ?? match[3] ?? ""
        const leavesFolder = specifier.startsWith("../")
        const privateEntry = specifier.startsWith("pg-warden/") && !exported(specifier.slice("pg-warden/".length))
        if (leavesFolder || privateEntry) offending.push(`${file}: ${specifier}`)
      }
    }
    expect(offending).toEqual([])
  })

  it("pins the versions the repository develops and tests it with", () => {
    const library = readJson(path.join(import.meta.dirname, "..", "package.json"))
    const own = readJson(path.join(cli, "package.json"))
    const tested = { ...library.dependencies, ...library.devDependencies }
    const mismatched = Object.entries(own.dependencies ?? {}).flatMap(([name, range]) => {
      if (name === "pg-warden")
        return range === library.version ? [] : [`pg-warden ${range} (library is ${library.version})`]
      const version = tested[name]?.replace(/^[~^]/, "")
      return version !== undefined && range.replace(/^[~^]/, "") === version
        ? []
        : [`${name} ${range} (tested: ${tested[name]})`]
    })
    expect(mismatched).toEqual([])
    expect(own.version).toBe(library.version)
  })

  it("leaves the library's dependencies to what the library itself imports", () => {
    const library = readJson(path.join(import.meta.dirname, "..", "package.json"))
    expect(
      Object.keys(library.dependencies ?? {}).filter((name) => /^@effect\/(cli|platform-node|printer)/.test(name))
    ).toEqual([])
    expect(library.bin).toBeUndefined()
  })
})

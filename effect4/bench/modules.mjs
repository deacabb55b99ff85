// The Effect 4 side of pg-warden's benchmark (bench/effect4/worker.mjs) imports its Effect 4 modules
// through this file: bare specifiers resolve from the importing file's folder, and from here they
// reach effect4/node_modules (effect 4.1, @effect/sql-pg 4), the same tree effect4/src is built on.
// From bench/ they would reach the root's node_modules, which holds Effect 3. So both Effect 4
// contenders (@effect/sql-pg 4 and pg-warden's Effect 4 edition) run on one dependency tree, with
// one copy of `effect` in the process.
import { readFileSync } from "node:fs"

export * as PgClient from "@effect/sql-pg/PgClient"
export * as Cause from "effect/Cause"
export * as Effect from "effect/Effect"
export * as Exit from "effect/Exit"
export * as Fiber from "effect/Fiber"
export * as ManagedRuntime from "effect/ManagedRuntime"
export * as Redacted from "effect/Redacted"
export * as SqlClient from "effect/sql/SqlClient"

/** pg-warden's Effect 4 edition, from its TypeScript sources (the worker runs under tsx). Loaded on demand. */
export const loadWardenClient = async () => (await import("../src/WardenClient.ts")).layer

/** The file `effect` resolves to from this folder (and so from effect4/src): the worker checks it. */
export const effectEntry = import.meta.resolve("effect/Effect")

/** The installed version of a package of effect4/node_modules, or of the edition itself (`pg-warden-effect4`). */
export const versionOf = (name) =>
  JSON.parse(
    readFileSync(
      new URL(
        name === "pg-warden-effect4" ? "../package.json" : `../node_modules/${name}/package.json`,
        import.meta.url
      ),
      "utf8"
    )
  ).version

// The Effect 4 contenders, each in a process of its own (Effect 4 cannot share a process with
// Effect 3): `effect4`, @effect/sql-pg 4 (`PgClient.layer`), and `warden4`, pg-warden's Effect 4
// edition (`WardenClient.layer` from effect4/src). Started by bench/run.ts as
// `effect4/node_modules/.bin/node --import tsx bench/effect4/worker.mjs <effect4|warden4>`: both on
// the Node 22 binary of effect4/ and on effect4/'s one dependency tree (effect 4.1, @effect/sql-pg 4),
// reached through effect4/bench/modules.mjs. They speak the same line protocol and run the same load
// driver as the other contenders (../lib/).
//
// The layer gets the run's pool size and application name, library defaults otherwise. Every
// operation runs in its own fiber and is interrupted with `Fiber.interrupt`, exactly like the Effect 3
// contenders (bench/contenders/effect3.ts).
import { existsSync, readFileSync } from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import {
  Cause,
  Effect,
  Exit,
  effectEntry,
  Fiber,
  loadWardenClient,
  ManagedRuntime,
  PgClient,
  Redacted,
  SqlClient,
  versionOf
} from "../../effect4/bench/modules.mjs"
import { serve } from "../lib/worker-core.mjs"

const rootDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..")

// One copy of effect, effect4/'s, or the comparison means nothing.
const effectDir = path.join(rootDir, "effect4", "node_modules", "effect")
if (!fileURLToPath(effectEntry).startsWith(effectDir + path.sep) || !versionOf("effect").startsWith("4.")) {
  console.error(`effect resolves to ${effectEntry} (${versionOf("effect")}), not to effect4/node_modules/effect 4`)
  process.exit(2)
}

/** The `pg` that pg-warden's core (src/core) drives sessions with: the root's. */
const coreVersionOf = (name) => {
  for (let dir = path.join(rootDir, "src", "core"); ; dir = path.dirname(dir)) {
    const file = path.join(dir, "node_modules", name, "package.json")
    if (existsSync(file)) return JSON.parse(readFileSync(file, "utf8")).version
    if (path.dirname(dir) === dir) return "unknown"
  }
}

const contenders = {
  effect4: async () => ({
    name: "@effect/sql-pg 4",
    versions: { "@effect/sql-pg": versionOf("@effect/sql-pg"), effect: versionOf("effect") },
    layer: PgClient.layer
  }),
  warden4: async () => ({
    name: "pg-warden (Effect 4)",
    versions: {
      "pg-warden-effect4": versionOf("pg-warden-effect4"),
      effect: versionOf("effect"),
      "@effect/sql-pg": versionOf("@effect/sql-pg"),
      pg: coreVersionOf("pg")
    },
    layer: await loadWardenClient()
  })
}

const key = process.argv[2] ?? ""
if (contenders[key] === undefined) {
  console.error(`usage: worker.mjs <${Object.keys(contenders).join("|")}>`)
  process.exit(2)
}
const contender = await contenders[key]()

/** BEGIN, one select, one update, COMMIT. */
const txOn = (sql, id) =>
  sql.withTransaction(
    Effect.andThen(
      sql`SELECT balance FROM bench_accounts WHERE id = ${id}`,
      sql`UPDATE bench_accounts SET balance = balance + 1 WHERE id = ${id}`
    )
  )

const makeOps = (sql, rows) => {
  const id = (rng) => 1 + Math.floor(rng() * rows)
  return {
    select1: () => sql`SELECT 1 AS one`,
    row: (rng) => sql`SELECT id, name, balance FROM bench_accounts WHERE id = ${id(rng)}`,
    tx: (rng) => txOn(sql, id(rng)),
    sleep: () => sql`SELECT pg_sleep(0.01)`
  }
}

let runtime
let ops
let client

serve({
  name: contender.name,
  versions: contender.versions,
  async setup(args) {
    const rt = ManagedRuntime.make(
      contender.layer({ url: Redacted.make(args.url), maxConnections: args.poolSize, applicationName: args.appName })
    )
    client = await rt.runPromise(Effect.service(SqlClient.SqlClient))
    runtime = rt
    ops = makeOps(client, args.rows)
  },
  async check() {
    const sql = client
    const select1 = await runtime.runPromise(sql`SELECT 1 AS one`)
    const row = await runtime.runPromise(sql`SELECT id, name, balance FROM bench_accounts WHERE id = ${42}`)
    await runtime.runPromise(txOn(sql, 7))
    return { select1: select1[0]?.one, row: row[0], txId: 7 }
  },
  start(op, rng, onDone) {
    const fiber = runtime.runFork(ops[op](rng))
    fiber.addObserver((exit) => {
      if (Exit.isSuccess(exit)) onDone("ok")
      else if (Cause.hasInterruptsOnly(exit.cause)) onDone("interrupted")
      else onDone("error", Cause.squash(exit.cause))
    })
    return {
      interrupt: () => {
        Effect.runFork(Fiber.interrupt(fiber))
      }
    }
  },
  async teardown() {
    const rt = runtime
    runtime = undefined
    ops = undefined
    client = undefined
    await rt?.dispose()
  }
})

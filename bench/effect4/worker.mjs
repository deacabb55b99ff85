// The @effect/sql-pg 4.x contender (Effect 4), in a process of its own: Effect 4 cannot share a
// process with Effect 3. Started by bench/run.ts as `node bench/effect4/worker.mjs`; it speaks the
// same line protocol and runs the same load driver as the other contenders (../lib/).
//
// `PgClient.layer` with the run's pool size and application name, library defaults otherwise. Every
// operation runs in its own fiber and is interrupted with `Fiber.interrupt`, exactly like the Effect 3
// contenders (bench/contenders/effect3.ts).
import { readFileSync } from "node:fs"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Redacted from "effect/Redacted"
import * as SqlClient from "effect/sql/SqlClient"
import { serve } from "../lib/worker-core.mjs"

const versionOf = (name) =>
  JSON.parse(readFileSync(new URL(`./node_modules/${name}/package.json`, import.meta.url), "utf8")).version

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
  name: "@effect/sql-pg 4",
  versions: { "@effect/sql-pg": versionOf("@effect/sql-pg"), effect: versionOf("effect") },
  async setup(args) {
    const rt = ManagedRuntime.make(
      PgClient.layer({ url: Redacted.make(args.url), maxConnections: args.poolSize, applicationName: args.appName })
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

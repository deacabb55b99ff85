/**
 * The adapter shared by the Effect 3 contenders (pg-warden and @effect/sql-pg 0.53): both are
 * `SqlClient` layers, so the operations are the same Effects. Every operation runs in its own fiber
 * (as a server runs each request in a fiber), so it can be interrupted with `Fiber.interrupt`; the
 * interruption latency is measured from that call to the fiber's exit.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import type * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import type { OpKind } from "../lib/driver.mjs"
import type { ContenderAdapter, SetupArgs } from "../lib/worker-core.mjs"

export interface Effect3Contender {
  readonly name: string
  readonly versions: Readonly<Record<string, string>>
  readonly layer: (args: SetupArgs) => Layer.Layer<SqlClient.SqlClient, SqlError>
}

type Op = (rng: () => number) => Effect.Effect<unknown, SqlError>

/** BEGIN, one select, one update, COMMIT. */
const txOn = (sql: SqlClient.SqlClient, id: number) =>
  sql.withTransaction(
    Effect.zipRight(
      sql`SELECT balance FROM bench_accounts WHERE id = ${id}`,
      sql`UPDATE bench_accounts SET balance = balance + 1 WHERE id = ${id}`
    )
  )

const makeOps = (sql: SqlClient.SqlClient, rows: number): Record<OpKind, Op> => {
  const id = (rng: () => number) => 1 + Math.floor(rng() * rows)
  return {
    select1: () => sql`SELECT 1 AS one`,
    row: (rng) => sql`SELECT id, name, balance FROM bench_accounts WHERE id = ${id(rng)}`,
    tx: (rng) => txOn(sql, id(rng)),
    sleep: () => sql`SELECT pg_sleep(0.01)`
  }
}

export const makeEffect3Adapter = (contender: Effect3Contender): ContenderAdapter => {
  let runtime: ManagedRuntime.ManagedRuntime<SqlClient.SqlClient, SqlError> | undefined
  let ops: Record<OpKind, Op> | undefined
  return {
    name: contender.name,
    versions: contender.versions,
    async setup(args) {
      const rt = ManagedRuntime.make(contender.layer(args))
      const sql = await rt.runPromise(SqlClient.SqlClient)
      runtime = rt
      ops = makeOps(sql, args.rows)
    },
    async check() {
      const rt = runtime!
      const sql = await rt.runPromise(SqlClient.SqlClient)
      const select1 = await rt.runPromise(sql`SELECT 1 AS one`)
      const row = await rt.runPromise(sql`SELECT id, name, balance FROM bench_accounts WHERE id = ${42}`)
      await rt.runPromise(txOn(sql, 7))
      return { select1: select1[0]?.one, row: row[0], txId: 7 }
    },
    start(op, rng, onDone) {
      const fiber = runtime!.runFork(ops![op](rng))
      fiber.addObserver((exit) => {
        if (Exit.isSuccess(exit)) onDone("ok")
        else if (Cause.isInterruptedOnly(exit.cause)) onDone("interrupted")
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
      await rt?.dispose()
    }
  }
}

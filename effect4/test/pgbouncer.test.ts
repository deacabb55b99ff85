/**
 * The Effect 4 edition through a real PgBouncer in transaction mode (../test/support/pgbouncer.ts, started by the
 * shared global setup; the conformance suite runs through it in conformance.bouncer.test.ts): the edition's own
 * mapping of `pgbouncer: true` (sql-pg 4's `prepare`), its typed errors, and a cancel through PgBouncer.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import { describe, expect, inject, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Redacted from "effect/Redacted"
import * as SqlClient from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import { CoreError } from "../../src/core/errors.js"
import { Observer } from "../../src/core/observer.js"
import { uniqueAppName } from "../../test/support/admin.js"
import * as WardenClient from "../src/WardenClient.js"
import * as WardenPool from "../src/WardenPool.js"
import "./context.js"
import { interruptRunningSleep } from "./support/sleep.js"

const bouncerUrl = inject("bouncerUrl")
const serverUrl = inject("databaseUrl")
const skipped = bouncerUrl === "" ? ` (skipped: ${inject("bouncerSkipped")})` : ""

const layer = (app: string, extra: Partial<WardenClient.WardenClientConfig> = {}) =>
  WardenClient.layer({ url: Redacted.make(bouncerUrl), applicationName: app, maxConnections: 2, ...extra })

/** pg-warden's own reason behind a failed exit's `SqlError`, and the message. */
const coreReason = <A>(exit: Exit.Exit<A, SqlError>): { readonly reason: unknown; readonly message: string } => {
  if (Exit.isSuccess(exit)) return { reason: "succeeded", message: "" }
  const failed = exit.cause.reasons.find((r) => r._tag === "Fail")
  if (failed === undefined || failed._tag !== "Fail") return { reason: String(exit.cause), message: "" }
  const cause = failed.error.reason.cause
  return { reason: cause instanceof CoreError ? cause.reason : failed.error.reason._tag, message: failed.error.message }
}

describe.skipIf(bouncerUrl === "")(`Effect 4 edition through PgBouncer (transaction mode)${skipped}`, () => {
  it.live("without pgbouncer: true the first statement fails with ConnectFailed naming the option", () =>
    Effect.gen(function* () {
      const exit = yield* Effect.exit(
        Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          return yield* sql`select 1`
        }).pipe(Effect.provide(layer(uniqueAppName("e4-pgb-unflagged"))))
      )
      const { reason, message } = coreReason(exit)
      expect(reason, message).toBe("ConnectFailed")
      expect(message).toContain("pgbouncer: true")
    })
  )

  it.live("prepare: true (named prepared statements) is InvalidConfig through PgBouncer; prepare unset works", () =>
    Effect.gen(function* () {
      const exit = yield* Effect.exit(
        Effect.provide(
          Effect.asVoid(SqlClient.SqlClient),
          layer(uniqueAppName("e4-pgb-prepare"), { pgbouncer: true, prepare: true })
        )
      )
      const { reason, message } = coreReason(exit)
      expect(reason, message).toBe("InvalidConfig")
      expect(message).toContain("prepare")
      const rows = yield* Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        return yield* Effect.all(
          Array.from({ length: 100 }, (_, i) => sql<{ n: number }>`select ${i}::int as n`),
          { concurrency: 8 }
        )
      }).pipe(Effect.provide(layer(uniqueAppName("e4-pgb-params"), { pgbouncer: true, maxConnections: 4 })))
      expect(rows.map((r) => r[0]?.n)).toEqual(Array.from({ length: 100 }, (_, i) => i))
    })
  )

  it.live("an interrupted statement is cancelled through PgBouncer and its session kept; listen is InvalidConfig", () =>
    Effect.gen(function* () {
      const app = uniqueAppName("e4-pgb-cancel")
      const observer = yield* Effect.acquireRelease(
        Effect.promise(() => Observer.connect(serverUrl)),
        (o) => Effect.promise(() => o.close())
      )
      yield* Effect.gen(function* () {
        const sql = yield* PgClient.PgClient
        const pool = yield* WardenPool.WardenPool
        yield* interruptRunningSleep(sql, observer, app, 2_000)
        expect(yield* sql`select 1 as ok`).toEqual([{ ok: 1 }])
        const stats = yield* pool.stats
        expect(stats.counters.cancelled, JSON.stringify(stats.counters)).toBe(1)
        expect(stats.counters.terminated).toBe(0)
        // sql-pg 4's listen: a scoped queue of the channel's notifications.
        const listened = yield* Effect.exit(Effect.scoped(sql.listen("e4_pgb")))
        expect(coreReason(listened).reason).toBe("InvalidConfig")
      }).pipe(Effect.provide(layer(app, { pgbouncer: true, maxConnections: 1 })))
    }).pipe(Effect.scoped)
  )
})

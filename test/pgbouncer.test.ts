/**
 * pg-warden through a real PgBouncer in transaction mode (test/support/pgbouncer.ts; the conformance suite runs
 * through it in conformance.bouncer.test.ts): what `pgbouncer: true` changes, each checked from the server's view
 * (a direct admin connection) or from PgBouncer's own (`SHOW CLIENTS`).
 */
import type { SqlError } from "@effect/sql/SqlError"
import * as PgClient from "@effect/sql-pg/PgClient"
import { describe, expect, inject, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Stream from "effect/Stream"
import { WardenClient, WardenError } from "../src/index.js"
import { bouncerClients } from "./conformance/cases.js"
import { uniqueAppName } from "./support/admin.js"
import "./support/context.js"
import { configFor, isRunningSleep, open, promise, scopedAdmin, waitForBackends } from "./support/warden.js"

const serverUrl = inject("databaseUrl")
const bouncerUrl = inject("bouncerUrl")
const bouncerAdminUrl = inject("bouncerAdminUrl")
const skipped = bouncerUrl === "" ? ` (skipped: ${inject("bouncerSkipped")})` : ""

/** The reason of a failed exit's `SqlError`, and its message. */
const reasonOf = <A, E>(exit: Exit.Exit<A, E>): { readonly reason: unknown; readonly message: string } => {
  if (Exit.isSuccess(exit)) return { reason: "succeeded", message: "" }
  const failure = exit.cause._tag === "Fail" ? (exit.cause.error as SqlError) : undefined
  return {
    reason: failure === undefined ? exit.cause._tag : WardenError.fromSqlError(failure)?.reason,
    message: String(failure?.message)
  }
}

describe.skipIf(bouncerUrl === "")(`through PgBouncer (transaction mode)${skipped}`, () => {
  it.scoped("without pgbouncer: true, connecting fails with ConnectFailed naming the option", () =>
    Effect.gen(function* () {
      const exit = yield* Effect.exit(
        Effect.gen(function* () {
          const { sql } = yield* open(configFor(bouncerUrl, uniqueAppName("pgb-unflagged")))
          return yield* sql`select 1`
        })
      )
      const { reason, message } = reasonOf(exit)
      expect(reason, message).toBe("ConnectFailed")
      expect(message).toContain("pgbouncer: true")
    })
  )

  it.scoped("options that need a direct connection fail with InvalidConfig, each naming what to do instead", () =>
    Effect.gen(function* () {
      const refused = [
        { statementTimeout: "1 second" },
        { lockTimeout: "1 second" },
        { startupParameters: { work_mem: "8MB" } },
        { serverSafety: { idleInTransactionSessionTimeout: "10 seconds" } },
        { statementCacheSize: 16 },
        { cancelChannel: true },
        { cancelProbe: true },
        { sessionReset: "always" },
        { auditInterval: "1 second" }
      ] as const
      for (const extra of refused) {
        const exit = yield* Effect.exit(
          open(configFor(bouncerUrl, uniqueAppName("pgb-refused"), { pgbouncer: true, ...extra }))
        )
        const { reason, message } = reasonOf(exit)
        expect(reason, `${JSON.stringify(extra)}: ${message}`).toBe("InvalidConfig")
        expect(message).toContain("PgBouncer")
      }
      const options = new URL(bouncerUrl)
      options.searchParams.set("options", "-c work_mem=8MB")
      const { reason } = reasonOf(
        yield* Effect.exit(open(configFor(options.toString(), "pgb-url", { pgbouncer: true })))
      )
      expect(reason).toBe("InvalidConfig")
    })
  )

  it.scoped("parameterised statements from many fibers all succeed: nothing is prepared by name", () =>
    Effect.gen(function* () {
      const { sql } = yield* open(
        configFor(bouncerUrl, uniqueAppName("pgb-params"), { pgbouncer: true, maxConnections: 8 })
      )
      const rows = yield* Effect.all(
        Array.from({ length: 200 }, (_, i) => sql<{ n: number }>`select ${i}::int + 1 as n`),
        { concurrency: 16 }
      )
      expect(rows.map((r) => r[0]?.n)).toEqual(Array.from({ length: 200 }, (_, i) => i + 1))
      // The mechanism, switched off: the same pool as a direct one (no startup options, so it connects), whose named
      // statements reach backends that never saw their Parse.
      const direct = yield* open(
        configFor(bouncerUrl, uniqueAppName("pgb-named"), { serverSafety: false, maxConnections: 8 })
      )
      const failures = yield* Effect.all(
        Array.from({ length: 200 }, (_, i) => Effect.either(direct.sql`select ${i}::int + 1 as n`)),
        { concurrency: 16 }
      ).pipe(Effect.map((results) => results.filter((r) => r._tag === "Left").length))
      expect(failures, "named prepared statements through PgBouncer 1.18 should fail somewhere").toBeGreaterThan(0)
    })
  )

  it.scoped(
    "an interrupted statement is cancelled through PgBouncer's CancelRequest forwarding and its session reused",
    () =>
      Effect.gen(function* () {
        const app = uniqueAppName("pgb-cancel")
        const admin = yield* scopedAdmin(serverUrl)
        const { sql, pool } = yield* open(configFor(bouncerUrl, app, { pgbouncer: true, maxConnections: 1 }))
        for (let round = 0; round < 3; round++) {
          const fiber = yield* Effect.fork(sql`select pg_sleep(10)`)
          yield* waitForBackends(admin, app, (bs) => bs.some(isRunningSleep))
          yield* Fiber.interrupt(fiber)
          yield* waitForBackends(admin, app, (bs) => !bs.some(isRunningSleep), { timeoutMs: 2_000 })
          expect(yield* sql`select 1 as ok`).toEqual([{ ok: 1 }])
        }
        const stats = yield* pool.stats
        expect(stats.counters.cancelled, JSON.stringify(stats.counters)).toBe(3)
        expect(stats.counters.terminated).toBe(0)
        // PgBouncer saw one client all along: the session was kept, not replaced.
        const clients = yield* promise(() => bouncerClients(bouncerAdminUrl, app, 0))
        expect(clients.length).toBe(1)
        expect(stats.counters.created).toBe(1)
      })
  )

  it.scoped("listen fails with InvalidConfig (a LISTEN would be forgotten with its backend); notify works", () =>
    Effect.gen(function* () {
      const layer = WardenClient.layer(configFor(bouncerUrl, uniqueAppName("pgb-listen"), { pgbouncer: true }))
      const exit = yield* Effect.exit(
        Effect.gen(function* () {
          const pg = yield* PgClient.PgClient
          yield* pg.notify("pgb_channel", "nobody listens")
          yield* Stream.runDrain(pg.listen("pgb_channel")).pipe(Effect.timeout("5 seconds"))
        }).pipe(Effect.provide(layer))
      )
      const { reason, message } = reasonOf(exit)
      expect(reason, message).toBe("InvalidConfig")
    })
  )
})

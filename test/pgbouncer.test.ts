/**
 * pg-warden through a real PgBouncer in transaction mode (test/support/pgbouncer.ts; the conformance suite runs
 * through it in conformance.bouncer.test.ts): what `pgbouncer: true` changes, each checked from the server's view
 * (a direct admin connection) or from PgBouncer's own (`SHOW CLIENTS`).
 */
import type { SqlError } from "@effect/sql/SqlError"
import * as PgClient from "@effect/sql-pg/PgClient"
import { describe, expect, inject, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Stream from "effect/Stream"
import { WardenClient, WardenError } from "../src/index.js"
import { bouncerClients } from "./conformance/cases.js"
import { uniqueAppName } from "./support/admin.js"
import "./support/context.js"
import { startProxy } from "./support/proxy.js"
import {
  configFor,
  expectSqlError,
  isRunningSleep,
  open,
  promise,
  proxyTarget,
  scopedAdmin,
  waitForBackends
} from "./support/warden.js"

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

  it.scoped(
    "parameterised statements of two pools taking turns on PgBouncer's backends all succeed: nothing is named",
    () =>
      Effect.gen(function* () {
        // Two pools of one connection each, taking turns with statements of their own: PgBouncer hands the backend one
        // just released to the other next, so a statement named on one session meets the other's name of the same
        // number there (42P05), or a backend that never saw its Parse.
        const alternate = (options: Partial<WardenClient.WardenClientConfig>, name: string) =>
          Effect.gen(function* () {
            const a = yield* open(configFor(bouncerUrl, uniqueAppName(`${name}-a`), { maxConnections: 1, ...options }))
            const b = yield* open(configFor(bouncerUrl, uniqueAppName(`${name}-b`), { maxConnections: 1, ...options }))
            let failures = 0
            const sums: Array<number> = []
            for (let i = 0; i < 20; i++) {
              for (const [sql, offset] of [
                [a.sql, 1],
                [b.sql, 2]
              ] as const) {
                const text = `select $1::int + ${offset} as n${i}`
                const result = yield* Effect.either(sql.unsafe<Record<string, number>>(text, [i]))
                if (result._tag === "Left") failures++
                else sums.push(Number(result.right[0]?.[`n${i}`]))
              }
            }
            return { failures, sums }
          })
        const { failures, sums } = yield* alternate({ pgbouncer: true }, "pgb-params")
        expect(failures).toBe(0)
        expect(sums).toEqual(Array.from({ length: 20 }, (_, i) => [i + 1, i + 2]).flat())
        // The mechanism, switched off: the same pools as direct ones (no startup options, so they connect).
        const named = yield* alternate({ serverSafety: false }, "pgb-named")
        expect(named.failures, "named prepared statements through PgBouncer 1.18 should fail").toBeGreaterThan(0)
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

  it.scoped(
    "faults behind PgBouncer: the server kills the backend, or the socket to PgBouncer is reset mid-transaction",
    () =>
      Effect.gen(function* () {
        const app = uniqueAppName("pgb-faults")
        const admin = yield* scopedAdmin(serverUrl)
        const proxy = yield* Effect.acquireRelease(
          promise(() => startProxy(proxyTarget(bouncerUrl))),
          (p) => promise(() => p.close())
        )
        const { sql, pool } = yield* open(
          configFor(proxy.rewrite(bouncerUrl), app, { pgbouncer: true, maxConnections: 2 })
        )
        // 1. The backend running our statement is ended by the server: a typed error, and the pool goes on.
        const sleeping = yield* Effect.fork(Effect.exit(sql`select pg_sleep(10)`))
        const [victim] = (yield* waitForBackends(admin, app, (bs) => bs.some(isRunningSleep))).filter(isRunningSleep)
        yield* promise(() => admin.query("select pg_terminate_backend($1)", [victim!.pid]))
        const killed = yield* Fiber.join(sleeping).pipe(Effect.timeout("5 seconds"))
        expectSqlError(killed)
        expect(yield* sql`select 1 as ok`).toEqual([{ ok: 1 }])
        // 2. The socket between pg-warden and PgBouncer is reset inside a transaction: the transaction fails typed,
        // PgBouncer drops its server connection (nothing stays in a transaction), and the pool goes on.
        const inTransaction = yield* Deferred.make<void>()
        const tx = yield* Effect.fork(
          Effect.exit(
            sql.withTransaction(
              Effect.andThen(sql`select 1`, Effect.andThen(Deferred.succeed(inTransaction, undefined), Effect.never))
            )
          )
        )
        yield* Deferred.await(inTransaction)
        yield* waitForBackends(admin, app, (bs) => bs.some((b) => b.state?.startsWith("idle in transaction") === true))
        proxy.reset()
        yield* Fiber.interrupt(tx).pipe(Effect.timeout("5 seconds"))
        yield* waitForBackends(admin, app, (bs) => !bs.some((b) => b.state !== "idle"), { timeoutMs: 5_000 })
        expect(yield* sql`select 1 as ok`).toEqual([{ ok: 1 }])
        const clients = yield* promise(() => bouncerClients(bouncerAdminUrl, app, 0))
        expect(clients.length, JSON.stringify(clients)).toBeLessThanOrEqual(2)
        expect((yield* pool.stats).total).toBeLessThanOrEqual(2)
      })
  )
})

/**
 * Who holds the connections (issue #11's leak detection), on the Effect 3 edition: a lease held past
 * `leakDetectionThreshold` logs one warning naming its fiber, its span and where it was taken; an
 * exhausted pool's `AcquireTimeout`, and `WardenPool.stats`, list the holders. The backend PIDs they
 * name are checked against `pg_stat_activity`.
 */
import { describe, expect, inject, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as HashMap from "effect/HashMap"
import * as Logger from "effect/Logger"
import * as WardenError from "../src/WardenError.js"
import { uniqueAppName } from "./support/admin.js"
import { configFor, expectSqlError, open, scopedAdmin } from "./support/warden.js"
import "./support/context.js"

const url = inject("databaseUrl")

interface Logged {
  readonly level: string
  readonly message: string
  readonly annotations: Record<string, unknown>
}

/** A logger that keeps what it is given, to be installed while the Layer is built. */
const collecting = () => {
  const logs: Array<Logged> = []
  const logger = Logger.make(({ annotations, logLevel, message }) => {
    logs.push({
      level: logLevel.label,
      message: (Array.isArray(message) ? message : [message]).map(String).join(" "),
      annotations: Object.fromEntries(HashMap.toEntries(annotations))
    })
  })
  return { logs, layer: Logger.replace(Logger.defaultLogger, logger) }
}

const leakWarnings = (logs: ReadonlyArray<Logged>) =>
  logs.filter((log) => log.level === "WARN" && log.message.includes("leakDetectionThreshold"))

describe("who holds the connections", () => {
  it.scopedLive(
    "a reserve held past leakDetectionThreshold logs one warning with its fiber, span, backend and where it was taken",
    () =>
      Effect.gen(function* () {
        const app = uniqueAppName("leak-reserve")
        const admin = yield* scopedAdmin(url)
        const { logs, layer } = collecting()
        const { sql } = yield* open(
          configFor(url, app, { maxConnections: 2, leakDetectionThreshold: "200 millis" })
        ).pipe(Effect.provide(layer))
        const held = yield* Deferred.make<number>()
        const holder = yield* Effect.fork(
          Effect.scoped(
            Effect.gen(function* () {
              const connection = yield* sql.reserve
              const [row] = yield* connection.execute("select pg_backend_pid() as pid", [], undefined)
              yield* Deferred.succeed(held, (row as { pid: number }).pid)
              yield* Effect.sleep("1200 millis")
            })
          ).pipe(Effect.withSpan("holding-too-long"))
        )
        const pid = yield* Deferred.await(held)
        yield* Fiber.join(holder)

        const warnings = leakWarnings(logs)
        expect(warnings, JSON.stringify(logs)).toHaveLength(1)
        const [warning] = warnings
        expect(warning!.message).toContain(`reserve by fiber #${holder.id().id}`)
        expect(warning!.message).toContain('in span "holding-too-long"')
        expect(warning!.message).toContain(`backend ${pid}`)
        // The stack starts in this file, where `sql.reserve` was used, not in pg-warden or Effect.
        expect(warning!.message).toMatch(/taken at:\n[^\n]*holders\.test\.ts/)
        expect(warning!.annotations["pg_warden.holder.backend_pid"]).toBe(pid)
        expect(warning!.annotations["pg_warden.holder.span"]).toBe("holding-too-long")
        // The PID named is the server's: the backend of this pool's connection.
        const backends = yield* Effect.promise(() => admin.backends(app))
        expect(backends.map((b) => b.pid)).toContain(pid)
      })
  )

  it.scopedLive("a transaction held past the threshold is reported too, with where withTransaction was called", () =>
    Effect.gen(function* () {
      const app = uniqueAppName("leak-tx")
      const { logs, layer } = collecting()
      const { sql } = yield* open(
        configFor(url, app, { maxConnections: 1, leakDetectionThreshold: "200 millis" })
      ).pipe(Effect.provide(layer))
      yield* sql
        .withTransaction(Effect.zipRight(sql`select 1`, Effect.sleep("900 millis")))
        .pipe(Effect.withSpan("slow-transaction"))
      // A lease that ends before the threshold is not reported.
      yield* sql.withTransaction(sql`select 1`)
      const warnings = leakWarnings(logs)
      expect(warnings, JSON.stringify(logs)).toHaveLength(1)
      expect(warnings[0]!.message).toContain("transaction by fiber #")
      expect(warnings[0]!.message).toContain('in span "slow-transaction"')
      expect(warnings[0]!.message).toMatch(/taken at:\n[^\n]*holders\.test\.ts/)
    })
  )

  it.scopedLive(
    "an exhausted pool's AcquireTimeout and WardenPool.stats list the holder: fiber, span, backend, age, statement",
    () =>
      Effect.gen(function* () {
        const app = uniqueAppName("holders")
        const admin = yield* scopedAdmin(url)
        const { logs, layer } = collecting()
        const { sql, pool } = yield* open(
          configFor(url, app, { maxConnections: 1, acquireTimeout: "300 millis" })
        ).pipe(Effect.provide(layer))
        const holder = yield* Effect.fork(
          sql.withTransaction(sql`select pg_sleep(5)`).pipe(Effect.withSpan("exhausting"))
        )
        const busy = yield* Effect.promise(() =>
          admin.waitFor(
            () => admin.backends(app),
            (bs) => bs.some((b) => b.state === "active" && b.query.includes("pg_sleep(5)")),
            { timeoutMs: 5_000, message: "pg_sleep(5) never ran" }
          )
        )
        const pid = busy.find((b) => b.query.includes("pg_sleep(5)"))!.pid

        const stats = yield* pool.stats
        expect(stats.holders).toHaveLength(1)
        expect(stats.holders![0]).toMatchObject({
          kind: "transaction",
          fiber: `#${holder.id().id}`,
          span: "exhausting",
          pid,
          running: "select pg_sleep(5)"
        })
        // Leak detection is off: no stack was captured.
        expect(stats.holders![0]!.stack).toBeUndefined()

        const exit = yield* Effect.exit(sql`select 1`)
        const error = WardenError.fromSqlError(expectSqlError(exit))
        expect(error?.reason).toBe("AcquireTimeout")
        expect(error?.snapshot?.holders?.[0]).toMatchObject({ kind: "transaction", span: "exhausting", pid })
        expect(error?.snapshot?.holders?.[0]?.heldMs).toBeGreaterThan(0)
        expect(error?.message).toContain(`held by: transaction by fiber #${holder.id().id} in span "exhausting"`)
        expect(error?.message).toContain("running: select pg_sleep(5)")

        yield* Fiber.interrupt(holder)
        expect((yield* pool.stats).holders).toHaveLength(0)
        expect(leakWarnings(logs)).toHaveLength(0)
        expect(Exit.isSuccess(yield* Effect.exit(sql`select 1`))).toBe(true)
      })
  )

  it.scopedLive("leakDetectionThreshold must be finite", () =>
    Effect.gen(function* () {
      const exit = yield* Effect.exit(
        open(configFor(url, "leak-invalid", { leakDetectionThreshold: Duration.infinity }))
      )
      const error = WardenError.fromSqlError(expectSqlError(exit))
      expect(error?.reason).toBe("InvalidConfig")
      expect(error?.detail).toContain("leakDetectionThreshold")
    })
  )
})

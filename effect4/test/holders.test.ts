/**
 * Who holds the connections (issue #11's leak detection), on the Effect 4 edition: the same core as the
 * Effect 3 edition's test/holders.test.ts, surfaced through effect 4's logger, `SqlError` and
 * `WardenPool.stats`. The backend PIDs they name are checked against `pg_stat_activity`.
 */
import { describe, expect, inject, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Redacted from "effect/Redacted"
import * as SqlClient from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import { Observer } from "../../src/core/observer.js"
import { uniqueAppName } from "../../test/support/admin.js"
import * as WardenClient from "../src/WardenClient.js"
import * as WardenError from "../src/WardenError.js"
import * as WardenPool from "../src/WardenPool.js"
import "./context.js"

const url = inject("databaseUrl")

const warden = (app: string, extra: Partial<WardenClient.WardenClientConfig>) =>
  WardenClient.layer({ url: Redacted.make(url), applicationName: app, ...extra })

const observer = Effect.acquireRelease(
  Effect.promise(() => Observer.connect(url)),
  (observer) => Effect.promise(() => observer.close())
)

interface Logged {
  readonly level: string
  readonly message: string
}

/** A logger that keeps what it is given; the Layer is built with it, so its warnings come here. */
const collecting = () => {
  const logs: Array<Logged> = []
  const logger = Logger.make<unknown, void>(({ logLevel, message }) => {
    logs.push({ level: logLevel, message: (Array.isArray(message) ? message : [message]).map(String).join(" ") })
  })
  return { logs, layer: Logger.layer([logger]) }
}

const leakWarnings = (logs: ReadonlyArray<Logged>) =>
  logs.filter((log) => log.level === "Warn" && log.message.includes("leakDetectionThreshold"))

const failure = <A>(exit: Exit.Exit<A, SqlError>): SqlError => {
  if (Exit.isSuccess(exit)) throw new Error(`expected a failure, got ${JSON.stringify(exit.value)}`)
  const reason = exit.cause.reasons.find((r) => r._tag === "Fail")
  if (reason === undefined || reason._tag !== "Fail") throw new Error(`expected a typed failure: ${String(exit.cause)}`)
  return reason.error
}

describe("who holds the connections (Effect 4)", () => {
  it.live("a reserve held past leakDetectionThreshold logs one warning with its fiber, span, backend and stack", () => {
    const app = uniqueAppName("e4-leak-reserve")
    const { logs, layer } = collecting()
    return Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      const held = yield* Deferred.make<number>()
      const holder = yield* Effect.forkChild(
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
      const backends = yield* Effect.scoped(Effect.flatMap(observer, (o) => Effect.promise(() => o.backends(app))))
      expect(backends.map((b) => b.pid)).toContain(pid)
      yield* Fiber.join(holder)
      const warnings = leakWarnings(logs)
      expect(warnings, JSON.stringify(logs)).toHaveLength(1)
      expect(warnings[0]!.message).toContain(`reserve by fiber #${holder.id}`)
      expect(warnings[0]!.message).toContain('in span "holding-too-long"')
      expect(warnings[0]!.message).toContain(`backend ${pid}`)
      expect(warnings[0]!.message).toMatch(/taken at:\n[^\n]*holders\.test\.ts/)
    }).pipe(
      Effect.provide(
        warden(app, { maxConnections: 2, leakDetectionThreshold: "200 millis" }).pipe(Layer.provide(layer))
      )
    )
  })

  it.live("a transaction held past the threshold is reported with where withTransaction was called", () => {
    const app = uniqueAppName("e4-leak-tx")
    const { logs, layer } = collecting()
    return Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      yield* sql
        .withTransaction(Effect.andThen(sql`select 1`, Effect.sleep("900 millis")))
        .pipe(Effect.withSpan("slow-transaction"))
      yield* sql.withTransaction(sql`select 1`)
      const warnings = leakWarnings(logs)
      expect(warnings, JSON.stringify(logs)).toHaveLength(1)
      expect(warnings[0]!.message).toContain("transaction by fiber #")
      expect(warnings[0]!.message).toContain('in span "slow-transaction"')
      expect(warnings[0]!.message).toMatch(/taken at:\n[^\n]*holders\.test\.ts/)
    }).pipe(
      Effect.provide(
        warden(app, { maxConnections: 1, leakDetectionThreshold: "200 millis" }).pipe(Layer.provide(layer))
      )
    )
  })

  it.live("an exhausted pool's acquire timeout and WardenPool.stats list the holder", () => {
    const app = uniqueAppName("e4-holders")
    return Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      const pool = yield* WardenPool.WardenPool
      const holder = yield* Effect.forkChild(
        sql.withTransaction(sql`select pg_sleep(5)`).pipe(Effect.withSpan("exhausting"))
      )
      const busy = yield* Effect.scoped(
        Effect.flatMap(observer, (o) =>
          Effect.promise(() =>
            o.waitFor(
              () => o.backends(app),
              (bs) => bs.some((b) => b.state === "active" && b.query.includes("pg_sleep(5)")),
              { timeoutMs: 5_000, message: "pg_sleep(5) never ran" }
            )
          )
        )
      )
      const pid = busy.find((b) => b.query.includes("pg_sleep(5)"))!.pid
      const stats = yield* pool.stats
      expect(stats.holders?.[0]).toMatchObject({
        kind: "transaction",
        fiber: `#${holder.id}`,
        span: "exhausting",
        pid,
        running: "select pg_sleep(5)"
      })
      expect(stats.holders?.[0]?.stack).toBeUndefined()

      const error = failure(yield* Effect.exit(sql`select 1`))
      const warden = WardenError.fromSqlError(error)
      expect(warden?.reason).toBe("AcquireTimeout")
      expect(warden?.snapshot?.holders?.[0]).toMatchObject({ kind: "transaction", span: "exhausting", pid })
      expect(error.message).toContain(`held by: transaction by fiber #${holder.id} in span "exhausting"`)

      yield* Fiber.interrupt(holder)
      expect((yield* pool.stats).holders).toHaveLength(0)
    }).pipe(Effect.provide(warden(app, { maxConnections: 1, acquireTimeout: "300 millis" })))
  })
})

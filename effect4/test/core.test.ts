/**
 * The Effect-free core under Effect 4: the same pool, sessions and release protocol the Effect 3
 * edition uses, driven through this edition's adapter (src/internal/core.ts) on Node 22, and checked
 * on the server's side with the repository's observer.
 */
import { describe, expect, inject, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import type { SqlError } from "effect/sql/SqlError"
import { resolveConfig } from "../../src/core/config.js"
import { CoreError } from "../../src/core/errors.js"
import { Observer, runs } from "../../src/core/observer.js"
import { Pool } from "../../src/core/pool.js"
import { uniqueAppName } from "../../test/support/admin.js"
import * as Core from "../src/internal/core.js"
import "./context.js"

const url = inject("databaseUrl")

/** A pool of the core for one test, closed (and checked gone on the server) with the test's scope. */
const pool = (app: string, options: { readonly maxConnections?: number; readonly acquireTimeout?: number } = {}) =>
  Effect.acquireRelease(
    Effect.sync(() => new Pool(resolveConfig({ url, applicationName: app, maxConnections: 2, ...options }).pool)),
    (pool) => Effect.promise(() => pool.close())
  )

const observer = Effect.acquireRelease(
  Effect.promise(() => Observer.connect(url)),
  (observer) => Effect.promise(() => observer.close())
)

const failure = <A>(exit: Exit.Exit<A, SqlError>): SqlError => {
  if (Exit.isSuccess(exit)) throw new Error(`expected a failure, got ${JSON.stringify(exit.value)}`)
  const error = exit.cause.reasons.find((reason) => reason._tag === "Fail")
  if (error === undefined || error._tag !== "Fail") throw new Error(`expected a typed failure: ${String(exit.cause)}`)
  return error.error
}

describe("the core under Effect 4", () => {
  it("runs on the Node that Effect 4 supports", () => {
    expect(Number(process.versions.node.split(".")[0])).toBeGreaterThanOrEqual(22)
  })

  it.live("an interrupted statement stops on the server and its session is reused", () =>
    Effect.gen(function* () {
      const app = uniqueAppName("e4-interrupt")
      const admin = yield* observer
      const sessions = yield* pool(app)
      const session = yield* Effect.uninterruptibleMask((restore) => Core.acquire(sessions, restore))
      const fiber = yield* Effect.forkChild(Core.run(session, { text: "select pg_sleep(10)" }, (r) => r.rows))
      const running = yield* Effect.promise(() =>
        admin.waitForBackends(app, (bs) => bs.some(runs("pg_sleep(10)")), 5_000)
      )
      expect(running.ok).toBe(true)
      const pid = running.backends.find(runs("pg_sleep(10)"))!.pid
      const started = performance.now()
      yield* Fiber.interrupt(fiber)
      expect(performance.now() - started).toBeLessThan(2_000)
      // The server's view: the statement is gone, and the backend is idle, not in a transaction.
      const after = yield* Effect.promise(() => admin.backends(app))
      expect(after.filter(runs("pg_sleep(10)"))).toEqual([])
      yield* Core.release(sessions, session)
      const next = yield* Core.pooledStatement(
        sessions,
        { text: "select pg_backend_pid() as pid, now() = statement_timestamp() as fresh" },
        (r) => r.rows[0] as { pid: number }
      )
      expect(next.pid).toBe(pid)
      expect(sessions.stats().counters.cancelled).toBe(1)
      const view = yield* Effect.promise(() => admin.backends(app))
      expect(view.map((b) => [b.pid, b.state])).toEqual([[pid, "idle"]])
    })
  )

  it.live("failures carry effect 4's reason classes, with the driver's error as the cause", () =>
    Effect.gen(function* () {
      const app = uniqueAppName("e4-errors")
      const sessions = yield* pool(app)
      const statement = (text: string) => Effect.exit(Core.pooledStatement(sessions, { text }, (r) => r.rows))

      const syntax = failure(yield* statement("selec 1"))
      expect(syntax.reason._tag).toBe("SqlSyntaxError")
      expect((syntax.reason.cause as { code?: string }).code).toBe("42601")

      const unique = failure(
        yield* statement(
          "with t as (select 1) select * from (values (1), (1)) v(x) where false; create temp table e4u (x int primary key); insert into e4u values (1), (1)"
        )
      )
      expect(unique.reason._tag).toBe("UniqueViolation")
      expect(unique.reason._tag === "UniqueViolation" && unique.reason.constraint).toBe("e4u_pkey")

      const timeout = failure(yield* statement("set statement_timeout = 50; select pg_sleep(1)"))
      expect(timeout.reason._tag).toBe("StatementTimeoutError")
      expect(timeout.isRetryable).toBe(true)

      const division = failure(yield* statement("select 1 / 0"))
      expect(division.reason._tag).toBe("UnknownError")
      expect(division.isRetryable).toBe(false)
    })
  )

  it.live("a statement cancelled at someone's request is not a retryable statement timeout", () =>
    Effect.gen(function* () {
      const app = uniqueAppName("e4-cancel")
      const admin = yield* observer
      const sessions = yield* pool(app)
      const fiber = yield* Effect.forkChild(
        Effect.exit(Core.pooledStatement(sessions, { text: "select pg_sleep(10)" }, (r) => r.rows))
      )
      const running = yield* Effect.promise(() =>
        admin.waitForBackends(app, (bs) => bs.some(runs("pg_sleep(10)")), 5_000)
      )
      yield* Effect.promise(() => admin.query("select pg_cancel_backend($1)", [running.backends[0]!.pid]))
      const cancelled = failure(yield* Fiber.join(fiber))
      expect((cancelled.reason.cause as { code?: string }).code).toBe("57014")
      expect(cancelled.reason._tag).toBe("UnknownError")
      expect(cancelled.isRetryable).toBe(false)
    })
  )

  it.live("an acquire timeout is a ConnectionError whose cause is pg-warden's own", () =>
    Effect.gen(function* () {
      const app = uniqueAppName("e4-acquire")
      const sessions = yield* pool(app, { maxConnections: 1, acquireTimeout: 200 })
      const held = yield* Effect.uninterruptibleMask((restore) => Core.acquire(sessions, restore))
      const exit = yield* Effect.exit(Effect.uninterruptibleMask((restore) => Core.acquire(sessions, restore)))
      const error = failure(exit)
      expect(error.reason._tag).toBe("ConnectionError")
      expect(error.reason.cause).toBeInstanceOf(CoreError)
      expect((error.reason.cause as CoreError).reason).toBe("AcquireTimeout")
      yield* Core.release(sessions, held)
    })
  )
})

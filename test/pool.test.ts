/**
 * The pool: acquire timeout with a snapshot, FIFO fairness, waiter interruption racing the
 * hand-off, min connections and idle retirement, max lifetime, audit and release counters.
 * Every test checks the server's own view (pg_stat_activity by application_name).
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { Connection } from "@effect/sql/SqlConnection"
import type { SqlError } from "@effect/sql/SqlError"
import { afterAll, beforeAll, describe, expect, inject, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import type * as WardenClient from "../src/WardenClient.js"
import * as WardenError from "../src/WardenError.js"
import { Admin, type Backend, uniqueAppName } from "./support/admin.js"
import "./support/context.js"
import {
  backendGone,
  backendPid,
  configFor as configForUrl,
  eventually,
  expectSqlError,
  open,
  promise,
  runningSleep,
  thawQuietly,
  waitForBackends
} from "./support/warden.js"

const databaseUrl = inject("databaseUrl")

/** `configFor` on the shared server. */
const configFor = (
  applicationName: string,
  extra: Partial<WardenClient.WardenClientConfig> = {}
): WardenClient.WardenClientConfig => configForUrl(databaseUrl, applicationName, extra)

const connectionPid = (connection: Connection) =>
  Effect.map(
    connection.execute("select pg_backend_pid() as pid", [], undefined),
    (rows) => (rows[0] as any).pid as number
  )

interface Holder {
  readonly fiber: Fiber.RuntimeFiber<void, SqlError>
  readonly pid: number
  readonly release: Effect.Effect<void>
}

/** Reserves a connection in a background fiber and holds it until `release`. */
const hold = (sql: SqlClient.SqlClient): Effect.Effect<Holder> =>
  Effect.gen(function* () {
    const held = yield* Deferred.make<number>()
    const done = yield* Deferred.make<void>()
    const fiber = yield* Effect.fork(
      Effect.scoped(
        Effect.gen(function* () {
          const connection = yield* sql.reserve
          yield* Deferred.succeed(held, yield* connectionPid(connection))
          yield* Deferred.await(done)
        })
      )
    )
    const pid = yield* Deferred.await(held)
    return {
      fiber,
      pid,
      release: Deferred.succeed(done, undefined).pipe(Effect.zipRight(Effect.asVoid(Fiber.await(fiber))))
    }
  })

describe("pool", () => {
  let admin: Admin

  beforeAll(async () => {
    admin = await Admin.connect(databaseUrl)
  })

  afterAll(async () => {
    await admin?.close()
  })

  const serverBackends = (app: string): Effect.Effect<Array<Backend>> => promise(() => admin.backends(app))
  const noBackends = (app: string, timeoutMs = 5_000) => promise(() => admin.waitForNoBackends(app, timeoutMs))
  /** Waits until exactly one of `app`'s backends is active; returns it (a one-element array). */
  const oneActive = (app: string): Effect.Effect<Array<Backend>> =>
    promise(() =>
      admin.waitFor(
        async () => (await admin.backends(app)).filter((b) => b.state === "active"),
        (bs) => bs.length === 1
      )
    )

  it.live(
    "acquire timeout: typed AcquireTimeout whose message carries the pool snapshot",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const app = uniqueAppName("acquire-timeout")
          const { sql, pool, close } = yield* open(configFor(app, { maxConnections: 1, acquireTimeout: 300 }))
          const holder = yield* hold(sql)

          const [elapsed, exit] = yield* Effect.timed(Effect.exit(sql`select 1`))
          const error = expectSqlError(exit)
          const warden = WardenError.fromSqlError(error)
          expect(warden?.reason).toBe("AcquireTimeout")
          expect(warden?.snapshot?.total).toBe(1)
          expect(warden?.snapshot?.inUse).toBe(1)
          expect(warden?.snapshot?.waiting).toBeGreaterThanOrEqual(1)
          expect(error.message).toMatch(/total=1\b/)
          expect(error.message).toMatch(/inUse=1\b/)
          expect(error.message).toMatch(/waiting=[1-9]\d*\b/)
          expect(Duration.toMillis(elapsed)).toBeGreaterThanOrEqual(250)
          expect(Duration.toMillis(elapsed)).toBeLessThan(300 + 1_500)
          expect((yield* pool.stats).counters.acquireTimeouts).toBe(1)

          const backends = yield* serverBackends(app)
          expect(backends.map((b) => b.pid)).toEqual([holder.pid])

          yield* holder.release
          expect(yield* backendPid(sql)).toBe(holder.pid)
          yield* close
          yield* noBackends(app)
        })
      ),
    20_000
  )

  it.live(
    "FIFO fairness: waiters get the connection in the order they asked",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const app = uniqueAppName("fifo")
          const { sql, pool, close } = yield* open(configFor(app, { maxConnections: 1 }))
          const holder = yield* hold(sql)
          const order: Array<number> = []
          const pids = new Set<number>()
          const waiters: Array<Fiber.RuntimeFiber<void, SqlError>> = []
          for (let i = 0; i < 5; i++) {
            waiters.push(
              yield* Effect.fork(
                Effect.scoped(
                  Effect.gen(function* () {
                    const connection = yield* sql.reserve
                    order.push(i)
                    pids.add(yield* connectionPid(connection))
                  })
                )
              )
            )
            // the next waiter only starts once this one is queued
            yield* eventually(pool.stats, (s) => s.waiting === i + 1, `waiter ${i} queued`)
          }
          yield* holder.release
          yield* Effect.forEach(waiters, Fiber.join)
          expect(order).toEqual([0, 1, 2, 3, 4])
          expect([...pids]).toEqual([holder.pid])
          expect((yield* serverBackends(app)).map((b) => b.pid)).toEqual([holder.pid])
          yield* close
          yield* noBackends(app)
        })
      ),
    20_000
  )

  it.live(
    "waiter interruption racing the hand-off never loses a slot (200 iterations)",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const app = uniqueAppName("waiter-race")
          const max = 1
          const { sql, pool, close } = yield* open(configFor(app, { maxConnections: max, acquireTimeout: 5_000 }))
          let seed = 0x5eed
          const random = () => {
            seed = (seed * 1103515245 + 12345) & 0x7fffffff
            return seed / 0x7fffffff
          }
          const pause = (): Effect.Effect<void> => {
            const r = random()
            if (r < 0.25) return Effect.void
            if (r < 0.6) return Effect.repeatN(Effect.yieldNow(), Math.floor(random() * 4))
            if (r < 0.85) return Effect.sleep(Duration.millis(0))
            return Effect.sleep(Duration.millis(Math.floor(random() * 3)))
          }

          const outcomes = { ok: 0, interrupted: 0, failed: 0 }
          for (let iteration = 0; iteration < 200; iteration++) {
            const holder = yield* hold(sql)
            // both acquisition paths: a pooled statement and a reserved connection
            const waiter = yield* Effect.fork(
              iteration % 2 === 0 ? Effect.asVoid(sql`select 1`) : Effect.scoped(Effect.asVoid(sql.reserve))
            )
            yield* pause()
            if (random() < 0.5) {
              // release first, interrupt while the hand-off is under way
              yield* Effect.fork(holder.release)
              yield* pause()
              yield* Fiber.interrupt(waiter)
            } else {
              yield* Fiber.interrupt(waiter)
              yield* pause()
              yield* holder.release
            }
            yield* Fiber.await(holder.fiber)
            const exit = yield* Fiber.await(waiter)
            const kind = Exit.isSuccess(exit) ? "ok" : Exit.isInterrupted(exit) ? "interrupted" : "failed"
            outcomes[kind]++
            if (kind === "failed") expectSqlError(exit)
          }
          // the storm exercised both sides of the race
          expect(outcomes.interrupted).toBeGreaterThan(0)

          const stats = yield* eventually(pool.stats, (s) => s.releasing === 0 && s.connecting === 0, "pool settled")
          expect(stats.total).toBeLessThanOrEqual(max)
          expect(stats.inUse).toBe(0)
          const [elapsed] = yield* Effect.timed(sql`select 1`)
          expect(Duration.toMillis(elapsed)).toBeLessThan(1_000)
          expect((yield* serverBackends(app)).length).toBeLessThanOrEqual(max)
          const after = yield* pool.stats
          expect(after.total).toBeLessThanOrEqual(max)
          expect(after.inUse).toBe(0)
          expect(after.waiting).toBe(0)
          yield* eventually(pool.audit, (r) => r.ok, "audit ok after the storm")
          yield* close
          yield* noBackends(app)
        })
      ),
    60_000
  )

  it.live(
    "minConnections are opened and kept; idleTimeout retires the extra ones",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const app = uniqueAppName("min-idle")
          const { sql, pool, close } = yield* open(
            configFor(app, { minConnections: 2, maxConnections: 4, idleTimeout: 500 })
          )
          yield* promise(() =>
            admin.waitFor(
              () => admin.count(app),
              (n) => n === 2,
              { message: "min connections open" }
            )
          )
          // well past idleTimeout, the minimum is kept
          yield* Effect.sleep(Duration.millis(1_200))
          expect(yield* promise(() => admin.count(app))).toBe(2)

          const holders = yield* Effect.forEach([1, 2, 3, 4], () => hold(sql), { concurrency: "unbounded" })
          expect(new Set(holders.map((h) => h.pid)).size).toBe(4)
          expect(yield* promise(() => admin.count(app))).toBe(4)
          yield* Effect.forEach(holders, (h) => h.release, { discard: true })

          yield* promise(() =>
            admin.waitFor(
              () => admin.count(app),
              (n) => n === 2,
              { message: "extra idle connections retired back to min" }
            )
          )
          const stats = yield* pool.stats
          expect(stats.counters.retiredIdle).toBeGreaterThanOrEqual(2)
          expect(stats.total).toBe(2)
          yield* Effect.sleep(Duration.millis(700))
          expect(yield* promise(() => admin.count(app))).toBe(2)

          // a minimum connection killed by the server is replaced
          const [victim] = yield* serverBackends(app)
          expect(yield* promise(() => admin.terminate(victim!.pid))).toBe(true)
          yield* waitForBackends(admin, app, (bs) => bs.length === 2 && bs.every((b) => b.pid !== victim!.pid), {
            message: "killed minimum connection replaced"
          })
          yield* close
          yield* noBackends(app)
        })
      ),
    30_000
  )

  it.live(
    "connectionTTL: after it passes, a new backend is used and the old one disappears",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const app = uniqueAppName("ttl")
          const { sql, pool, close } = yield* open(configFor(app, { maxConnections: 1, connectionTTL: 1_000 }))
          const pid1 = yield* backendPid(sql)
          // the lifetime itself is what this test is about
          yield* Effect.sleep(Duration.millis(1_100))
          const pid2 = yield* backendPid(sql)
          expect(pid2).not.toBe(pid1)
          yield* backendGone(admin, app, pid1, `expired backend ${pid1} still on the server`)

          // A connection leased past its lifetime is closed when released, not reused.
          const holder = yield* hold(sql)
          yield* Effect.sleep(Duration.millis(1_100))
          yield* holder.release
          yield* backendGone(
            admin,
            app,
            holder.pid,
            `backend ${holder.pid} leased past its lifetime still on the server`
          )
          expect(yield* backendPid(sql)).not.toBe(holder.pid)
          const counters = (yield* pool.stats).counters
          expect(counters.retiredExpired + counters.closed).toBeGreaterThanOrEqual(2)
          yield* close
          yield* noBackends(app)
        })
      ),
    30_000
  )

  it.live(
    "audit: ok while running, ok again after a backend is killed, nothing left after close",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const app = uniqueAppName("audit")
          const { sql, pool, close } = yield* open(configFor(app, { maxConnections: 2 }))
          // two sessions: one will run a statement, the other stays idle
          const holders = yield* Effect.forEach([1, 2], () => hold(sql), { concurrency: "unbounded" })
          yield* Effect.forEach(holders, (h) => h.release, { discard: true })
          expect(yield* promise(() => admin.count(app))).toBe(2)
          const fiber = yield* Effect.fork(Effect.exit(sql`select pg_sleep(10)`))
          const [busy] = yield* oneActive(app)

          const running = yield* pool.audit
          expect(running.ok).toBe(true)
          expect(running.applicationName).toBe(app)
          expect(running.server.map((b) => b.pid)).toContain(busy!.pid)
          expect(running.pool.leased).toContain(busy!.pid)
          expect(running.unknownToPool).toEqual([])
          expect(running.dirtyIdle).toEqual([])

          // kill the busy backend
          expect(yield* promise(() => admin.terminate(busy!.pid))).toBe(true)
          expect(WardenError.sqlState(expectSqlError(yield* Fiber.join(fiber)))).toBe("57P01")
          const healed = yield* eventually(pool.audit, (r) => r.ok, "audit ok after killing the busy backend")
          expect(healed.server.map((b) => b.pid)).not.toContain(busy!.pid)

          // kill an idle one
          const idle = (yield* serverBackends(app)).filter((b) => b.state === "idle")
          expect(idle.length).toBeGreaterThanOrEqual(1)
          expect(yield* promise(() => admin.terminate(idle[0]!.pid))).toBe(true)
          const healed2 = yield* eventually(
            pool.audit,
            (r) => r.ok && r.server.every((b) => b.state === "idle" || b.state === "active"),
            "audit ok after killing an idle backend"
          )
          expect(healed2.ok).toBe(true)
          yield* sql`select 1`

          yield* close
          yield* noBackends(app)
          const closed = yield* pool.audit
          expect(closed.ok).toBe(true)
          expect(closed.server).toEqual([])
        })
      ),
    30_000
  )

  describe("stats counters move with release outcomes", () => {
    it.live(
      "rolledBack: a failed withTransaction and a raw BEGIN are rolled back; the session is reused",
      () =>
        Effect.scoped(
          Effect.gen(function* () {
            const app = uniqueAppName("count-rollback")
            const { sql, pool, close } = yield* open(configFor(app, { maxConnections: 1 }))
            const pid = yield* backendPid(sql)
            const before = (yield* pool.stats).counters

            const failed = yield* Effect.exit(
              sql.withTransaction(sql`select 1`.pipe(Effect.zipRight(Effect.fail("boom" as const))))
            )
            expect(Exit.isFailure(failed)).toBe(true)
            const afterTx = (yield* pool.stats).counters
            expect(afterTx.rolledBack).toBe(before.rolledBack + 1)

            yield* Effect.scoped(
              Effect.flatMap(sql.reserve, (connection) => connection.executeUnprepared("BEGIN", [], undefined))
            )
            const afterBegin = (yield* pool.stats).counters
            expect(afterBegin.rolledBack).toBe(afterTx.rolledBack + 1)

            expect(yield* backendPid(sql)).toBe(pid)
            const backends = yield* serverBackends(app)
            expect(backends.map((b) => [b.pid, b.state, b.xactStart])).toEqual([[pid, "idle", null]])
            yield* close
            yield* noBackends(app)
          })
        ),
      20_000
    )

    it.live(
      "cancelled: an interrupted statement is cancelled and the session reused",
      () =>
        Effect.scoped(
          Effect.gen(function* () {
            const app = uniqueAppName("count-cancel")
            const { sql, pool, close } = yield* open(configFor(app, { maxConnections: 1 }))
            const pid = yield* backendPid(sql)
            const before = (yield* pool.stats).counters

            const fiber = yield* Effect.fork(sql`select pg_sleep(10)`)
            yield* runningSleep(admin, app)
            const [elapsed] = yield* Effect.timed(Fiber.interrupt(fiber))
            expect(Duration.toMillis(elapsed)).toBeLessThan(1_000)
            const after = (yield* pool.stats).counters
            expect(after.cancelled).toBe(before.cancelled + 1)
            expect(after.terminated).toBe(before.terminated)

            expect(yield* backendPid(sql)).toBe(pid)
            const backends = yield* serverBackends(app)
            expect(backends.map((b) => [b.pid, b.state])).toEqual([[pid, "idle"]])
            yield* close
            yield* noBackends(app)
          })
        ),
      20_000
    )

    it.live(
      "terminated: a frozen backend is terminated on interruption",
      () =>
        Effect.scoped(
          Effect.gen(function* () {
            const app = uniqueAppName("count-terminate")
            const { sql, pool, close } = yield* open(configFor(app, { maxConnections: 1 }))
            const before = (yield* pool.stats).counters
            const fiber = yield* Effect.fork(sql`select pg_sleep(10)`)
            const [busy] = yield* oneActive(app)
            const pid = busy!.pid
            yield* Effect.acquireRelease(
              Effect.sync(() => admin.freeze(pid)),
              () => Effect.sync(() => thawQuietly(admin, pid))
            )
            yield* Fiber.interrupt(fiber)
            const after = (yield* pool.stats).counters
            expect(after.terminated).toBeGreaterThanOrEqual(before.terminated + 1)
            thawQuietly(admin, pid)
            yield* backendGone(admin, app, pid, `terminated backend ${pid} still on the server`)
            expect(yield* backendPid(sql)).not.toBe(pid)
            yield* close
            yield* noBackends(app)
          })
        ),
      20_000
    )
  })
})
